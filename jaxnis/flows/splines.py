"""Element-wise monotone bijections of the unit interval.

Every transform here maps ``[0, 1]`` onto ``[0, 1]``, is strictly increasing, sends 0 to 0
and 1 to 1, and is parametrised per dimension by an unconstrained raw vector of
``n_params`` numbers (zeros give the identity). The transforms are small frozen
dataclasses holding only static configuration (bin counts and lower limits); the raw
parameters are traced arrays.

Two levels of API:

* ``forward_elementwise(params, x)`` / ``inverse_elementwise(params, y)``: broadcasting
  over leading axes, ``params [..., n_params]`` with ``x [...]``; they return the image and
  the *per-element* log-derivative ``[...]``.
* ``forward_and_log_det(params, x)`` / ``inverse_and_log_det(params, y)``: the bijector
  contract on one event, ``params [d, n_params]`` and ``x [d]``, returning ``y [d]`` and the
  scalar ``log|det J|``.

Transforms (``n_bins = K``):

=====================================  =============  ===========================================
class                                  raw layout     map
=====================================  =============  ===========================================
:class:`RationalQuadraticSpline`       ``[3K + 1]``   rational-quadratic spline, arXiv:1906.04032
:class:`PiecewiseLinear`               ``[K]``        linear on K equal input bins, arXiv:1808.03856
:class:`PiecewiseQuadratic`            ``[2K + 1]``   quadratic, learned bins, arXiv:1808.03856
:class:`OddsAffine`                    ``[1]``        affine in the odds ``x / (1 - x)``
=====================================  =============  ===========================================

Numerical choices common to all transforms:

* Inputs are clamped into ``[0, 1]`` (NaN goes to 0), so a value that left the interval by
  rounding elsewhere cannot select a non-existent bin.
* Knots are cumulative sums with the first knot set to exactly 0 and the last to exactly 1,
  and bin sizes are recomputed as differences of the knots. The local coordinate of the
  last bin is then exactly 1 at ``x = 1`` and its image ends at ``y_k + fl(1 - y_k) = 1``
  (which rounds to 1 for ``0 <= y_k <= 1``): ``f(0) = 0`` and ``f(1) = 1`` hold in floating
  point, with finite log-derivatives.
* Outputs are clamped into ``[0, 1]`` (:func:`_clamp_rounding`, whose gradient passes
  straight through): rounding can otherwise land one ulp outside and the next layer, or a
  phase-space map, would see an out-of-range input.

Implementation note (speed, measured on CPU with XLA): bins are found by counting the
knots below the input and selected with ``take_along_axis``; knots are cumulative sums
written as a product with a triangular 0/1 matrix (at ``Precision.HIGHEST``, exact as a sum).
Both were faster in a full training step than one-hot sums, ``cumsum`` (a ``reduce_window``)
or compare-and-select chains unrolled over the bins. The rational-quadratic spline has a
hand-written derivative rule (``jax.custom_jvp``, see :func:`_rqs_apply`): autodiff of the
selection gives scatters, and XLA re-evaluated the autodiff of the in-bin map once per raw
parameter; the rule cut the spline's share of a training step by about half. Being a JVP
rule, it keeps forward mode (``jacfwd``) and higher derivatives.

A flow's batched passes (:meth:`jaxnis.flows.Flow.sample`, ``sample_detached``) give the
rational-quadratic spline its parameters leading, ``[3K + 1, n_t, n]``, with inputs
``[n_t, n]`` (``_forward_lead``): the softmaxes, knot sums and the bin search then run along
rows of ``n`` events instead of along ``K`` numbers per event, and bins are picked by masked
sums over the leading axis. Per event, vmapped, the ``[..., K]`` layout stays the faster one.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxnis.numerics import safe_sqrt
from jaxnis.types import Array, ArrayLike

# ----------------------------------------------------------------------------------------
# small helpers


def clamp_unit(x: ArrayLike) -> Array:
    """Clamp into ``[0, 1]``; NaN goes to 0; the gradient is 1 on the closed interval.

    ``jnp.clip`` would halve the gradient at exactly 0 or 1 (``maximum`` splits ties), which
    is where the maps are evaluated on the boundary of the cube.
    """
    x = jnp.asarray(x)
    return jnp.where(x > 1, jnp.ones_like(x), jnp.where(x >= 0, x, jnp.zeros_like(x)))


def _clamp_rounding(v: Array) -> Array:
    """Clamp a value that can leave ``[0, 1]`` only by rounding, keeping its derivative.

    The value is exactly ``clip(v, 0, 1)`` (``v + (c - v)`` is exact for ``v`` within a few
    ulp of ``c``); the gradient passes straight through, so the derivative of a map at an
    end point stays the analytic one instead of dropping to 0 when rounding overshoots.
    """
    return v + jax.lax.stop_gradient(jnp.clip(v, 0.0, 1.0) - v)


def _as_float(x: ArrayLike) -> Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _normalised_sizes(raw: Array, min_size: float) -> Array:
    """``min + (1 - K min) softmax(raw)``: K positive sizes, each >= ``min``, summing to 1."""
    k = raw.shape[-1]
    return min_size + (1.0 - k * min_size) * jax.nn.softmax(raw, axis=-1)


def _knots(sizes: Array) -> Array:
    """Knots ``[..., K + 1]`` of sizes ``[..., K]``: exactly 0 first and 1 last, cumulative
    sums in between (a product with the 0/1 matrix ``tri[i, j] = [i <= j]``; every term is
    exact, so this is a plain sum, and HIGHEST keeps accelerators from rounding it)."""
    k = sizes.shape[-1]
    tri = jnp.asarray(np.triu(np.ones((k, k - 1))), sizes.dtype)
    inner = jnp.matmul(sizes, tri, precision=jax.lax.Precision.HIGHEST)
    return jnp.concatenate([jnp.zeros_like(sizes[..., :1]), inner,
                            jnp.ones_like(sizes[..., :1])], axis=-1)


def _bin_index(v: Array, knots: Array) -> Array:
    """Index ``[..., 1]`` of the bin of ``v`` in ``knots [..., K + 1]`` (last bin closed)."""
    return jnp.sum(v[..., None] >= knots[..., 1:-1], axis=-1, keepdims=True)


def _pick(idx: Array, table: Array) -> Array:
    """``table[..., idx]`` for an index ``[..., 1]``."""
    return jnp.take_along_axis(table, idx, axis=-1)[..., 0]


# The same three steps with the bins on the leading axis (``[K, ...]``, events along the
# minor axes), for batches laid out as rows of events (see ``_rqs_apply``'s ``lead``).


def _knots_lead(sizes: Array) -> Array:
    """:func:`_knots` of sizes ``[K, ...]``: knots ``[K + 1, ...]``."""
    k = sizes.shape[0]
    tri = jnp.asarray(np.tril(np.ones((k - 1, k))), sizes.dtype)
    inner = jnp.tensordot(tri, sizes, axes=1, precision=jax.lax.Precision.HIGHEST)
    return jnp.concatenate([jnp.zeros_like(sizes[:1]), inner, jnp.ones_like(sizes[:1])],
                           axis=0)


def _bin_index_lead(v: Array, knots: Array) -> Array:
    """Index ``[...]`` of the bin of ``v`` in ``knots [K + 1, ...]`` (last bin closed)."""
    return jnp.sum(v[None] >= knots[1:-1], axis=0)


def _pick_lead(onehot: Array, table: Array) -> Array:
    """``table[idx]`` along the leading axis, as a sum masked by ``onehot [K, ...]``."""
    return jnp.sum(jnp.where(onehot, table, jnp.zeros((), table.dtype)), axis=0)


_LOG2 = math.log(2.0)


def _unit_softplus(raw: Array) -> Array:
    """``softplus(raw) / log 2 - 1``: exactly 0 at ``raw = 0``, range ``(-1, inf)``.

    Written per sign as ``raw + log1p(expm1(-raw) / 2)`` (``raw >= 0``) and
    ``log1p(expm1(raw) / 2)`` (``raw < 0``), over ``log 2``: that is
    ``(softplus(raw) - log 2) / log 2``, never overflows, and is exactly 0 at 0 because
    ``expm1(0) = log1p(0) = 0``. Each branch is smooth with slope ``1/2`` at 0, so the
    derivative there is the true ``sigmoid(0) / log 2``. (The one-line form
    ``max(raw, 0) + log1p(expm1(-|raw|) / 2)`` has the right values but autodiff combines
    the subgradients of ``max`` and ``abs`` at the tie to a zero derivative, which froze the
    slopes of every identity-initialised spline.) Each branch gets its argument through a
    ``where``, so the branch not taken neither overflows nor leaks a NaN into the gradient.
    """
    pos = raw >= 0.0
    r_pos = jnp.where(pos, raw, jnp.zeros_like(raw))
    r_neg = jnp.where(pos, jnp.zeros_like(raw), raw)
    up = r_pos + jnp.log1p(jnp.expm1(-r_pos) * 0.5)
    down = jnp.log1p(jnp.expm1(r_neg) * 0.5)
    return jnp.where(pos, up, down) / _LOG2


def _inverse_unit_softplus(t: Array) -> Array:
    """Inverse of :func:`_unit_softplus` for ``t > -1`` (exactly 0 at ``t = 0``)."""
    s = t * _LOG2  # softplus(raw) - log 2
    big = s > 15.0
    small_arg = jnp.where(big, jnp.zeros_like(s), s)
    big_arg = jnp.where(big, s, jnp.full_like(s, 15.0))
    # raw = log(2 e^s - 1) = log1p(2 expm1(s)); for large s: s + log 2 + log1p(-e^-s / 2).
    small = jnp.log1p(2.0 * jnp.expm1(small_arg))
    large = big_arg + _LOG2 + jnp.log1p(-0.5 * jnp.exp(-big_arg))
    return jnp.where(big, large, small)


def _check_bins(n_bins) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 2:
        raise ValueError(f"n_bins must be an integer >= 2, got {n_bins!r}")


def _check_min(name: str, value, upper: float, upper_text: str) -> None:
    if (isinstance(value, bool) or not isinstance(value, int | float | np.floating)
            or not 0.0 < float(value) < upper):
        raise ValueError(f"{name} must be in (0, {upper_text}), got {value!r}")


# ----------------------------------------------------------------------------------------
# base class


class ElementwiseTransform:
    """Common bijector interface of the element-wise transforms (see the module docstring).

    Subclasses define ``n_params`` and ``_forward(params, x)`` / ``_inverse(params, y)`` on
    ``params [..., n_params]`` and inputs ``[...]`` of matching leading shape, already in
    ``[0, 1]`` and in one dtype.
    """

    n_params: int

    def _forward(self, params: Array, x: Array) -> tuple[Array, Array]:
        raise NotImplementedError

    def _inverse(self, params: Array, y: Array) -> tuple[Array, Array]:
        raise NotImplementedError

    def _forward_slopes(self, params: Array, x: Array) -> tuple[Array, Array]:
        """``dy/dx`` and ``d log(dy/dx) / dx`` of the forward map at ``x`` (``params``
        fixed), element-wise; for :meth:`jaxnis.flows.Flow.sample_detached`."""
        _, slopes = jax.jvp(lambda v: self._forward(params, v), (x,), (jnp.ones_like(x),))
        return slopes

    # Rows layout: ``params [n_params, ...]`` (parameters leading) and inputs ``[...]``. A
    # flow's batched passes call these with rows of events ``[n_params, n_t, n]``; the
    # generic versions move the parameters back to the last axis.

    def _forward_lead(self, params: Array, x: Array) -> tuple[Array, Array]:
        return self._forward(jnp.moveaxis(params, 0, -1), x)

    def _inverse_lead(self, params: Array, y: Array) -> tuple[Array, Array]:
        return self._inverse(jnp.moveaxis(params, 0, -1), y)

    def _forward_slopes_lead(self, params: Array, x: Array) -> tuple[Array, Array]:
        return self._forward_slopes(jnp.moveaxis(params, 0, -1), x)

    def identity_params(self, dim: int, dtype=jnp.float32) -> Array:
        """Raw parameters ``[dim, n_params]`` of the identity map (all zeros)."""
        return jnp.zeros((dim, self.n_params), dtype)

    def _prepare(self, params: ArrayLike, x: ArrayLike) -> tuple[Array, Array]:
        x = clamp_unit(_as_float(x))
        params = jnp.asarray(params)
        if params.ndim < 1 or params.shape[-1] != self.n_params:
            raise ValueError(
                f"{type(self).__name__}: params must have shape [..., {self.n_params}], got "
                f"{params.shape}"
            )
        shape = jnp.broadcast_shapes(params.shape[:-1], x.shape)
        params = jnp.broadcast_to(params.astype(x.dtype), (*shape, self.n_params))
        return params, jnp.broadcast_to(x, shape)

    def forward_elementwise(self, params: ArrayLike, x: ArrayLike) -> tuple[Array, Array]:
        """``y = f(x)`` and ``log f'(x)`` element-wise; ``params [..., n_params]``, ``x [...]``
        (broadcast against each other). Inputs are clamped into ``[0, 1]``; outputs follow
        the dtype of ``x``."""
        return self._forward(*self._prepare(params, x))

    def inverse_elementwise(self, params: ArrayLike, y: ArrayLike) -> tuple[Array, Array]:
        """``x = f^{-1}(y)`` and ``log (f^{-1})'(y)`` element-wise."""
        return self._inverse(*self._prepare(params, y))

    def _check_event(self, params: ArrayLike, x: ArrayLike) -> None:
        shape, pshape = jnp.shape(x), jnp.shape(params)
        if len(shape) != 1 or pshape != (*shape, self.n_params):
            raise ValueError(
                f"{type(self).__name__}: expected params [d, {self.n_params}] and an event "
                f"[d]; got params {pshape} and input {shape}"
            )

    def forward_and_log_det(self, params: ArrayLike, x: ArrayLike) -> tuple[Array, Array]:
        """Apply the map to one event.

        Args:
            params: raw parameters ``[d, n_params]``.
            x: point ``[d]`` in ``[0, 1]^d``.

        Returns:
            ``y [d]`` and ``log|det dy/dx|`` (scalar), in the dtype of ``x``.
        """
        self._check_event(params, x)
        y, ld = self.forward_elementwise(params, x)
        return y, jnp.sum(ld)

    def inverse_and_log_det(self, params: ArrayLike, y: ArrayLike) -> tuple[Array, Array]:
        """Inverse of :meth:`forward_and_log_det`: ``x [d]`` and ``log|det dx/dy|``."""
        self._check_event(params, y)
        x, ld = self.inverse_elementwise(params, y)
        return x, jnp.sum(ld)


