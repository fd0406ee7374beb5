"""Normalising flows on the unit hypercube: stacked coupling layers run by ``lax.scan``.

Sampling direction: ``u ~ U[0, 1]^d``, ``x = F(u)`` (:meth:`Flow.forward_and_log_det`), and
the density of ``x`` is ``q(x) = |det dF/du|^-1``, i.e. ``log q(x) = -logdet(forward)`` at
``u`` and ``log q(x) = logdet(inverse)`` at ``x`` (:meth:`Flow.log_prob`). Points outside
the closed cube have ``log q = -inf``.

All coupling layers share one conditioner architecture (inputs and outputs padded to the
widest mask, see :mod:`jaxnis.flows.coupling`), so their parameters are stacked along a
leading layer axis, initialised by ``vmap`` over keys and applied by ``lax.scan``: the
conditioner is traced once whatever the depth, and compile time does not grow with it.

Example:
    >>> import jax
    >>> from jaxnis.flows import make_flow
    >>> flow = make_flow(4, n_bins=8, hidden=(16, 16))
    >>> params = flow.init(jax.random.key(0))
    >>> x, log_q = flow.sample(jax.random.key(1), params, 128)
    >>> x.shape, log_q.shape
    ((128, 4), (128,))

For training, :meth:`Flow.sample_detached` draws the same points with a ``log q`` whose
gradient is taken at those fixed points, from the sampling pass alone (no inverse pass).

Batches: :meth:`Flow.sample`, :meth:`Flow.sample_detached` and the batch methods
(:meth:`Flow.forward_batch`, :meth:`Flow.inverse_batch`, :meth:`Flow.log_prob_batch`) run
each layer on the whole batch at once, as rows of events
(:func:`jaxnis.flows.coupling.conditioner_rows`), which is faster on the CPU than
``jax.vmap`` of the per-event methods (``forward_and_log_det``, ``inverse_and_log_det``,
``log_prob``). Both give the same numbers up to rounding.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxnis.flows.coupling import (
    MLP,
    Selectors,
    _cast,
    _check_context_dim,
    _check_hidden,
    cast_selectors,
    check_context,
    check_params,
    conditioner_rows,
    coupling_apply,
    events_of,
    make_selectors,
    rows_of,
)
from jaxnis.flows.masks import _check_dim, make_masks, validate_masks
from jaxnis.flows.splines import ElementwiseTransform, _as_float, clamp_unit, make_transform
from jaxnis.types import Array, ArrayLike, Params, PRNGKey

_ACTIVATIONS = ("relu", "gelu", "silu", "swish", "tanh", "elu", "leaky_relu", "softplus",
                "sigmoid")


@dataclasses.dataclass(frozen=True)
class Flow:
    """Coupling flow on ``[0, 1]^dim``; build it with :func:`make_flow`.

    Attributes:
        dim: event size ``d``.
        masks: static masks ``[n_layers][d]`` (True = condition on), applied in this order
            in the forward (sampling) direction.
        transform: the element-wise transform of every layer.
        hidden: conditioner hidden widths.
        activation: conditioner activation.
        context_dim: size of the context vector (0: unconditional).
        channel_flows: one independent flow per channel: the context is a one-hot channel
            ``[context_dim]`` that selects one of ``context_dim`` conditioners per layer
            (:class:`jaxnis.flows.coupling.BlockDense`), instead of being an input of a
            shared one. Same masks and transform; ``context_dim`` times the parameters.

    Parameters (from :meth:`init`) are ``{"layers": variables}`` where ``variables`` are the
    conditioner's flax variables with a leading ``[n_layers]`` axis on every leaf. The
    conditioner's output layer, ``["layers"]["params"]["output"]`` (``kernel [L, in, n_t P]``,
    ``bias [L, n_t P]``), has ``n_t * P`` outputs (``n_t`` the widest transformed set,
    ``P = transform.n_params``): outputs ``[r * P:(r + 1) * P]`` are the raw parameters of the
    ``r``-th transformed dimension of that layer (dimensions in increasing index order).
    With ``channel_flows`` every leaf has a channel axis after the layer axis
    (``kernel [L, C, in, n_t P]``, ``bias [L, C, n_t P]``).
    """

    dim: int
    masks: tuple[tuple[bool, ...], ...]
    transform: ElementwiseTransform
    hidden: tuple[int, ...] = (32, 32, 32)
    activation: Callable[[Array], Array] = jax.nn.relu
    context_dim: int = 0
    channel_flows: bool = False

    def __post_init__(self):
        dim = _check_dim(self.dim)
        masks = validate_masks(np.asarray(self.masks), dim)
        object.__setattr__(self, "masks", tuple(tuple(bool(v) for v in m) for m in masks))
        object.__setattr__(self, "hidden", _check_hidden(self.hidden))
        object.__setattr__(self, "context_dim", _check_context_dim(self.context_dim))
        if not isinstance(self.transform, ElementwiseTransform):
            raise ValueError(f"transform must be an ElementwiseTransform, got {self.transform!r}")
        if self.channel_flows and self.context_dim < 1:
            raise ValueError("channel_flows needs context_dim >= 1 (the number of channels)")

    # ---- static structure -------------------------------------------------------------

    @property
    def n_layers(self) -> int:
        return len(self.masks)

    @functools.cached_property
    def selectors(self) -> Selectors:
        """Stacked one-hot selectors (NumPy) of the masks, see :func:`make_selectors`."""
        return make_selectors(np.asarray(self.masks))

    @functools.cached_property
    def _net(self) -> MLP:
        n_t = self.selectors.trans.shape[1]
        blocks = self.context_dim if self.channel_flows else 1
        return MLP(self.hidden, n_t * self.transform.n_params, self.activation, blocks)

    @functools.cached_property
    def _input_size(self) -> int:
        return max(1, self.selectors.cond.shape[1] + self.context_dim)

    @functools.cached_property
    def _expected_params(self):
        return jax.eval_shape(self.init, jax.random.key(0))

    # ---- parameters ---------------------------------------------------------------------

    def init(self, key: PRNGKey, dtype=jnp.float32) -> Params:
        """Identity flow parameters ``{"layers": ...}`` (zero output layers), in ``dtype``."""
        dummy = jnp.zeros((self._input_size,), jnp.float32)
        keys = jax.random.split(key, self.n_layers)
        variables = jax.vmap(lambda k: self._net.init(k, dummy))(keys)
        return {"layers": _cast(variables, dtype)}

    def check_params(self, params: Params) -> None:
        """Raise ``ValueError`` if ``params`` do not fit this flow (static, trace-time)."""
        check_params(params, self._expected_params, "Flow")

    def set_elementwise_params(self, params: Params, raw: ArrayLike) -> Params:
        """Make the flow an element-wise map with given raw transform parameters.

        For every dimension ``i``, the last layer (in the forward direction) that transforms
        ``i`` gets output bias ``raw[i]`` and zero output weights for those entries, so it
        applies ``transform`` with ``raw[i]`` whatever the other dimensions. Applied to
        parameters from :meth:`init` (all other layers are the identity) the flow then *is*
        the element-wise map ``x_i = f(u_i; raw[i])``; e.g. a VEGAS grid via
        :func:`rqs_params_from_knots` or :func:`linear_params_from_heights`.

        With ``channel_flows``, ``raw [C, dim, P]`` gives each channel's flow its own map
        (``[dim, P]`` gives all channels the same).

        Args:
            params: flow parameters.
            raw: raw transform parameters ``[dim, transform.n_params]`` (or
                ``[context_dim, dim, P]`` with ``channel_flows``).

        Returns:
            Updated parameters (a new pytree).
        """
        self.check_params(params)
        n_par = self.transform.n_params
        raw = jnp.asarray(raw)
        shapes = [(self.dim, n_par)] + ([(self.context_dim, self.dim, n_par)]
                                        if self.channel_flows else [])
        if raw.shape not in shapes:
            raise ValueError(f"raw must have shape {' or '.join(map(str, shapes))}, "
                             f"got {raw.shape}")
        if raw.ndim == 2 and self.channel_flows:
            raw = jnp.broadcast_to(raw, (self.context_dim, *raw.shape))
        out = params["layers"]["params"]["output"]
        bias, kernel = out["bias"], out["kernel"]
        trans = self.selectors.trans  # [L, n_t, d]
        for i in range(self.dim):
            layer = max(l for l in range(self.n_layers) if not self.masks[l][i])
            row = int(np.flatnonzero(trans[layer, :, i])[0])
            cols = slice(row * n_par, (row + 1) * n_par)
            # [..., i, :]: the channel axis of channel flows, if any, rides along.
            bias = bias.at[layer, ..., cols].set(raw[..., i, :].astype(bias.dtype))
            kernel = kernel.at[layer, ..., cols].set(0.0)
        new_out = {**out, "bias": bias, "kernel": kernel}
        new_params = {**params["layers"]["params"], "output": new_out}
        return {**params, "layers": {**params["layers"], "params": new_params}}

    # ---- bijector -----------------------------------------------------------------------

    def _run(self, params, x, context, inverse):
        x = _as_float(x)
        if x.shape != (self.dim,):
            raise ValueError(f"Flow of dim {self.dim} got an event of shape {x.shape}; "
                             "use jax.vmap for batches")
        context = check_context(self.context_dim, context)
        self.check_params(params)
        sel = cast_selectors(self.selectors, x.dtype)

        def body(carry, layer):
            z, logdet = carry
            layer_params, layer_sel = layer
            z, ld = coupling_apply(self.transform, self._net, layer_params, layer_sel, z,
                                   context, inverse)
            return (z, logdet + ld), None

        init = (clamp_unit(x), jnp.zeros((), x.dtype))
        (y, logdet), _ = jax.lax.scan(body, init, (params["layers"], sel), reverse=inverse)
        return y, logdet

    def forward_and_log_det(self, params: Params, x: ArrayLike,
                            context: ArrayLike | None = None) -> tuple[Array, Array]:
        """Sampling direction ``u -> x`` on one event.

        Args:
            params: flow parameters.
            x: latent point ``u [d]`` in ``[0, 1]^d``.
            context: ``[context_dim]`` (required iff ``context_dim > 0``).

        Returns:
            ``x [d]`` and ``log|det dx/du|`` (scalar), in the dtype of the input.
        """
        return self._run(params, x, context, inverse=False)

    def inverse_and_log_det(self, params: Params, y: ArrayLike,
                            context: ArrayLike | None = None) -> tuple[Array, Array]:
        """Density direction ``x -> u`` on one event: ``u [d]`` and ``log|det du/dx|``."""
        return self._run(params, y, context, inverse=True)

    def log_prob(self, params: Params, x: ArrayLike,
                 context: ArrayLike | None = None) -> Array:
        """``log q(x)`` of one event ``x [d]``; ``-inf`` outside ``[0, 1]^d`` (or NaN)."""
        x = _as_float(x)
        inside = jnp.all((x >= 0) & (x <= 1))
        # Evaluate at a harmless interior point outside the cube so nothing non-finite
        # flows into the gradient; the where then discards it.
        _, logdet = self.inverse_and_log_det(params, jnp.where(inside, x, 0.5), context)
        return jnp.where(inside, logdet, -jnp.inf)

    def _batch_context(self, context, n: int):
        """The validated context of a batch of ``n`` events (``None``, shared
        ``[context_dim]`` or ``[n, context_dim]``)."""
        context = check_context(self.context_dim, context, batched=True)
        if context is not None and context.ndim == 2 and context.shape[0] != n:
            raise ValueError(f"context of shape {context.shape} does not match a batch of "
                             f"n={n} events")
        return context

    def _run_batch(self, params, x, context, inverse):
        x = _as_float(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"Flow of dim {self.dim} got a batch of shape {x.shape}; "
                             f"expected [n, {self.dim}]")
        context = self._batch_context(context, x.shape[0])
        self.check_params(params)
        return _run_rows(self, params, x, context, inverse)

    def forward_batch(self, params: Params, u: ArrayLike,
                      context: ArrayLike | None = None) -> tuple[Array, Array]:
        """:meth:`forward_and_log_det` on a batch: ``x [n, d]`` and ``log|det dx/du| [n]``.

        The numbers of ``jax.vmap(flow.forward_and_log_det)`` (equal up to rounding),
        computed layer by layer on the whole batch (see the module docstring): faster on the
        CPU, e.g. 1.5x for the value and gradient of a 4-d flow at batch 1000.

        Args:
            params: flow parameters.
            u: latent points ``[n, d]`` in ``[0, 1]^d``.
            context: ``[context_dim]`` shared by all events or ``[n, context_dim]``.
        """
        return self._run_batch(params, u, context, inverse=False)

    def inverse_batch(self, params: Params, x: ArrayLike,
                      context: ArrayLike | None = None) -> tuple[Array, Array]:
        """:meth:`inverse_and_log_det` on a batch ``x [n, d]``: ``u [n, d]`` and
        ``log|det du/dx| [n]`` (see :meth:`forward_batch`)."""
        return self._run_batch(params, x, context, inverse=True)

    def log_prob_batch(self, params: Params, x: ArrayLike,
                       context: ArrayLike | None = None) -> Array:
        """:meth:`log_prob` on a batch ``x [n, d]``: ``log q [n]``, ``-inf`` for events
        outside ``[0, 1]^d`` (see :meth:`forward_batch`)."""
        x = _as_float(x)
        inside = jnp.all((x >= 0) & (x <= 1), axis=-1)
        safe = jnp.where(inside[..., None], x, 0.5)  # finite gradients, as in log_prob
        _, logdet = self.inverse_batch(params, safe, context)
        return jnp.where(inside, logdet, -jnp.inf)

    def sample(self, key: PRNGKey, params: Params, n: int, context: ArrayLike | None = None,
               dtype=None) -> tuple[Array, Array]:
        """Draw ``n`` points and their log densities.

        Args:
            key: PRNG key.
            params: flow parameters.
            n: number of samples (static).
            context: ``[context_dim]`` shared by all samples or ``[n, context_dim]``.
            dtype: float dtype of the samples; by default that of the parameters.

        Returns:
            ``x [n, d]`` and ``log q(x) [n]``.
        """
        self.check_params(params)
        u, context = self._latent(key, params, n, context, dtype)
        x, logdet = _run_rows(self, params, u, context)
        return x, -logdet

    def sample_detached(self, key: PRNGKey, params: Params, n: int,
                        context: ArrayLike | None = None, dtype=None) -> tuple[Array, Array]:
        """Draw ``n`` points for a training loss: ``x`` carries no gradient, ``log_q`` the
        gradient of ``log q(x)`` with respect to ``params`` at fixed ``x``.

        The numbers are those of :meth:`sample` with the same key, and the gradient (reverse
        mode, first order) is that of the usual two-pass construction::

            x, _ = flow.sample(key, jax.lax.stop_gradient(params), n)
            x = jax.lax.stop_gradient(x)
            log_q = jax.vmap(flow.log_prob, (None, 0))(params, x)

        (equal up to rounding), which is what the variance and KL losses need. It is computed
        in one pass instead, without the inverse transforms: with ``y = f(u; raw)`` a layer's
        element-wise map (``raw`` from its conditioner), the inverse at fixed ``y`` moves by
        ``du = -(d_raw f) d raw / f'(u)``, so the backward pass needs only the sampling pass's
        linearisation of ``f`` and ``log f'`` with respect to ``raw``, and the slopes
        ``f'(u)`` and ``d log f' / du``. The variance-loss step of a 16-d flow at batch 16384
        ran 1.3-1.5x faster than the two-pass one on the CPU (``benchmarks/flows.py``).

        Args and returns as for :meth:`sample`. Differentiate it with ``jax.grad`` or
        ``jax.vjp`` (forward mode and second derivatives are not defined; use
        :meth:`log_prob` for those). ``context`` gets its gradient too.
        """
        self.check_params(params)
        u, context = self._latent(key, params, n, context, dtype)
        return _sample_detached(self, params, u, context)

    def _latent(self, key, params, n, context, dtype):
        """Uniform latent points ``[n, d]`` (dtype: the parameters' by default) and the
        validated context (``None``, shared ``[context_dim]`` or ``[n, context_dim]``)."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"the number of samples must be an integer >= 0, got {n!r}")
        if dtype is None:
            dtype = jax.tree.leaves(params)[0].dtype
        return jax.random.uniform(key, (n, self.dim), dtype), self._batch_context(context, n)


def batch_maps(bijector, with_context: bool = True) -> tuple[
        Callable[..., tuple[Array, Array]], Callable[..., tuple[Array, Array]]]:
    """A bijector's two directions on batches: ``fn(params, x [n, d], context=None)`` ->
    ``(y [n, d], logdet [n])``, ``context`` ``None``, shared ``[C]`` or ``[n, C]``.

    A :class:`Flow` (or a :class:`jaxnis.train.Sampler` carrying them) gives its
    ``forward_batch`` / ``inverse_batch``; any other bijector its per-event
    ``forward_and_log_det`` / ``inverse_and_log_det`` under ``jax.vmap``, called as
    ``(params, x, context)`` (``context`` ``None`` included, as the trainer's samplers
    expect), or as ``(params, x)`` with ``with_context=False`` (the element-wise transforms).
    """
    fwd, inv = getattr(bijector, "forward_batch", None), getattr(bijector, "inverse_batch", None)
    if fwd is not None and inv is not None:
        return fwd, inv

    def vmapped(per_event):
        def run(params, x, context=None):
            if not with_context:
                return jax.vmap(lambda e: per_event(params, e))(x)
            axis = 0 if context is not None and jnp.ndim(context) == 2 else None
            return jax.vmap(lambda e, c: per_event(params, e, c), (0, axis))(x, context)
        return run

    return vmapped(bijector.forward_and_log_det), vmapped(bijector.inverse_and_log_det)


#: :func:`conditioner_rows` whose hidden activations a backward pass recomputes.
_remat_conditioner = jax.checkpoint(conditioner_rows, static_argnums=(0, 1))


def _run_rows(flow: Flow, params: Params, z: Array, context, inverse: bool = False):
    """The flow on a batch ``z [n, d]`` (``inverse``: the density direction): the image
    ``[n, d]`` and ``logdet [n]`` of the applied direction.

    The same map as ``jax.vmap`` of :meth:`Flow.forward_and_log_det` (or the inverse), equal
    up to rounding, with each layer's transform evaluated on rows of events
    (:func:`conditioner_rows`): per event, the spline's bins lie along the last axis, ten
    or so numbers wide, which vectorises poorly on the CPU; as rows, each step runs over
    ``n`` contiguous events.

    The conditioner is rematerialised under reverse-mode differentiation
    (``_remat_conditioner``): the backward pass recomputes its hidden layers from the
    layer's input instead of stacking them through the scan. Value and gradient of a loss
    of the inverse pass (d = 4, 4 layers, 2 CPU cores) took 2.6-2.7 ms at batch 1000 (rows
    without the recomputation: 3.2-3.4 ms; per event: 4.1-4.3 ms) and 35 ms at batch 16384
    (39 and 39-41 ms)."""
    transform, net = flow.transform, flow._net
    apply = transform._inverse_lead if inverse else transform._forward_lead

    def body(carry, layer):
        z, logdet = carry
        theta, s = layer
        raw = _remat_conditioner(transform, net, theta, s, z, context)
        y_t, ld = apply(raw, rows_of(s.trans, z))
        return (z * s.keep + events_of(s.trans, y_t),
                logdet + jnp.sum(ld * s.valid[:, None], axis=0)), None

    init = (clamp_unit(z), jnp.zeros(z.shape[:1], z.dtype))
    sel = cast_selectors(flow.selectors, z.dtype)
    (y, logdet), _ = jax.lax.scan(body, init, (params["layers"], sel), reverse=inverse)
    return y, logdet


def _detached_pass(flow: Flow, params: Params, u: Array, context):
    """The sampling pass of :meth:`Flow.sample_detached`: ``x [n, d]``, ``log q [n]``, and
    per layer the pullback of ``raw -> (f(u; raw), log f'(u; raw))`` (through the
    conditioner, ``u`` held fixed) and the slopes ``f'(u)``, ``d log f' / du``, as rows
    ``[n_t, n]`` (the layout of :func:`_run_rows`).

    The conditioner is rematerialised (``jax.checkpoint``, as in :func:`_run_rows`): the
    backward pass recomputes its hidden layers from the layer's input instead of keeping
    them, which saves writing and reading those activations and their masks (most of what
    a layer kept). The step of ``benchmarks/flows.py`` (d = 4, batch 16384, 2 CPU cores)
    took 35 ms with rows and recomputation, 40 ms per event with the recomputation and
    44 ms per event without it."""
    transform, net = flow.transform, flow._net

    def body(carry, layer):
        z, logdet = carry
        theta, s = layer

        def transformed(theta, z, context):
            raw = _remat_conditioner(transform, net, theta, s, z, context)
            u_t = jax.lax.stop_gradient(rows_of(s.trans, z))
            return transform._forward_lead(raw, u_t), raw

        # The pullback is a pytree whose leaves are its residuals: the scan stacks them.
        (y_t, ld), pullback, raw = jax.vjp(transformed, theta, z, context, has_aux=True)
        slopes = transform._forward_slopes_lead(jax.lax.stop_gradient(raw),
                                                rows_of(s.trans, z))
        z = z * s.keep + events_of(s.trans, y_t)
        return (z, logdet + jnp.sum(ld * s.valid[:, None], axis=0)), (pullback, slopes)

    init = (clamp_unit(u), jnp.zeros(u.shape[:1], u.dtype))
    sel = cast_selectors(flow.selectors, u.dtype)
    (x, logdet), residuals = jax.lax.scan(body, init, (params["layers"], sel))
    return x, -logdet, residuals


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _sample_detached(flow: Flow, params: Params, u: Array, context):
    x, log_q, _ = _detached_pass(flow, params, u, context)
    return jax.lax.stop_gradient(x), log_q


def _sample_detached_fwd(flow, params, u, context):
    x, log_q, residuals = _detached_pass(flow, params, u, context)
    return (x, log_q), (residuals, u, context)


def _sample_detached_bwd(flow, saved, cotangents):
    """Backward pass of ``log q(x)`` at fixed ``x``, layer by layer in sampling order.

    Per layer, ``a`` is the cotangent of the transformed entries ``u`` of its input (from
    the layers below), ``g`` that of ``log q = -sum_l sum_t log f'``. With
    ``alpha = (a - g d log f'/du) / f'``, the cotangent of the layer's output is ``alpha``
    on the transformed entries and the input's on the others, and ``raw`` gets the pullback
    of ``(-alpha, -g)``, which also gives the conditioner's parameters and inputs theirs.
    The latent points get none (``x`` is detached)."""
    (pullbacks, slopes), u, context = saved
    _, g = cotangents  # the cotangent of x is dropped: x is detached

    def body(cot_z, layer):
        pullback, (fprime, dlog_fprime), s = layer
        g_t = s.valid[:, None] * g[None, :]  # rows [n_t, n], as the slopes
        alpha = (rows_of(s.trans, cot_z) - g_t * dlog_fprime) / fprime
        ct_theta, ct_z, ct_context = pullback((-alpha, -g_t))
        cot_z = cot_z * s.keep + events_of(s.trans, alpha) + ct_z
        return cot_z, (ct_theta, ct_context)

    sel = cast_selectors(flow.selectors, u.dtype)  # constants: rebuilt, not saved
    _, (ct_layers, ct_context) = jax.lax.scan(body, jnp.zeros_like(u), (pullbacks, slopes, sel))
    if context is not None:
        ct_context = jnp.sum(ct_context, axis=0)
    return {"layers": ct_layers}, jnp.zeros_like(u), ct_context


_sample_detached.defvjp(_sample_detached_fwd, _sample_detached_bwd)


def _activation(activation) -> Callable[[Array], Array]:
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of "
                             f"{_ACTIVATIONS} or a callable")
        return getattr(jax.nn, activation)
    if not callable(activation):
        raise ValueError(f"activation must be a callable or a name, got {activation!r}")
    return activation


