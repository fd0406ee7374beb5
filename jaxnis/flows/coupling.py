"""Coupling layers (Dinh et al., arXiv:1605.08803) on the unit hypercube.

A coupling layer leaves the dimensions selected by its mask unchanged and transforms the
others element-wise with a :mod:`jaxnis.flows.splines` transform whose raw parameters come
from a conditioner network evaluated on the unchanged dimensions (and an optional context
vector)::

    y_T = f(x_T; theta),   theta = NN([x_C, context]),   y_C = x_C.

The log-determinant is the sum of the element-wise log-derivatives of ``f``.

Implementation: dimensions are gathered and scattered with one-hot selection matrices
(``x_C = S_C x``, ``y = keep * x + S_T^T y_T``), products with 0 and 1 that are exact in
floating point (run at ``Precision.HIGHEST`` so accelerators do not round them through
reduced-precision matmul units). Because the selections are arrays rather than static
indices, coupling layers with different masks share one code path: a flow stacks them and
runs them with ``lax.scan`` (see :mod:`jaxnis.flows.flow`). Layers whose masks have fewer
conditioning or transformed dimensions than the widest layer are padded with zero rows;
padded transformed entries evaluate the transform at 0 and are removed from ``y`` and from
the log-determinant by the zero rows and the ``valid`` weights.

Conditioner output layout: for a layer transforming ``n_t`` dimensions (padded width) with a
transform of ``P`` raw parameters, outputs ``[r * P:(r + 1) * P]`` are the raw parameters
of the ``r``-th transformed dimension (dimensions in increasing index order), i.e. the
output reshaped to ``[n_t, P]``.

Batches: :func:`coupling_apply` and :func:`conditioner_raw` act on one event (a flow vmaps
them); :func:`conditioner_rows` gives a whole batch's raw parameters as ``[P, n_t, n]``,
rows of events, from the same parameters, for the flow's batched passes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxnis.flows.masks import validate_masks
from jaxnis.flows.splines import ElementwiseTransform, _as_float, clamp_unit
from jaxnis.types import Array, ArrayLike, Params, PRNGKey

_HIGHEST = jax.lax.Precision.HIGHEST


class BlockDense(nn.Module):
    """``blocks`` independent dense layers, one of which a one-hot selector picks.

    ``y = x @ kernel[b] + bias[b]`` for ``select = e_b``, computed as one product of the
    outer product ``select x`` (``[blocks * in]``) with the stacked kernels
    ``[blocks * in, features]``: no per-event gather of weights, ``blocks`` times the
    multiply-adds of one dense layer. Parameters: ``kernel [blocks, in, features]`` (each
    block initialised like ``nn.Dense``), ``bias [blocks, features]``.
    """

    features: int
    blocks: int
    kernel_init: Callable[..., Array] = nn.initializers.lecun_normal(batch_axis=(0,))
    bias_init: Callable[..., Array] = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: Array, select: Array) -> Array:
        n_in = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (self.blocks, n_in, self.features))
        bias = self.param("bias", self.bias_init, (self.blocks, self.features))
        outer = (select[:, None] * x[None, :]).reshape(self.blocks * n_in)
        return outer @ kernel.reshape(self.blocks * n_in, self.features) + select @ bias


class MLP(nn.Module):
    """Conditioner network: ``len(hidden)`` dense layers with ``activation``, then a linear
    output layer initialised to zero (so a fresh coupling layer is the identity).

    Acts on one input vector ``[in]`` (batch with ``jax.vmap``).

    With ``blocks = C > 1`` the last ``C`` inputs are a one-hot selector (a channel) and
    every layer is a :class:`BlockDense`: ``C`` independent networks on the other inputs,
    the selected one applied (one flow per channel, all in one program).

    Attributes:
        hidden: hidden widths, e.g. ``(32, 32, 32)``.
        out_dim: number of outputs.
        activation: element-wise activation, e.g. ``jax.nn.relu``.
        blocks: number of independent networks (1: a plain MLP).
    """

    hidden: tuple[int, ...]
    out_dim: int
    activation: Callable[[Array], Array] = jax.nn.relu
    blocks: int = 1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if self.blocks == 1:
            for width in self.hidden:
                x = self.activation(nn.Dense(width)(x))
            return nn.Dense(self.out_dim, kernel_init=nn.initializers.zeros,
                            bias_init=nn.initializers.zeros, name="output")(x)
        select, x = x[-self.blocks:], x[:-self.blocks]
        if x.shape[-1] == 0:  # nothing to condition on: a constant input per block
            x = jnp.ones((1,), select.dtype)
        for width in self.hidden:
            x = self.activation(BlockDense(width, self.blocks)(x, select))
        return BlockDense(self.out_dim, self.blocks, kernel_init=nn.initializers.zeros,
                          name="output")(x, select)


class Selectors(NamedTuple):
    """One-hot gather/scatter arrays of one or more masks (leading ``[L]`` when stacked).

    Fields:
        cond: ``[L, n_c, d]`` rows select the conditioning dimensions (zero rows pad).
        trans: ``[L, n_t, d]`` rows select the transformed dimensions (zero rows pad).
        keep: ``[L, d]`` 1 for dimensions a layer leaves unchanged.
        valid: ``[L, n_t]`` 1 for real (non-padding) transformed entries.
    """

    cond: np.ndarray
    trans: np.ndarray
    keep: np.ndarray
    valid: np.ndarray


def make_selectors(masks: np.ndarray) -> Selectors:
    """Padded one-hot selectors for a stack of masks ``[L, d]`` (True = condition on)."""
    masks = np.asarray(masks, bool)
    n_layers, dim = masks.shape
    n_c = int(masks.sum(axis=1).max())
    n_t = int((~masks).sum(axis=1).max())
    cond = np.zeros((n_layers, n_c, dim))
    trans = np.zeros((n_layers, n_t, dim))
    valid = np.zeros((n_layers, n_t))
    for layer, mask in enumerate(masks):
        for row, j in enumerate(np.flatnonzero(mask)):
            cond[layer, row, j] = 1.0
        for row, j in enumerate(np.flatnonzero(~mask)):
            trans[layer, row, j] = 1.0
            valid[layer, row] = 1.0
    return Selectors(cond, trans, masks.astype(float), valid)


def cast_selectors(selectors: Selectors, dtype) -> Selectors:
    """The selectors as arrays of ``dtype`` (the products with them stay exact)."""
    return Selectors(*(jnp.asarray(a, dtype) for a in selectors))


def _select(matrix: Array, x: Array) -> Array:
    return jnp.matmul(matrix, x, precision=_HIGHEST)


def conditioner_input(sel_cond: Array, x: Array, context: Array | None) -> Array:
    """``[S_C x, context]``, or the constant ``[1]`` when there is nothing to condition on."""
    parts = []
    if sel_cond.shape[-2] > 0:
        parts.append(_select(sel_cond, x))
    if context is not None:
        parts.append(context.astype(x.dtype))
    if not parts:
        return jnp.ones((1,), x.dtype)
    return jnp.concatenate(parts, axis=-1)


def conditioner_raw(transform: ElementwiseTransform, net: nn.Module, net_params: Params,
                    selectors: Selectors, x: Array, context: Array | None) -> Array:
    """The transform's raw parameters ``[n_t, P]`` for one event ``x [d]``: the conditioner
    on ``[S_C x, context]``, in ``x``'s dtype, one row per transformed entry."""
    raw = net.apply(net_params, conditioner_input(selectors.cond, x, context))
    return raw.astype(x.dtype).reshape(selectors.trans.shape[-2], transform.n_params)