# ----------------------------------------------------------------------------------------
# rational-quadratic spline


@dataclasses.dataclass(frozen=True)
class RationalQuadraticSpline(ElementwiseTransform):
    """Monotone rational-quadratic spline of ``[0, 1]`` onto itself (Durkan et al.,
    arXiv:1906.04032), with learned bin widths, bin heights and knot derivatives, the two end
    derivatives included (no linear tails: the domain is the whole interval).

    Raw parameter layout per dimension, ``[..., 3K + 1]``::

        raw[0:K]          widths   w_k = min_w + (1 - K min_w) softmax(raw[0:K])_k      (input)
        raw[K:2K]         heights  h_k = min_h + (1 - K min_h) softmax(raw[K:2K])_k     (output)
        raw[2K:3K+1]      slopes   d_k = min_d + (1 - min_d) softplus(raw[2K + k]) / log 2,
                                   k = 0..K (d_0 at x = 0, d_K at x = 1)

    Knots are ``x_k = w_0 + ... + w_{k-1}`` and ``y_k = h_0 + ... + h_{k-1}`` (with
    ``x_0 = y_0 = 0`` and ``x_K = y_K = 1`` exactly). Zero raw parameters give equal bins and
    unit slopes, i.e. the identity (up to rounding). In bin ``k`` with
    ``theta = (x - x_k) / w_k`` and ``s_k = h_k / w_k``::

        y = y_k + h_k [s_k theta^2 + d_k theta (1 - theta)]
                  / [s_k + (d_{k+1} + d_k - 2 s_k) theta (1 - theta)]

    Every quantity that enters a ``log`` or a division is bounded below by ``min_w``,
    ``min_h`` or ``min_d``, so the map and its log-derivative are finite on the closed
    interval. :func:`rqs_params_from_knots` inverts the normalisation.

    Args:
        n_bins: number of bins ``K >= 2``.
        min_bin_width: lower limit of every bin width, ``0 < min_w < 1 / K``.
        min_bin_height: lower limit of every bin height, ``0 < min_h < 1 / K``.
        min_derivative: lower limit of the knot derivatives, ``0 < min_d < 1``.
    """

    n_bins: int = 10
    min_bin_width: float = 1e-3
    min_bin_height: float = 1e-3
    min_derivative: float = 1e-3

    def __post_init__(self):
        _check_bins(self.n_bins)
        limit = f"1 / n_bins = {1.0 / self.n_bins:.4g}"
        _check_min("min_bin_width", self.min_bin_width, 1.0 / self.n_bins, limit)
        _check_min("min_bin_height", self.min_bin_height, 1.0 / self.n_bins, limit)
        _check_min("min_derivative", self.min_derivative, 1.0, "1")

    @property
    def n_params(self) -> int:
        return 3 * self.n_bins + 1

    def _slope(self, raw: Array) -> Array:
        # 1 + (1 - min_d) (softplus(raw) / log 2 - 1): exactly 1 at raw = 0, > min_d always.
        return 1.0 + (1.0 - self.min_derivative) * _unit_softplus(raw)

    def knots(self, params: ArrayLike) -> tuple[Array, Array, Array]:
        """Normalised spline of raw parameters ``[..., 3K + 1]``: x-knots ``[..., K + 1]``,
        y-knots ``[..., K + 1]`` and knot derivatives ``[..., K + 1]``."""
        raw_w, raw_h, raw_d = jnp.split(_as_float(params), [self.n_bins, 2 * self.n_bins],
                                        axis=-1)
        return (_knots(_normalised_sizes(raw_w, self.min_bin_width)),
                _knots(_normalised_sizes(raw_h, self.min_bin_height)), self._slope(raw_d))

    def params_from_knots(self, widths: ArrayLike, heights: ArrayLike,
                          derivatives: ArrayLike) -> Array:
        """Raw parameters reproducing given bins; see :func:`rqs_params_from_knots`."""
        return rqs_params_from_knots(
            widths, heights, derivatives, min_bin_width=self.min_bin_width,
            min_bin_height=self.min_bin_height, min_derivative=self.min_derivative,
        )

    def _geometry(self, params: Array, v: Array, search_y: bool, lead: bool = False):
        """Softmax probabilities of the widths and heights, the bin index ``[...]`` of ``v``
        (searched among the x- or the y-knots) and the bin geometry
        ``(x_lo, w, y_lo, h, raw_d_lo, raw_d_hi)``, each ``[...]``.

        ``params`` are ``[..., 3K + 1]`` (probabilities ``[..., K]``) or, with ``lead``,
        ``[3K + 1, ...]`` (probabilities ``[K, ...]``). In the leading layout every step is
        an element-wise operation or a sum over the leading axis on contiguous rows of
        events, and bins are picked by masked sums instead of a gather.
        """
        k = self.n_bins
        if lead:
            raw_w, raw_h, raw_d = params[:k], params[k:2 * k], params[2 * k:]
            axis, knots = 0, _knots_lead
        else:
            # One split (its gradient is one concatenation, not three padded slices).
            raw_w, raw_h, raw_d = jnp.split(params, [k, 2 * k], axis=-1)
            axis, knots = -1, _knots
        p_w, p_h = jax.nn.softmax(raw_w, axis=axis), jax.nn.softmax(raw_h, axis=axis)
        xk = knots(self.min_bin_width + (1.0 - k * self.min_bin_width) * p_w)
        yk = knots(self.min_bin_height + (1.0 - k * self.min_bin_height) * p_h)
        if lead:
            idx = _bin_index_lead(v, yk if search_y else xk)
            onehot = jnp.arange(k).reshape((k,) + (1,) * idx.ndim) == idx[None]

            def lo(table):
                return _pick_lead(onehot, table[:-1])

            def hi(table):
                return _pick_lead(onehot, table[1:])
        else:
            column = _bin_index(v, yk if search_y else xk)
            idx = column[..., 0]

            def lo(table):
                return _pick(column, table[..., :-1])

            def hi(table):
                return _pick(column, table[..., 1:])
        x_lo, y_lo = lo(xk), lo(yk)
        # Widths and heights as knot differences: the bin's image is exactly [y_lo, y_hi].
        # Only the two slopes of the selected bin go through the softplus map (in _local).
        geometry = (x_lo, hi(xk) - x_lo, y_lo, hi(yk) - y_lo, lo(raw_d), hi(raw_d))
        return p_w, p_h, idx, geometry

    def _bin(self, params: Array, v: Array, search_y: bool):
        """Geometry of the bin of ``v``: ``x_lo, w, y_lo, h, d_lo, d_hi``."""
        x_lo, w, y_lo, h, raw_lo, raw_hi = self._geometry(params, v, search_y)[3]
        return x_lo, w, y_lo, h, self._slope(raw_lo), self._slope(raw_hi)

    @staticmethod
    def _log_derivative(theta, s, d_lo, d_hi):
        t1 = theta * (1.0 - theta)
        den = s + (d_hi + d_lo - 2.0 * s) * t1
        num = d_hi * theta * theta + 2.0 * s * t1 + d_lo * (1.0 - theta) * (1.0 - theta)
        # s, num and den are >= min(s, min_d) > 0 for theta in [0, 1]: the log is finite.
        return jnp.log(s * s * num / (den * den))

    def _local(self, inverse: bool, geometry, v: Array) -> tuple[Array, Array]:
        """The map inside one bin: image and log-derivative of ``v`` given the bin geometry
        ``(x_lo, w, y_lo, h, raw_d_lo, raw_d_hi)`` (element-wise, no search)."""
        x_lo, w, y_lo, h, raw_lo, raw_hi = geometry
        d_lo, d_hi = self._slope(raw_lo), self._slope(raw_hi)
        s = h / w
        if not inverse:
            # theta is exactly 1 at x = 1 (w was computed as 1 - x_lo), so f(1) = y_lo + h = 1.
            theta = _clamp_rounding((v - x_lo) / w)
            t1 = theta * (1.0 - theta)
            y = y_lo + h * (s * theta * theta + d_lo * t1) / (s + (d_hi + d_lo - 2.0 * s) * t1)
            return _clamp_rounding(y), self._log_derivative(theta, s, d_lo, d_hi)
        r = (v - y_lo) / h  # relative height in the bin, exactly 1 at y = 1
        # theta solves a theta^2 + b theta + c = 0 with (Durkan et al. eq. 6-8, divided by h)
        # a = s - d_lo + r c2, b = d_lo - r c2, c = -s r, c2 = d_lo + d_hi - 2 s. The root in
        # [0, 1] in the cancellation-free form 2c / (-b - sqrt(b^2 - 4ac)), with the
        # discriminant rewritten as ((1 - r) d_lo + r d_hi)^2 + 4 r (1 - r) (s^2 - d_lo d_hi):
        # b^2 - 4ac as written cancels catastrophically near the bin top (there it is d_hi^2).
        # It is >= 0 for a monotone bin, but rounds to 0 or below where s^2 is below the
        # rounding of d_lo d_hi (steep knots around a flat bin): safe_sqrt takes that as 0
        # with a zero gradient, where sqrt's infinite slope times the clamp's zero would
        # give NaN, which reaches every parameter of the flow through the backward pass.
        lin = (1.0 - r) * d_lo + r * d_hi
        disc = lin * lin + 4.0 * r * (1.0 - r) * (s * s - d_lo * d_hi)
        theta = _clamp_rounding(
            2.0 * s * r / (d_lo - r * (d_lo + d_hi - 2.0 * s) + safe_sqrt(disc)))
        x = _clamp_rounding(x_lo + theta * w)
        return x, -self._log_derivative(theta, s, d_lo, d_hi)

    def _forward(self, params: Array, x: Array) -> tuple[Array, Array]:
        return _rqs_apply(self, False, False, params, x)

    def _forward_lead(self, params: Array, x: Array) -> tuple[Array, Array]:
        return _rqs_apply(self, False, True, params, x)

    def _forward_slopes(self, params: Array, x: Array, lead: bool = False
                        ) -> tuple[Array, Array]:
        # Only the in-bin map is differentiated (the generic rule would also carry zero
        # tangents of the parameters through the bin geometry).
        geometry = self._geometry(params, x, False, lead)[3]
        _, slopes = jax.jvp(lambda v: self._local(False, geometry, v), (x,),
                            (jnp.ones_like(x),))
        return slopes

    def _forward_slopes_lead(self, params: Array, x: Array) -> tuple[Array, Array]:
        return self._forward_slopes(params, x, lead=True)

    def _inverse(self, params: Array, y: Array) -> tuple[Array, Array]:
        return _rqs_apply(self, True, False, params, y)

    def _inverse_lead(self, params: Array, y: Array) -> tuple[Array, Array]:
        return _rqs_apply(self, True, True, params, y)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _rqs_apply(spline: RationalQuadraticSpline, inverse: bool, lead: bool, params: Array,
               v: Array) -> tuple[Array, Array]:
    """Rational-quadratic spline (``inverse``: its inverse) of ``v [...]`` with raw
    parameters ``params [..., 3K + 1]`` (``lead``: ``[3K + 1, ...]``, see
    :meth:`RationalQuadraticSpline._geometry`): image and log-derivative.

    The value is the plain composition search -> bin geometry -> local map. The derivative
    rule exists for speed (the value is unchanged): differentiating the bin selection
    (``take_along_axis``) by autodiff gives scatters, and differentiating the local map
    inside a layer lets XLA re-evaluate its long element-wise chain once per raw parameter.
    The rule below (i) differentiates the local map once per element with respect to its six
    geometry scalars and ``v``, and (ii) writes the tangents of the geometry as masked sums
    over the bins, which transpose into element-wise products (no scatter). With
    ``p = softmax(raw_w)``, ``c = 1 - K min_w``, bin ``i`` and ``P = x_lo``'s softmax mass
    ``sum_{j<i} p_j = (x_lo - i min_w) / c``::

        d x_lo = c (sum_{j<i} p_j d raw_j - P sum_j p_j d raw_j)
        d w    = c (p_i d raw_i - p_i sum_j p_j d raw_j)

    (heights alike; a raw slope enters only through its own bin). The rule is plain JAX
    of the primal values, so higher derivatives (``check_grads`` order 2, Hessians) follow
    by differentiating it; tests compare it with autodiff of the same composition.
    """
    geometry = spline._geometry(params, v, inverse, lead)[3]
    return spline._local(inverse, geometry, v)