def make_flow(dim: int, *, n_layers: int | None = None, masks="binary", transform="rqs",
              n_bins: int = 10, hidden=(32, 32, 32), activation="relu", context_dim: int = 0,
              min_bin_width: float = 1e-3, min_bin_height: float = 1e-3,
              min_derivative: float = 1e-3, mask_seed: int = 0,
              channel_flows: bool = False) -> Flow:
    """Build a coupling flow on ``[0, 1]^dim``.

    Args:
        dim: event size ``d >= 1``.
        n_layers: number of coupling layers; by default the scheme's own count
            (``2 ceil(log2 d)`` for ``"binary"``, 1 for ``d = 1``); schemes repeat to fill.
        masks: ``"binary"``, ``"checkerboard"``, ``"random"`` (seeded by ``mask_seed``) or a
            boolean array ``[n_layers, d]`` (True = condition on).
        transform: ``"rqs"``, ``"linear"``, ``"quadratic"``, ``"affine"`` or an
            :class:`~jaxnis.flows.splines.ElementwiseTransform`.
        n_bins: bins per dimension of the spline transforms.
        hidden: conditioner hidden widths (depth = ``len(hidden)``).
        activation: name in ``jax.nn`` (e.g. ``"relu"``) or a callable.
        context_dim: size of the context (e.g. a channel one-hot or physics parameters).
        min_bin_width, min_bin_height, min_derivative: limits of the transform.
        mask_seed: seed of the ``"random"`` masks.
        channel_flows: one independent flow per channel (``context_dim`` channels, one-hot
            context) instead of one flow conditioned on the channel.

    Returns:
        An immutable :class:`Flow`.

    Raises:
        ValueError: on an invalid static value (named in the message).
    """
    dim = _check_dim(dim)
    if not isinstance(transform, ElementwiseTransform):
        transform = make_transform(transform, n_bins=n_bins, min_bin_width=min_bin_width,
                                   min_bin_height=min_bin_height,
                                   min_derivative=min_derivative)
    mask_array = make_masks(masks, dim, n_layers, mask_seed)
    return Flow(dim, tuple(map(tuple, mask_array.tolist())), transform, tuple(hidden),
                _activation(activation), context_dim, bool(channel_flows))


def channel_embedding(channel: ArrayLike, n_channels: int, dtype=jnp.float32) -> Array:
    """One-hot context ``[..., n_channels]`` of integer channel indices (a conditional
    flow's context for a multi-channel integrator)."""
    if isinstance(n_channels, bool) or not isinstance(n_channels, int) or n_channels < 1:
        raise ValueError(f"n_channels must be an integer >= 1, got {n_channels!r}")
    return jax.nn.one_hot(channel, n_channels, dtype=dtype)


__all__ = ["Flow", "channel_embedding", "make_flow"]
