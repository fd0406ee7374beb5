r"""Integrands, fixed sample points, and Monte Carlo estimates with parameter gradients.

A *study integrand* gives, for one point ``r [dim]`` of channel ``c`` and a parameter pytree
``theta``, the channel-weighted integrand ``alpha_c(x) f(x | theta) J_c(r | theta)`` (pb for a
process) and the event ``x = G_c(r | theta)``. With *points* ``(r_i, c_i)`` drawn from a
sampler that does not depend on ``theta`` (uniform, or a flow held fixed), stratified over
channels (``n_c`` points in channel ``c``),

.. math::

    \hat\sigma(\theta) = \sum_c \frac{1}{n_c} \sum_{i \in c}
        \frac{\alpha_c f J_c(r_i | \theta)}{q_c(r_i)}, \qquad
    \nabla_\theta \hat\sigma = \sum_c \frac{1}{n_c} \sum_{i \in c}
        \frac{\nabla_\theta [\alpha_c f J_c](r_i | \theta)}{q_c(r_i)}.

The second line is the *pathwise* (reparameterisation) gradient: the points are held fixed
and ``jax`` differentiates through the phase-space map (a Breit-Wigner map that follows
``M_Z'`` moves every event with ``M_Z'``), the matrix element, the PDFs and the channel
weights. Its standard error is the standard error of the per-event gradients
``vmap(grad)``, so the gradient comes with an error like the value does.

**When the pathwise gradient is unbiased.** ``E[\nabla \hat\sigma] = \nabla \sigma`` when the
weight ``alpha_c f J_c`` is, for almost every fixed ``r``, differentiable in ``theta`` on the
segment considered (Lipschitz with an integrable constant suffices) and its support in ``r``
does not move with ``theta``. Both hold for the maps and matrix elements of
:mod:`jaxnis.physics.processes`: the map ranges ``[0, 1]^dim`` are fixed, resonance maps
only reshape the interior, and range settings built into the maps (Drell-Yan's
``m_ll_min`` is the luminosity map's lower end) move with their parameter. They fail for a
**cut whose boundary moves in r**: a threshold that is itself a parameter (``cos_max`` of
``EEToFFbar``), or a fixed cut on a variable that moves with ``theta`` at fixed ``r`` (an
``m_ll`` window, or Drell-Yan's own ``pt_min``/``eta_max`` lepton cuts, while the
Breit-Wigner map follows ``M_Z'``). The processes' default settings have no such cuts
(``cos_max = 1``, ``pt_min = 0``, ``eta_max = inf``); with them switched on, gradients with
respect to parameters that move events across them are biased. At fixed
``r`` the indicator is piecewise constant, so its derivative is zero almost everywhere and
the pathwise estimate misses the boundary term

.. math::

    \frac{d}{d\theta}\int_{\Omega(\theta)} w\,dr = \int_{\Omega(\theta)} \partial_\theta w\,dr
        + \oint_{\partial\Omega(\theta)} w\, v_n\, dS,

``v_n`` the normal velocity of the boundary. Remedies in :mod:`jaxnis.studies.boundaries`:
map the cut region onto a fixed box (:func:`~jaxnis.studies.boundaries.restrict`,
:func:`~jaxnis.studies.boundaries.mass_window`: unbiased), or smooth the indicator
(:func:`~jaxnis.studies.boundaries.window` with a width: unbiased for the smoothed integral,
biased by ``O(width^2)`` for the sharp one). Central finite differences of the estimate with
common random numbers include the boundary term (events cross the cut) and are the check.

All functions are pure and traceable: jit them with the integrand, ``n``, ``wrt`` and
``mode`` static (e.g. ``jax.jit(cross_section_and_grad, static_argnames=("integrand", "n",
"wrt", "mode"))``; processes and the integrands here are hashable frozen dataclasses).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnis import estimators
from jaxnis.batching import check_chunk, vmap_chunked
from jaxnis.flows.flow import batch_maps
from jaxnis.types import Array, ArrayLike, Params, PRNGKey, PyTree

_MODES = ("auto", "fwd", "rev")
#: ``mode="auto"`` uses forward mode up to this many differentiated scalars.
FWD_MAX_PARAMS = 2


# =============================================================================== integrands


class Integrand:
    """Base class of study integrands (frozen dataclasses; equal ones share jit caches).

    Subclasses define ``dim``, ``n_channels``, ``process`` (the physics process whose events
    and ``log_f`` are used by reweighting, or ``None``) and :meth:`weight_and_event`.
    """

    dim: int
    n_channels: int

    @property
    def process(self) -> Any:
        return None

    def weight_and_event(self, r: Array, params: Params, channel) -> tuple[Array, Any]:
        """``(alpha_c f J_c [], event)`` for one point ``r [dim]``; ``channel`` is a static int
        or a traced int32 scalar. ``event`` is ``None`` for a plain function."""
        raise NotImplementedError  # pragma: no cover - interface

    def log_f(self, event: Any, params: Params) -> Array:
        """``log f(x | params)`` at a fixed event (no Jacobian): what reweighting uses."""
        raise ValueError(f"{type(self).__name__} has no events")

    def weight(self, r: ArrayLike, params: Params, channel=0) -> Array:
        """``alpha_c f J_c`` at ``r [dim]`` (zero where cut; never NaN for finite input)."""
        return self.weight_and_event(jnp.asarray(r), params, channel)[0]


@dataclasses.dataclass(frozen=True)
class ProcessIntegrand(Integrand):
    """A process of :mod:`jaxnis.physics.processes` through its public methods.

    ``weight = exp(log_f(x) + log J_c(r) + log alpha_c(x))`` with ``(x, log J_c) =
    process.event(r, params, c)`` and the normalised prior channel weights
    ``alpha = exp(process.log_prior(x, params))`` (1 for one channel). Any normalised
    ``alpha`` gives an unbiased estimate; the prior is what the process defines.
    """

    proc: Any

    @property
    def dim(self) -> int:
        return self.proc.dim

    @property
    def n_channels(self) -> int:
        return self.proc.n_channels

    @property
    def process(self) -> Any:
        return self.proc

    def weight_and_event(self, r, params, channel):
        proc = self.proc
        if isinstance(channel, int):
            event, log_j = proc.event(r, params, channel)
        else:
            branches = [lambda rr, pp, c=c: proc.event(rr, pp, c)
                        for c in range(proc.n_channels)]
            event, log_j = jax.lax.switch(channel, branches, r, params)
        log_w = proc.log_f(event, params) + log_j
        if proc.n_channels > 1:
            log_w = log_w + jnp.take(proc.log_prior(event, params), channel)
        # NaN only from -inf + inf, which the maps never produce; keep it a zero weight.
        log_w = jnp.where(jnp.isnan(log_w), -jnp.inf, log_w)
        return jnp.exp(log_w), event

    def log_f(self, event, params):
        return self.proc.log_f(event, params)


@dataclasses.dataclass(frozen=True)
class FunctionIntegrand(Integrand):
    """``f(r [dim], params) -> []`` on the unit hypercube, one channel, no events."""

    fn: Callable[[Array, Params], Array]
    dim: int
    n_channels: int = 1

    def __post_init__(self):
        if not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"dim must be a positive int, got {self.dim!r}")
        if self.n_channels != 1:
            raise ValueError(f"a function integrand has one channel, got {self.n_channels}")

    def weight_and_event(self, r, params, channel):
        return jnp.asarray(self.fn(r, params)), None


def as_integrand(integrand: Any, dim: int | None = None) -> Integrand:
    """An :class:`Integrand` from a process, a study integrand or a function ``f(r, params)``.

    Raises:
        ValueError: for a function without ``dim``.
    """
    if isinstance(integrand, Integrand):
        return integrand
    if hasattr(integrand, "log_f") and hasattr(integrand, "event"):
        return ProcessIntegrand(integrand)
    if callable(integrand):
        if dim is None:
            raise ValueError("dim is required for a plain function integrand")
        return FunctionIntegrand(integrand, dim)
    raise ValueError(f"cannot use {integrand!r} as an integrand")


# =============================================================================== points


@dataclasses.dataclass(frozen=True)
class Points:
    """Fixed sample points (common random numbers), stratified over channels.

    Attributes:
        r: ``[N, dim]`` points on the unit hypercube of their channel.
        log_q: ``[N]`` log density each point was drawn from within its channel (0: uniform).
        channel: ``[N]`` int32 channel of each point.
        counts: static per-channel counts when the rows are contiguous channel blocks
            (``counts[0]`` rows of channel 0, then channel 1, ...), else ``None``. Blocks are
            evaluated with a static channel (no ``lax.switch`` over the channel maps), so
            inside ``vmap`` over parameters the channels whose map ignores them stay unbatched.
    """

    r: Array
    log_q: Array
    channel: Array
    counts: tuple[int, ...] | None = None

    @property
    def n(self) -> int:
        return self.r.shape[0]


jax.tree_util.register_dataclass(Points, data_fields=["r", "log_q", "channel"],
                                 meta_fields=["counts"])


def equal_counts(n: int, n_channels: int) -> tuple[int, ...]:
    """``n`` points split as evenly as possible over ``n_channels`` (static)."""
    if n_channels < 1 or n < 2 * n_channels:
        raise ValueError(f"n={n} must give at least 2 points to each of {n_channels} channels")
    return tuple(n // n_channels + (c < n % n_channels) for c in range(n_channels))


def _block_channels(counts: tuple[int, ...]) -> Array:
    return jnp.asarray(np.repeat(np.arange(len(counts)), counts), dtype=jnp.int32)


def uniform_points(key: PRNGKey, n: int, dim: int, n_channels: int = 1,
                   dtype=None) -> Points:
    """``n`` uniform points ``[n, dim]`` in equal contiguous channel blocks (``log q = 0``)."""
    counts = equal_counts(n, n_channels)
    dtype = jnp.dtype(float) if dtype is None else dtype
    r = jax.random.uniform(key, (n, dim), dtype)
    return Points(r, jnp.zeros(n, dtype), _block_channels(counts), counts)


def flow_points(key: PRNGKey, n: int, flow: Any, flow_params: Params,
                n_channels: int = 1) -> Points:
    """``n`` points from a flow held fixed (e.g. ``TrainState.average["flow"]``, the trained
    sampler that refine iterations draw from).

    ``u ~ U[0,1]^dim``, ``r, log det = flow.forward_and_log_det(flow_params, u, context)``,
    ``log q = -log det``; for several channels the context is the one-hot channel (the
    convention of :func:`jaxnis.train.make_trainer`), in equal contiguous blocks. A flow's
    ``forward_batch`` is used where it has one (the same map, faster on the CPU), else the
    per-event map under ``jax.vmap`` (:func:`jaxnis.flows.batch_maps`).
    """
    counts = equal_counts(n, n_channels)
    dtype = jax.tree.leaves(flow_params)[0].dtype
    u = jax.random.uniform(key, (n, flow.dim), dtype)
    channel = _block_channels(counts)
    flow_params = jax.lax.stop_gradient(flow_params)
    context = jax.nn.one_hot(channel, n_channels, dtype=dtype) if n_channels > 1 else None
    r, logdet = batch_maps(flow)[0](flow_params, u, context)
    return Points(r, -logdet, channel, counts)


def default_points(integrand: Integrand, params: Params, key: PRNGKey | None, n: int | None,
                   points: Points | None) -> Points:
    """``points`` if given, else :func:`uniform_points` in the dtype of ``params``."""
    if points is not None:
        return points
    if key is None or n is None:
        raise ValueError("give either points or both key and n")
    return uniform_points(key, n, integrand.dim, integrand.n_channels, params_dtype(params))


def params_dtype(params: Params):
    """The floating dtype of the parameter leaves (JAX's default float if none)."""
    for leaf in jax.tree.leaves(params):
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.dtype
    return jnp.dtype(float)


def map_points(fn: Callable, points: Points, n_channels: int,
               event_chunk: int | None = None) -> PyTree:
    """``fn(r [dim], log_q [], channel)`` over all points, outputs stacked ``[N, ...]``.

    ``channel`` is a static int for block layouts (and for one channel), else traced.
    ``event_chunk`` tiles the points (see :func:`vmap_chunked`); each channel block is
    tiled on its own.
    """
    if n_channels == 1:
        return vmap_chunked(lambda r, lq: fn(r, lq, 0), (points.r, points.log_q), event_chunk)
    if points.counts is not None:
        if len(points.counts) != n_channels:
            raise ValueError(f"points have {len(points.counts)} channel blocks, the "
                             f"integrand {n_channels} channels")
        outs, start = [], 0
        for c, size in enumerate(points.counts):
            sl = slice(start, start + size)
            outs.append(vmap_chunked(lambda r, lq, c=c: fn(r, lq, c),
                                     (points.r[sl], points.log_q[sl]), event_chunk))
            start += size
        return jax.tree.map(lambda *xs: jnp.concatenate(xs), *outs)
    return vmap_chunked(fn, (points.r, points.log_q, points.channel), event_chunk)


# =============================================================================== estimates


class Estimate(NamedTuple):
    """A Monte Carlo estimate: ``value`` and its standard ``error`` (pytrees of arrays)."""

    value: Any
    error: Any


class GradEstimate(NamedTuple):
    """A cross section and its gradient, each with a standard error.

    Attributes:
        value: ``[]`` the estimate (pb for a process).
        error: ``[]`` its standard error.
        grad: ``{name: []}`` (or the pytree of ``params`` when ``wrt=None``) gradient.
        grad_error: same structure, standard errors of the per-event gradients' mean.
    """

    value: Array
    error: Array
    grad: Any
    grad_error: Any


def stratified_mean(w: ArrayLike, points: Points, n_channels: int) -> Estimate:
    """``sum_c mean_{i in c} w_i`` and its error for ``w [N, ...]`` (trailing axes mapped).

    Non-finite entries are masked to zero (as :mod:`jaxnis.estimators` does).
    """
    w = jnp.asarray(w)
    flat = w.reshape(w.shape[0], -1)

    def one(col):
        if n_channels == 1:
            est = estimators.estimate(col)
        else:
            est = estimators.estimate_channels(col, points.channel, n_channels).total
        return est.value, est.error

    value, error = jax.vmap(one, in_axes=1)(flat)
    return Estimate(value.reshape(w.shape[1:]), error.reshape(w.shape[1:]))


def _split(params: Params, wrt: Sequence[str] | None) -> tuple[Params, Callable]:
    """The differentiated part of ``params`` and ``merge(sub) -> full params``."""
    if wrt is None:
        return params, lambda sub: sub
    if isinstance(wrt, str):
        raise ValueError(f"wrt must be a tuple of parameter names, got the string {wrt!r}")
    missing = [k for k in wrt if k not in params]
    if missing:
        raise ValueError(f"wrt names unknown parameters {missing}")
    sub = {k: params[k] for k in wrt}
    return sub, lambda s: {**params, **s}


def _n_scalars(tree: PyTree) -> int:
    return sum(int(np.prod(jnp.shape(x))) for x in jax.tree.leaves(tree))


def per_event_weights(integrand: Any, params: Params, points: Points,
                      event_chunk: int | None = None) -> Array:
    """``w_i = alpha_c f J_c(r_i | params) / q(r_i)``, ``[N]`` (``event_chunk`` points at a
    time, see :func:`vmap_chunked`)."""
    integrand = as_integrand(integrand, points.r.shape[-1])

    def one(r, log_q, c):
        return integrand.weight_and_event(r, params, c)[0] * jnp.exp(-log_q)

    return map_points(one, points, integrand.n_channels, event_chunk)


def resolve_mode(mode: str, params: Params, wrt: Sequence[str] | None) -> str:
    """``"fwd"`` or ``"rev"`` for ``mode`` (``"auto"``: forward up to :data:`FWD_MAX_PARAMS`
    differentiated scalars); raises ``ValueError`` for an unknown mode or bad ``wrt``."""
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    sub, _ = _split(params, wrt)
    if mode == "auto":
        return "fwd" if _n_scalars(sub) <= FWD_MAX_PARAMS else "rev"
    return mode


def event_value_and_grad(integrand: Integrand, params: Params, r: Array, log_q: Array,
                         channel, wrt: Sequence[str] | None, mode: str) -> tuple[Array, Any]:
    """Weight ``alpha_c f J_c / q`` of one point and its gradient with respect to ``wrt``
    (``mode``: ``"fwd"`` or ``"rev"``, see :func:`resolve_mode`)."""
    sub, merge = _split(params, wrt)

    def w_of(s):
        return integrand.weight_and_event(r, merge(s), channel)[0] * jnp.exp(-log_q)

    if mode == "fwd":
        def w_and_aux(s):
            w = w_of(s)
            return w, w

        jac, value = jax.jacfwd(w_and_aux, has_aux=True)(sub)
        return value, jac
    return jax.value_and_grad(w_of)(sub)


def per_event_value_and_grad(integrand: Any, params: Params, points: Points,
                             wrt: Sequence[str] | None = None, mode: str = "auto",
                             event_chunk: int | None = None) -> tuple[Array, Any]:
    """Per-event weights ``[N]`` and their pathwise gradients (leaves ``[N, ...]``).

    Args:
        integrand: process, :class:`Integrand` or ``f(r, params)``.
        params: parameter pytree.
        points: fixed sample points.
        wrt: static tuple of parameter names to differentiate (``None``: all of ``params``).
        mode: ``"fwd"`` (``jax.jacfwd`` per event: cheapest for a few parameters),
            ``"rev"`` (``jax.grad`` per event) or ``"auto"`` (forward up to
            :data:`FWD_MAX_PARAMS` scalars).
        event_chunk: static points per block (:func:`vmap_chunked`; ``None``: one ``vmap``).

    Returns:
        ``(w [N], grad)`` with ``grad`` keyed like ``wrt`` (or shaped like ``params``).
    """
    integrand = as_integrand(integrand, points.r.shape[-1])
    mode = resolve_mode(mode, params, wrt)

    def one(r, log_q, c):
        return event_value_and_grad(integrand, params, r, log_q, c, wrt, mode)

    return map_points(one, points, integrand.n_channels, event_chunk)


def cross_section(integrand: Any, params: Params, key: PRNGKey | None = None,
                  n: int | None = None, *, points: Points | None = None,
                  event_chunk: int | None = None) -> Estimate:
    """Monte Carlo estimate ``(value, error)`` of the integral at ``params``.

    Uses ``points`` if given (common random numbers), else ``n`` uniform points from ``key``
    (equal channel blocks, in the dtype of ``params``); ``event_chunk`` points at a time
    (:func:`vmap_chunked`; the same numbers, a smaller working set).
    """
    integrand = as_integrand(integrand, None if points is None else points.r.shape[-1])
    points = default_points(integrand, params, key, n, points)
    w = per_event_weights(integrand, params, points, event_chunk)
    return stratified_mean(w, points, integrand.n_channels)


def cross_section_and_grad(integrand: Any, params: Params, key: PRNGKey | None = None,
                           n: int | None = None, wrt: Sequence[str] | None = None, *,
                           points: Points | None = None, mode: str = "auto",
                           event_chunk: int | None = None) -> GradEstimate:
    """Integral, pathwise gradient w.r.t. ``wrt`` and both standard errors.

    The sampler is held fixed (``points``, or ``n`` uniform points from ``key``); the gradient
    goes through the phase-space maps (also those that follow the parameters), the matrix
    element, the PDFs and the channel weights. It is unbiased under the conditions in the
    module docstring; the error is the standard error of the per-event gradients.
    ``mode`` and ``event_chunk`` as in :func:`per_event_value_and_grad`.

    Returns:
        :class:`GradEstimate` ``(value, error, grad, grad_error)``.

    Example:
        >>> from jaxnis.physics.processes import EEToFFbar
        >>> proc = EEToFFbar("mu")
        >>> params = proc.default_params(sqrt_s=91.188)
        >>> est = cross_section_and_grad(proc, params, jax.random.key(0), 4096,
        ...                              wrt=("M_Z", "Gamma_Z"))
        >>> sorted(est.grad)
        ['Gamma_Z', 'M_Z']
    """
    integrand = as_integrand(integrand, None if points is None else points.r.shape[-1])
    points = default_points(integrand, params, key, n, points)
    w, g = per_event_value_and_grad(integrand, params, points, wrt, mode, event_chunk)
    value = stratified_mean(w, points, integrand.n_channels)
    grad = jax.tree.map(lambda x: stratified_mean(x, points, integrand.n_channels), g)
    is_est = lambda x: isinstance(x, Estimate)  # noqa: E731
    return GradEstimate(
        value.value, value.error,
        jax.tree.map(lambda e: e.value, grad, is_leaf=is_est),
        jax.tree.map(lambda e: e.error, grad, is_leaf=is_est),
    )


def grid_values(params: Params, grid: Mapping[str, ArrayLike]) -> dict[str, Array]:
    """``grid`` checked (names in ``params``, 1-D values of one length) and cast to the
    dtype of ``params``; raises ``ValueError`` otherwise."""
    if not grid:
        raise ValueError("grid must name at least one parameter")
    unknown = [k for k in grid if k not in params]
    if unknown:
        raise ValueError(f"grid names unknown parameters {unknown}")
    dtype = params_dtype(params)
    values = {k: jnp.asarray(v, dtype=dtype) for k, v in grid.items()}
    sizes = {k: v.shape for k, v in values.items()}
    if len(set(sizes.values())) != 1 or len(next(iter(sizes.values()))) != 1:
        raise ValueError(f"grid values must be 1-D of one length, got shapes {sizes}")
    return values


def over_grid(fn: Callable[[Params], Any], params: Params, grid: Mapping[str, ArrayLike],
              chunk: int | None = None) -> Any:
    """``fn({**params, **grid[g]})`` for every grid point, outputs stacked ``[G, ...]``.

    One ``vmap`` over the grid (``chunk=None``) or ``lax.map`` over chunks of ``chunk`` grid
    points (bounded memory). Grid values are cast to the dtype of ``params``.
    """
    values = grid_values(params, grid)

    def one(v):
        return fn({**params, **v})

    if chunk is None:
        return jax.vmap(one)(values)
    return jax.lax.map(one, values, batch_size=chunk)


def over_grid_blocks(block: Callable[[dict[str, Array]], Any], values: Mapping[str, Array],
                     chunk: int | None = None) -> Any:
    """``block(values)`` for the whole grid (``chunk=None``) or ``lax.map`` of ``block`` over
    consecutive blocks of ``chunk`` grid points; ``block`` maps ``{name: [g]}`` to outputs
    with leading axis ``g``, and the results are stacked ``[G, ...]`` (the last block is
    padded with copies of the first point, then cut)."""
    check_chunk(chunk, "chunk")
    g = next(iter(values.values())).shape[0]
    if chunk is None or g <= chunk:
        return block(dict(values))
    n_blocks = -(-g // chunk)
    pad = n_blocks * chunk - g

    def blocks(x):
        if pad:
            x = jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad,))])
        return x.reshape(n_blocks, chunk)

    out = jax.lax.map(block, {k: blocks(v) for k, v in values.items()})
    return jax.tree.map(lambda y: y.reshape((n_blocks * chunk,) + y.shape[2:])[:g], out)