@_rqs_apply.defjvp
def _rqs_apply_jvp(spline, inverse, lead, primals, tangents):
    params, v = primals
    d_params, d_v = tangents
    k = spline.n_bins
    min_w, min_h = spline.min_bin_width, spline.min_bin_height
    p_w, p_h, idx, geometry = spline._geometry(params, v, inverse, lead)
    (out, ld), local_vjp = jax.vjp(lambda g, u: spline._local(inverse, g, u), geometry, v)
    one, zero = jnp.ones_like(out), jnp.zeros_like(out)
    g_out, gv_out = local_vjp((one, zero))  # d out / d (geometry, v)
    g_ld, gv_ld = local_vjp((zero, one))  # d ld / d (geometry, v)
    x_lo, w, y_lo, h, _, _ = geometry
    c_w, c_h = 1.0 - k * min_w, 1.0 - k * min_h
    i = idx.astype(params.dtype)
    mass_below_w, mass_w = (x_lo - i * min_w) / c_w, (w - min_w) / c_w
    mass_below_h, mass_h = (y_lo - i * min_h) / c_h, (h - min_h) / c_h
    if lead:
        axis, at = 0, idx[None]
        dw, dh, dd = d_params[:k], d_params[k:2 * k], d_params[2 * k:]
        knots = jnp.arange(k + 1).reshape((k + 1,) + (1,) * idx.ndim)
    else:
        axis, at = -1, idx[..., None]
        dw, dh, dd = jnp.split(d_params, [k, 2 * k], axis=-1)
        knots = jnp.arange(k + 1)
    below, inside = knots[:-1] < at, knots[:-1] == at
    t_w, t_h = p_w * dw, p_h * dh
    s_w, s_h = jnp.sum(t_w, axis=axis), jnp.sum(t_h, axis=axis)
    nil = jnp.zeros((), params.dtype)

    def masked_sum(mask, t):
        return jnp.sum(jnp.where(mask, t, nil), axis=axis)

    d_geometry = (
        c_w * (masked_sum(below, t_w) - mass_below_w * s_w),
        c_w * (masked_sum(inside, t_w) - mass_w * s_w),
        c_h * (masked_sum(below, t_h) - mass_below_h * s_h),
        c_h * (masked_sum(inside, t_h) - mass_h * s_h),
        masked_sum(knots == at, dd),
        masked_sum(knots == at + 1, dd),
    )
    d_out, d_ld = gv_out * d_v, gv_ld * d_v
    for a, b, t in zip(g_out, g_ld, d_geometry, strict=True):
        d_out = d_out + a * t
        d_ld = d_ld + b * t
    return (out, ld), (d_out, d_ld)