def rows_of(matrix: Array, z: Array) -> Array:
    """``matrix @ z.T``: for a 0/1 selection ``matrix [m, d]`` and events ``z [n, d]``, the
    selected entries as rows of events ``[m, n]`` (exact; HIGHEST as in :func:`_select`)."""
    return jax.lax.dot_general(matrix, z, (((1,), (1,)), ((), ())), precision=_HIGHEST)


def events_of(matrix: Array, rows: Array) -> Array:
    """``rows.T @ matrix``: rows ``[m, n]`` put back at the places ``matrix [m, d]`` selects,
    as events ``[n, d]`` (the transpose of :func:`rows_of`)."""
    return jax.lax.dot_general(rows, matrix, (((0,), (0,)), ((), ())), precision=_HIGHEST)


def _block_outer(select: Array, x: Array) -> Array:
    """``[n, blocks * in]``: each event's input in its block's slot (see BlockDense)."""
    return (select[:, :, None] * x[:, None, :]).reshape(x.shape[0], -1)


def mlp_rows(net: MLP, variables: Params, x: Array, out_order: np.ndarray) -> Array:
    """:class:`MLP` ``net`` on a batch ``x [n, in]``, outputs as rows ``[out, n]``.

    The same network as ``jax.vmap(net.apply, (None, 0))(variables, x)[:, out_order].T``
    (equal up to the order of the sums), computed without that transpose: the output
    layer's kernel is transposed instead (``[out, hidden]``, a few thousand numbers), and
    the product ``kernel @ h.T`` gives the rows directly. ``out_order`` permutes the
    outputs (``out_order[i]`` is the output of row ``i``).
    """
    p = variables["params"]
    if net.blocks == 1:
        h = x
        for i in range(len(net.hidden)):
            layer = p[f"Dense_{i}"]
            h = net.activation(jnp.matmul(h, layer["kernel"]) + layer["bias"])
        kernel = p["output"]["kernel"][:, out_order].T
        bias = p["output"]["bias"][out_order][:, None]
        return jax.lax.dot_general(kernel, h, (((1,), (1,)), ((), ()))) + bias
    select, h = x[:, -net.blocks:], x[:, :-net.blocks]
    if h.shape[-1] == 0:  # nothing to condition on: a constant input per block
        h = jnp.ones((x.shape[0], 1), x.dtype)
    for i in range(len(net.hidden)):
        layer = p[f"BlockDense_{i}"]
        kernel = layer["kernel"].reshape(-1, layer["kernel"].shape[-1])
        h = net.activation(jnp.matmul(_block_outer(select, h), kernel)
                           + jnp.matmul(select, layer["bias"]))
    out = p["output"]
    kernel = out["kernel"][..., out_order].reshape(-1, len(out_order)).T
    bias = out["bias"][:, out_order].T
    dims = (((1,), (1,)), ((), ()))
    return (jax.lax.dot_general(kernel, _block_outer(select, h), dims)
            + jax.lax.dot_general(bias, select, dims))