def difference_quotient(integrand: Any, params: Params, name: str, step: float,
                        points: Points) -> Estimate:
    """Central difference ``(sigma(p + h) - sigma(p - h)) / 2h`` in ``params[name]`` with
    common random numbers, and its error from the per-event differences.

    It contains the boundary term of moving cuts (events cross them between ``p - h`` and
    ``p + h``) and is the reference for pathwise gradients; its own bias is ``O(h^2)``.
    """
    integrand = as_integrand(integrand, points.r.shape[-1])
    up = {**params, name: params[name] + step}
    down = {**params, name: params[name] - step}
    dw = (per_event_weights(integrand, up, points)
          - per_event_weights(integrand, down, points)) / (2.0 * step)
    return stratified_mean(dw, points, integrand.n_channels)


__all__ = [
    "Estimate",
    "FWD_MAX_PARAMS",
    "FunctionIntegrand",
    "GradEstimate",
    "Integrand",
    "Points",
    "ProcessIntegrand",
    "as_integrand",
    "check_chunk",
    "cross_section",
    "cross_section_and_grad",
    "default_points",
    "difference_quotient",
    "equal_counts",
    "event_value_and_grad",
    "flow_points",
    "grid_values",
    "map_points",
    "over_grid",
    "over_grid_blocks",
    "params_dtype",
    "per_event_value_and_grad",
    "per_event_weights",
    "resolve_mode",
    "stratified_mean",
    "uniform_points",
    "vmap_chunked",
]