def rqs_params_from_knots(widths: ArrayLike, heights: ArrayLike, derivatives: ArrayLike, *,
                          min_bin_width: float = 1e-3, min_bin_height: float = 1e-3,
                          min_derivative: float = 1e-3) -> Array:
    """Raw :class:`RationalQuadraticSpline` parameters for given bins (inverse normalisation).

    Use it to start a spline from a known map, e.g. a VEGAS grid (the grid's uniform input
    bins are ``widths = 1/K``, its output increments are ``heights``, and a slope estimate
    such as the mean of the neighbouring ``h_k / w_k`` gives ``derivatives``).

    Args:
        widths: bin widths ``[..., K]`` on the input side; rescaled to sum to 1.
        heights: bin heights ``[..., K]`` on the output side; rescaled to sum to 1.
        derivatives: slopes at the ``K + 1`` knots ``[..., K + 1]``, ends included.
        min_bin_width, min_bin_height, min_derivative: the limits of the target spline.

    Returns:
        Raw parameters ``[..., 3K + 1]``: ``[width logits, height logits, slope pre-images]``.
        Sizes below ``min + 1e-6 (1 - K min)`` and slopes below ``min_d + 1e-6 (1 - min_d)``
        are raised to these values (the normalisation cannot reach its limits); within that,
        ``RationalQuadraticSpline.knots`` of the result reproduces the input.
    """
    widths, heights, derivatives = (_as_float(a) for a in (widths, heights, derivatives))
    k = widths.shape[-1]
    if heights.shape[-1] != k or derivatives.shape[-1] != k + 1:
        raise ValueError(
            f"expected widths [..., K], heights [..., K], derivatives [..., K + 1]; got "
            f"{widths.shape}, {heights.shape}, {derivatives.shape}"
        )
    _check_bins(k)

    def logits(sizes, min_size):
        p = (sizes / jnp.sum(sizes, axis=-1, keepdims=True) - min_size) / (1.0 - k * min_size)
        logp = jnp.log(jnp.maximum(p, 1e-6))
        return logp - jnp.mean(logp, axis=-1, keepdims=True)  # softmax is shift invariant

    t = (derivatives - 1.0) / (1.0 - min_derivative)
    raw_d = _inverse_unit_softplus(jnp.maximum(t, -1.0 + 1e-6))
    return jnp.concatenate(
        [logits(widths, min_bin_width), logits(heights, min_bin_height), raw_d], axis=-1
    )