def conditioner_rows(transform: ElementwiseTransform, net: MLP, net_params: Params,
                     selectors: Selectors, z: Array, context: Array | None) -> Array:
    """The transform's raw parameters for a batch ``z [n, d]``, parameters leading:
    ``[P, n_t, n]`` (what :func:`conditioner_raw` gives per event, ``[n_t, P]``, moved).

    ``context`` is ``None``, ``[context_dim]`` (shared) or ``[n, context_dim]``. This is
    the layout of a flow's batched passes: the spline then works on rows of ``n`` events
    (see ``jaxnis.flows.splines._rqs_apply``).
    """
    n = z.shape[0]
    parts = []
    if selectors.cond.shape[-2] > 0:
        parts.append(jnp.matmul(z, selectors.cond.T, precision=_HIGHEST))
    if context is not None:
        context = context.astype(z.dtype)
        parts.append(jnp.broadcast_to(context, (n, context.shape[-1])))
    x = jnp.concatenate(parts, axis=-1) if parts else jnp.ones((n, 1), z.dtype)
    n_t, n_p = selectors.trans.shape[-2], transform.n_params
    # Row p * n_t + r holds output r * P + p (parameter p of transformed entry r).
    out_order = np.arange(n_t * n_p).reshape(n_t, n_p).T.reshape(-1)
    raw = mlp_rows(net, net_params, x, out_order)
    return raw.astype(z.dtype).reshape(n_p, n_t, n)


def coupling_apply(transform: ElementwiseTransform, net: nn.Module, net_params: Params,
                   selectors: Selectors, x: Array, context: Array | None,
                   inverse: bool) -> tuple[Array, Array]:
    """One coupling layer on one event.

    Args:
        transform: element-wise transform with ``n_params = P``.
        net: conditioner with ``n_t * P`` outputs.
        net_params: its flax variables.
        selectors: one layer's selectors (no leading ``L``), arrays in ``x``'s dtype.
        x: event ``[d]`` in ``[0, 1]^d`` (not clamped here).
        context: ``[context_dim]`` or ``None``.
        inverse: apply the inverse transform.

    Returns:
        ``y [d]`` and the scalar log-determinant of the applied direction.
    """
    raw = conditioner_raw(transform, net, net_params, selectors, x, context)
    xt = _select(selectors.trans, x)
    fn = transform._inverse if inverse else transform._forward
    yt, ld = fn(raw, xt)
    # Padding rows of S_T are zero, so padded entries of y_T do not reach y.
    y = x * selectors.keep + _select(selectors.trans.T, yt)
    return y, jnp.sum(ld * selectors.valid)


def check_context(context_dim: int, context: ArrayLike | None, batched: bool = False):
    """Validate a context against ``context_dim`` (static shapes; raises ``ValueError``)."""
    if context_dim == 0:
        if context is not None:
            raise ValueError("this bijector has context_dim=0 but a context was given")
        return None
    if context is None:
        raise ValueError(f"this bijector needs a context of size context_dim={context_dim}")
    context = _as_float(context)
    ok_ndim = (1, 2) if batched else (1,)
    if context.ndim not in ok_ndim or context.shape[-1] != context_dim:
        raise ValueError(
            f"context of shape {context.shape} does not match context_dim={context_dim}"
        )
    return context


def check_params(params: Any, expected: Any, owner: str) -> None:
    """Raise ``ValueError`` unless ``params`` has the structure and shapes of ``expected``."""
    got_leaves, got_def = jax.tree_util.tree_flatten_with_path(params)
    want_leaves, want_def = jax.tree_util.tree_flatten_with_path(expected)
    if got_def != want_def:
        raise ValueError(
            f"{owner}: parameters have the wrong structure (from another configuration?); "
            f"expected {want_def}, got {got_def}"
        )
    for (path, got), (_, want) in zip(got_leaves, want_leaves, strict=True):
        if np.shape(got) != want.shape:
            raise ValueError(
                f"{owner}: parameter {jax.tree_util.keystr(path)} has shape {np.shape(got)}, "
                f"expected {want.shape} (parameters from another configuration?)"
            )