# ----------------------------------------------------------------------------------------
# piecewise-linear


@dataclasses.dataclass(frozen=True)
class PiecewiseLinear(ElementwiseTransform):
    """Piecewise-linear map on ``K`` equal input bins with learned output heights (Mueller et
    al., arXiv:1808.03856; the inverse is the CDF of a piecewise-constant density).

    Raw layout per dimension ``[..., K]``: ``h_k = min_h + (1 - K min_h) softmax(raw)_k``. In
    bin ``k = floor(K x)`` with ``alpha = K x - k``: ``y = y_k + alpha h_k`` and
    ``dy/dx = K h_k``. Forward is the VEGAS map with increments ``h_k``
    (:func:`linear_params_from_heights`). Zero parameters give the identity.

    Args:
        n_bins: number of bins ``K >= 2``.
        min_bin_height: lower limit of the heights, ``0 < min_h < 1 / K``.
    """

    n_bins: int = 10
    min_bin_height: float = 1e-3

    def __post_init__(self):
        _check_bins(self.n_bins)
        limit = f"1 / n_bins = {1.0 / self.n_bins:.4g}"
        _check_min("min_bin_height", self.min_bin_height, 1.0 / self.n_bins, limit)

    @property
    def n_params(self) -> int:
        return self.n_bins

    def _heights(self, params: Array) -> Array:
        return _knots(_normalised_sizes(params, self.min_bin_height))

    def _forward(self, params: Array, x: Array) -> tuple[Array, Array]:
        k = self.n_bins
        yk = self._heights(params)
        t = x * k
        idx = jnp.minimum(jnp.floor(t), k - 1)
        ii = idx.astype(jnp.int32)[..., None]
        y_lo = _pick(ii, yk[..., :-1])
        h = _pick(ii, yk[..., 1:]) - y_lo  # knot difference: the bin ends exactly at y_hi
        alpha = t - idx  # exactly 1 at x = 1, so f(1) = y_{K-1} + (1 - y_{K-1}) = 1
        return _clamp_rounding(y_lo + alpha * h), jnp.log(h * k)

    def _inverse(self, params: Array, y: Array) -> tuple[Array, Array]:
        k = self.n_bins
        yk = self._heights(params)
        ii = _bin_index(y, yk)
        y_lo = _pick(ii, yk[..., :-1])
        h = _pick(ii, yk[..., 1:]) - y_lo
        alpha = (y - y_lo) / h
        return _clamp_rounding((ii[..., 0].astype(y.dtype) + alpha) / k), -jnp.log(h * k)


def linear_params_from_heights(heights: ArrayLike, *, min_bin_height: float = 1e-3) -> Array:
    """Raw :class:`PiecewiseLinear` parameters ``[..., K]`` for heights ``[..., K]`` (e.g. the
    increments of a VEGAS grid); heights are rescaled to sum to 1 and raised to at least
    ``min_h + 1e-6 (1 - K min_h)``."""
    heights = _as_float(heights)
    k = heights.shape[-1]
    _check_bins(k)
    p = heights / jnp.sum(heights, axis=-1, keepdims=True) - min_bin_height
    logp = jnp.log(jnp.maximum(p / (1.0 - k * min_bin_height), 1e-6))
    return logp - jnp.mean(logp, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------------------
# piecewise-quadratic


@dataclasses.dataclass(frozen=True)
class PiecewiseQuadratic(ElementwiseTransform):
    """Piecewise-quadratic map with learned bin widths (Mueller et al., arXiv:1808.03856): the
    derivative (the density of the inverse map) is piecewise linear and continuous.

    Raw layout per dimension ``[..., 2K + 1]``::

        raw[0:K]       widths  w_k = min_w + (1 - K min_w) softmax(raw[0:K])_k
        raw[K:2K+1]    vertex densities  v_j = min_h + (1 - min_h) e_j / N,
                       e_j = exp(raw[K + j] - max raw), N = sum_k w_k (e_k + e_{k+1}) / 2

    so ``v_j >= min_h`` and the bin masses ``m_k = w_k (v_k + v_{k+1}) / 2`` sum to 1. In bin
    ``k`` with ``alpha = (x - x_k) / w_k`` and ``S = v_k + v_{k+1}``::

        y = y_k + m_k [alpha^2 v_{k+1} + alpha (2 - alpha) v_k] / S,
        dy/dx = (m_k / w_k) 2 [alpha v_{k+1} + (1 - alpha) v_k] / S

    (``= v_k + alpha (v_{k+1} - v_k)``; the masses used are differences of the exact
    cumulative knots, and the bracket equals ``S`` in floating point at ``alpha = 1``, so
    ``f(1) = 1`` exactly). The inverse solves the quadratic in the cancellation-free form.
    Zero parameters give the identity.

    Args:
        n_bins: number of bins ``K >= 2``.
        min_bin_width: lower limit of the widths, ``0 < min_w < 1 / K``.
        min_bin_height: lower limit of the vertex densities, ``0 < min_h < 1``.
    """

    n_bins: int = 10
    min_bin_width: float = 1e-3
    min_bin_height: float = 1e-3

    def __post_init__(self):
        _check_bins(self.n_bins)
        limit = f"1 / n_bins = {1.0 / self.n_bins:.4g}"
        _check_min("min_bin_width", self.min_bin_width, 1.0 / self.n_bins, limit)
        _check_min("min_bin_height", self.min_bin_height, 1.0, "1")

    @property
    def n_params(self) -> int:
        return 2 * self.n_bins + 1

    def _bin(self, params: Array, val: Array, search_y: bool):
        k = self.n_bins
        raw_w, raw_v = jnp.split(params, [k], axis=-1)
        xk = _knots(_normalised_sizes(raw_w, self.min_bin_width))
        w = xk[..., 1:] - xk[..., :-1]
        # Shift by the max: exp cannot overflow; the normalisation removes the shift.
        e = jnp.exp(raw_v - jax.lax.stop_gradient(jnp.max(raw_v, axis=-1, keepdims=True)))
        norm = jnp.sum(w * (e[..., :-1] + e[..., 1:]), axis=-1, keepdims=True)
        v = self.min_bin_height + (1.0 - self.min_bin_height) * 2.0 * e / norm
        yk = _knots(w * (v[..., :-1] + v[..., 1:]) * 0.5)
        idx = _bin_index(val, yk if search_y else xk)
        x_lo, x_hi = _pick(idx, xk[..., :-1]), _pick(idx, xk[..., 1:])
        y_lo, y_hi = _pick(idx, yk[..., :-1]), _pick(idx, yk[..., 1:])
        v_lo, v_hi = _pick(idx, v[..., :-1]), _pick(idx, v[..., 1:])
        # Sizes as knot differences: the last bin is exactly [x_{K-1}, 1] -> [y_{K-1}, 1].
        return x_lo, x_hi - x_lo, y_lo, y_hi - y_lo, v_lo, v_hi

    @staticmethod
    def _log_derivative(alpha, w, m, v_lo, v_hi):
        return jnp.log(m * 2.0 * (alpha * v_hi + (1.0 - alpha) * v_lo) / (w * (v_lo + v_hi)))

    def _forward(self, params: Array, x: Array) -> tuple[Array, Array]:
        x_lo, w, y_lo, m, v_lo, v_hi = self._bin(params, x, search_y=False)
        alpha = _clamp_rounding((x - x_lo) / w)
        g = (alpha * alpha * v_hi + alpha * (2.0 - alpha) * v_lo) / (v_lo + v_hi)
        return _clamp_rounding(y_lo + m * g), self._log_derivative(alpha, w, m, v_lo, v_hi)

    def _inverse(self, params: Array, y: Array) -> tuple[Array, Array]:
        x_lo, w, y_lo, m, v_lo, v_hi = self._bin(params, y, search_y=True)
        r = (y - y_lo) / m
        # alpha^2 (v_hi - v_lo) + 2 v_lo alpha - r S = 0 (S = v_lo + v_hi): the root in
        # [0, 1] is r S / (v_lo + sqrt(disc)) with disc = v_lo^2 + r (v_hi^2 - v_lo^2),
        # written as (1 - r) v_lo^2 + r v_hi^2 to avoid cancellation (> 0 since v >= min_h).
        disc = jnp.maximum((1.0 - r) * v_lo * v_lo + r * v_hi * v_hi, 0.0)
        alpha = _clamp_rounding(r * (v_lo + v_hi) / (v_lo + jnp.sqrt(disc)))
        x = _clamp_rounding(x_lo + alpha * w)
        return x, -self._log_derivative(alpha, w, m, v_lo, v_hi)


# ----------------------------------------------------------------------------------------
# affine in the odds


@dataclasses.dataclass(frozen=True)
class OddsAffine(ElementwiseTransform):
    """Affine map in odds space, ``y / (1 - y) = e^a x / (1 - x)``: the map of ``logit(x)``
    by a shift, i.e. a scaling of the odds, which keeps ``[0, 1]`` onto itself with finite
    derivatives at both ends (a Moebius map of the interval). It scales the density at 0 by
    ``e^-a`` and at 1 by ``e^a``.

    Raw layout per dimension ``[..., 1]``: ``a = A tanh(raw / A)`` with
    ``A = -log(min_derivative)``, so the slope ``f'(x) = e^a / ((1 - x) + e^a x)^2`` stays in
    ``[min_d, 1 / min_d]``. ``y = e^a x / ((1 - x) + e^a x)``, which is exactly 0 and 1 at
    the ends and exactly ``x`` for ``a = 0``; the inverse is the same map with ``-a``.

    Args:
        min_derivative: lower limit of the slope, ``0 < min_d < 1``.
    """

    min_derivative: float = 1e-3

    def __post_init__(self):
        _check_min("min_derivative", self.min_derivative, 1.0, "1")

    @property
    def n_params(self) -> int:
        return 1

    def _shift(self, params: Array) -> Array:
        bound = -math.log(self.min_derivative)
        return bound * jnp.tanh(params[..., 0] / bound)

    @staticmethod
    def _apply(a, x):
        ea = jnp.exp(a)
        den = (1.0 - x) + ea * x  # >= min(1, e^a) > 0; exactly e^a at x = 1
        return _clamp_rounding(ea * x / den), a - 2.0 * jnp.log(den)

    def _forward(self, params: Array, x: Array) -> tuple[Array, Array]:
        return self._apply(self._shift(params), x)

    def _inverse(self, params: Array, y: Array) -> tuple[Array, Array]:
        return self._apply(-self._shift(params), y)


# ----------------------------------------------------------------------------------------

TRANSFORMS = ("rqs", "linear", "quadratic", "affine")


def make_transform(name: str, *, n_bins: int = 10, min_bin_width: float = 1e-3,
                   min_bin_height: float = 1e-3,
                   min_derivative: float = 1e-3) -> ElementwiseTransform:
    """Build an element-wise transform by name: ``"rqs"``, ``"linear"``, ``"quadratic"``,
    ``"affine"`` (arguments a transform does not use are ignored)."""
    if name == "rqs":
        return RationalQuadraticSpline(n_bins, min_bin_width, min_bin_height, min_derivative)
    if name == "linear":
        return PiecewiseLinear(n_bins, min_bin_height)
    if name == "quadratic":
        return PiecewiseQuadratic(n_bins, min_bin_width, min_bin_height)
    if name == "affine":
        return OddsAffine(min_derivative)
    raise ValueError(f"unknown transform {name!r}; expected one of {TRANSFORMS}")


__all__ = [
    "TRANSFORMS",
    "ElementwiseTransform",
    "OddsAffine",
    "PiecewiseLinear",
    "PiecewiseQuadratic",
    "RationalQuadraticSpline",
    "clamp_unit",
    "linear_params_from_heights",
    "make_transform",
    "rqs_params_from_knots",
]