def _check_hidden(hidden) -> tuple[int, ...]:
    hidden = tuple(hidden)
    if any(isinstance(h, bool) or not isinstance(h, int | np.integer) or h < 1
           for h in hidden):
        raise ValueError(f"hidden widths must be positive integers, got {hidden!r}")
    return tuple(int(h) for h in hidden)


def _check_context_dim(context_dim) -> int:
    if (isinstance(context_dim, bool) or not isinstance(context_dim, int | np.integer)
            or context_dim < 0):
        raise ValueError(f"context_dim must be an integer >= 0, got {context_dim!r}")
    return int(context_dim)


def _cast(params: Params, dtype) -> Params:
    return jax.tree.map(lambda p: jnp.asarray(p, dtype), params)


@dataclasses.dataclass(frozen=True)
class CouplingLayer:
    """A single coupling layer with a static mask.

    Args:
        mask: booleans ``[d]``, True = condition on (unchanged), False = transformed; at
            least one False. ``d = 1`` with ``mask = (False,)`` is an element-wise layer
            conditioned on the context only (or unconditional).
        transform: element-wise transform (e.g. ``RationalQuadraticSpline()``).
        hidden: conditioner hidden widths.
        activation: conditioner activation.
        context_dim: size of the optional context vector (0 for none).

    Params are the conditioner's flax variables ``{"params": {...}}``; the output layer
    ``["params"]["output"]`` (``kernel [in, n_t * P]``, ``bias [n_t * P]``, laid out as in
    the module docstring) is zero, so :meth:`init` gives the identity.
    """

    mask: tuple[bool, ...]
    transform: ElementwiseTransform
    hidden: tuple[int, ...] = (32, 32, 32)
    activation: Callable[[Array], Array] = jax.nn.relu
    context_dim: int = 0

    def __post_init__(self):
        mask = validate_masks(np.asarray(self.mask)[None, :], len(self.mask))[0]
        object.__setattr__(self, "mask", tuple(bool(m) for m in mask))
        object.__setattr__(self, "hidden", _check_hidden(self.hidden))
        object.__setattr__(self, "context_dim", _check_context_dim(self.context_dim))
        if not isinstance(self.transform, ElementwiseTransform):
            raise ValueError(f"transform must be an ElementwiseTransform, got {self.transform!r}")

    @property
    def dim(self) -> int:
        return len(self.mask)

    @property
    def _selectors(self) -> Selectors:
        sel = make_selectors(np.asarray(self.mask)[None, :])
        return Selectors(*(a[0] for a in sel))

    @property
    def _net(self) -> MLP:
        n_t = self._selectors.trans.shape[0]
        return MLP(self.hidden, n_t * self.transform.n_params, self.activation)

    def _input_size(self) -> int:
        return max(1, sum(self.mask) + self.context_dim)

    @functools.cached_property
    def _expected_params(self):
        return jax.eval_shape(self.init, jax.random.key(0))

    def init(self, key: PRNGKey, dtype=jnp.float32) -> Params:
        """Conditioner variables (identity layer), cast to ``dtype``."""
        params = self._net.init(key, jnp.zeros((self._input_size(),), jnp.float32))
        return _cast(params, dtype)

    def _run(self, params, x, context, inverse):
        x = _as_float(x)
        if x.shape != (self.dim,):
            raise ValueError(f"CouplingLayer of dim {self.dim} got input of shape {x.shape}")
        context = check_context(self.context_dim, context)
        check_params(params, self._expected_params, "CouplingLayer")
        return coupling_apply(self.transform, self._net, params,
                              cast_selectors(self._selectors, x.dtype), clamp_unit(x), context,
                              inverse)

    def forward_and_log_det(self, params: Params, x: ArrayLike,
                            context: ArrayLike | None = None) -> tuple[Array, Array]:
        """``y [d]`` and ``log|det dy/dx|`` for one event ``x [d]``."""
        return self._run(params, x, context, inverse=False)

    def inverse_and_log_det(self, params: Params, y: ArrayLike,
                            context: ArrayLike | None = None) -> tuple[Array, Array]:
        """``x [d]`` and ``log|det dx/dy|`` for one event ``y [d]``."""
        return self._run(params, y, context, inverse=True)


__all__ = [
    "MLP",
    "CouplingLayer",
    "Selectors",
    "check_context",
    "check_params",
    "conditioner_input",
    "conditioner_rows",
    "coupling_apply",
    "events_of",
    "make_selectors",
    "mlp_rows",
    "rows_of",
]
