"""s-channel propagator maps: one random number to an invariant mass squared.

Each map sends ``r`` in ``[0, 1]`` to an invariant ``s`` in ``[s_min, s_max]`` whose density
follows a propagator shape, and returns ``log(ds/dr)``. Used alone (``forward``/``inverse``
read the range from ``cond``) or inside chained maps, which call ``transform`` /
``inverse_transform`` with ranges computed from the kinematics (decay trees, the
luminosity map, the t-channel map).

Maps (all with ``n_random == 1``):

* :class:`UniformMap` -- ``s`` flat in ``[s_min, s_max]``.
* :class:`BreitWignerMap` -- density ``proportional to 1 / ((s - m^2)^2 + m^2 Gamma^2)``:
  ``s = m Gamma tan(y1 + (y2 - y1) r) + m^2`` with ``y_i = arctan((s_i - m^2) / (m Gamma))``
  and ``ds/dr = (y2 - y1) ((s - m^2)^2 + m^2 Gamma^2) / (m Gamma)`` (the standard resonance
  mapping, e.g. MadEvent, hep-ph/0208156; MadNIS, arXiv:2212.06172).
* :class:`PowerLawMap` -- density ``proportional to s^-nu`` (massless propagators; ``nu = 1``
  is the logarithmic map ``s = s_min (s_max / s_min)^r``).

The exponent ``nu`` of :class:`PowerLawMap` is **traced** (read from ``cond``), not static:
channels that differ only by their exponent can then be stacked and ``vmap``-ed, and the
exponent can be tuned by gradient descent like any other parameter. The price is that the
``nu -> 1`` limit must be handled inside traced code; see :class:`PowerLawMap`.

Example::

    bw = BreitWignerMap()
    cond = {"s_min": 0.0, "s_max": 1e6, "mass": 91.188, "width": 2.441404}
    s, log_jac = bw.forward(jnp.array([0.3]), cond)
    r, log_jac_inv = bw.inverse(s, cond)  # r == [0.3], log_jac_inv == -log_jac
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jaxnis.numerics import safe_log
from jaxnis.types import Array, ArrayLike, Cond


def check_key(name: str, key: object) -> None:
    """Raise ``ValueError`` unless ``key`` (a ``cond`` key given as ``name``) is a non-empty str."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"{name} must be a non-empty string key of cond, got {key!r}")


def check_r(r: ArrayLike, n: int, owner: str) -> Array:
    """Return ``r`` as an array after checking its static shape is ``[n]``."""
    r = jnp.asarray(r)
    if r.shape != (n,):
        raise ValueError(f"{owner} takes r of shape ({n},), got shape {r.shape}")
    return r


def _require(cond: Cond, key: str, owner: str) -> Array:
    if key not in cond:
        raise ValueError(f"{owner} needs cond[{key!r}]; got keys {sorted(cond)}")
    return jnp.asarray(cond[key])


class _Propagator:
    """Shared ``forward``/``inverse`` wrappers around ``transform``/``inverse_transform``."""

    n_random = 1

    def transform(self, r: ArrayLike, s_min: ArrayLike, s_max: ArrayLike,
                  cond: Cond) -> tuple[Array, Array]:  # pragma: no cover - interface
        raise NotImplementedError

    def inverse_transform(self, s: ArrayLike, s_min: ArrayLike, s_max: ArrayLike,
                          cond: Cond) -> tuple[Array, Array]:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, r: ArrayLike, cond: Cond) -> tuple[Array, Array]:
        """Map ``r`` ``[1]`` to ``(s [], log ds/dr [])`` with the range from ``cond``.

        Reads ``cond["s_min"]``, ``cond["s_max"]`` and the keys of the particular map.
        """
        name = type(self).__name__
        r = check_r(r, 1, name)
        return self.transform(r[0], _require(cond, "s_min", name),
                              _require(cond, "s_max", name), cond)

    def inverse(self, s: ArrayLike, cond: Cond) -> tuple[Array, Array]:
        """Map ``s`` ``[]`` back to ``(r [1], -log ds/dr [])``."""
        name = type(self).__name__
        r, log_w = self.inverse_transform(s, _require(cond, "s_min", name),
                                          _require(cond, "s_max", name), cond)
        return r[None], log_w


def _range_ok(s_min: Array, s_max: Array) -> Array:
    return jnp.isfinite(s_min) & (s_max > s_min)


@dataclasses.dataclass(frozen=True)
class UniformMap(_Propagator):
    """``s = s_min + (s_max - s_min) r``, ``log ds/dr = log(s_max - s_min)``.

    Reads no ``cond`` keys besides the range. An empty or infinite range gives log weight
    ``-inf`` and a finite ``s``.
    """

    def transform(self, r, s_min, s_max, cond):
        """``(s, log ds/dr)`` for scalar ``r``; range given explicitly (``cond`` unused)."""
        r, s_min, s_max = jnp.asarray(r), jnp.asarray(s_min), jnp.asarray(s_max)
        ok = _range_ok(s_min, s_max) & jnp.isfinite(s_max)
        lo = jnp.where(ok, s_min, 0.0)
        span = jnp.where(ok, s_max - s_min, 1.0)
        return lo + span * r, jnp.where(ok, jnp.log(span), -jnp.inf)

    def inverse_transform(self, s, s_min, s_max, cond):
        """``(r, -log ds/dr)`` for scalar ``s``."""
        s, s_min, s_max = jnp.asarray(s), jnp.asarray(s_min), jnp.asarray(s_max)
        ok = _range_ok(s_min, s_max) & jnp.isfinite(s_max) & jnp.isfinite(s)
        lo = jnp.where(ok, s_min, 0.0)
        span = jnp.where(ok, s_max - s_min, 1.0)
        return (jnp.where(ok, s, 0.0) - lo) / span, jnp.where(ok, -jnp.log(span), -jnp.inf)


@dataclasses.dataclass(frozen=True)
class BreitWignerMap(_Propagator):
    """Breit-Wigner map for a resonance of mass ``m`` and width ``Gamma``.

    ``s = m^2 + m Gamma tan(theta)``, ``theta = y1 + (y2 - y1) r``,
    ``y_i = arctan((s_i - m^2) / (m Gamma))``, so ``ds/dr = (y2 - y1) m Gamma / cos^2(theta)``
    and ``ds/dr * m Gamma / ((s - m^2)^2 + m^2 Gamma^2) = y2 - y1`` is constant.
    ``s_max = inf`` is allowed (``y2 = pi / 2``).

    Reads ``cond[mass_key]`` and ``cond[width_key]`` (defaults ``"mass"``, ``"width"``), so a
    chain with several resonances gives each its own keys. ``m <= 0``, ``Gamma <= 0`` or an
    empty range give log weight ``-inf`` and a finite ``s``.
    """

    mass_key: str = "mass"
    width_key: str = "width"

    def __post_init__(self):
        check_key("mass_key", self.mass_key)
        check_key("width_key", self.width_key)

    def _params(self, s_min, s_max, cond):
        name = type(self).__name__
        m = _require(cond, self.mass_key, name)
        g = _require(cond, self.width_key, name)
        s_min, s_max = jnp.asarray(s_min), jnp.asarray(s_max)
        ok = (m > 0) & (g > 0) & _range_ok(s_min, s_max) & ~jnp.isnan(s_max)
        # Replace invalid parameters by harmless ones so values and gradients stay finite.
        m = jnp.where(ok, m, 1.0)
        g = jnp.where(ok, g, 1.0)
        s_min = jnp.where(ok, s_min, 0.0)
        s_max = jnp.where(ok, s_max, 2.0)
        m2, mg = m * m, m * g
        y1 = jnp.arctan((s_min - m2) / mg)
        y2 = jnp.arctan((s_max - m2) / mg)
        return ok, m2, mg, y1, y2

    def transform(self, r, s_min, s_max, cond):
        """``(s, log ds/dr)`` for scalar ``r``; reads mass and width from ``cond``."""
        ok, m2, mg, y1, y2 = self._params(s_min, s_max, cond)
        theta = y1 + (y2 - y1) * jnp.asarray(r)
        s = m2 + mg * jnp.tan(theta)
        # ds/dr = (y2 - y1) m Gamma / cos^2(theta); cos(theta) > 0 on (-pi/2, pi/2].
        log_jac = jnp.log(y2 - y1) + jnp.log(mg) - 2.0 * safe_log(jnp.cos(theta))
        return s, jnp.where(ok, log_jac, -jnp.inf)

    def inverse_transform(self, s, s_min, s_max, cond):
        """``(r, -log ds/dr)`` for scalar ``s``."""
        ok, m2, mg, y1, y2 = self._params(s_min, s_max, cond)
        s = jnp.asarray(s)
        theta = jnp.arctan((s - m2) / mg)
        r = (theta - y1) / (y2 - y1)
        log_jac = jnp.log(y2 - y1) + jnp.log(mg) - 2.0 * safe_log(jnp.cos(theta))
        return r, jnp.where(ok, -log_jac, -jnp.inf)


# Series of the Bernoulli cumulant generating function, used by PowerLawMap near nu = 1.
# log1p(x expm1(-y)) / y = -k1 + k2 y/2 - k3 y^2/6 + k4 y^3/24 - k5 y^4/120 + O(y^5), with the
# cumulants k1 = x, k2 = v = x(1-x), k3 = v(1-2x), k4 = v(1-6v), k5 = v(1-2x)(1-12v).
def _log1p_x_expm1_series(x: Array, y: Array) -> Array:
    v = x * (1.0 - x)
    w = 1.0 - 2.0 * x
    return (-x + y * (v / 2.0 + y * (-v * w / 6.0
            + y * (v * (1.0 - 6.0 * v) / 24.0 - y * v * w * (1.0 - 12.0 * v) / 120.0))))


# log((1 - exp(-y)) / y) = -y/2 + y^2/24 - y^4/2880 + O(y^6).
def _log_e_series(y: Array) -> Array:
    y2 = y * y
    return -y / 2.0 + y2 / 24.0 - y2 * y2 / 2880.0


@dataclasses.dataclass(frozen=True)
class PowerLawMap(_Propagator):
    """Power-law map, density ``proportional to s^-nu`` on ``[s_min, s_max]``.

    With ``a = 1 - nu``: ``s^a = s_min^a + r (s_max^a - s_min^a)`` and
    ``ds/dr = s^nu (s_max^a - s_min^a) / a``; ``nu = 1`` gives ``s = s_min (s_max/s_min)^r``.
    ``nu = 0`` is the uniform map, ``nu < 0`` is allowed (rising density).

    Reads ``cond[nu_key]`` (default ``"nu"``): the exponent is traced, so it can be
    differentiated and vmapped over channels. Valid inputs: ``0 <= s_min < s_max < inf`` and,
    when ``s_min == 0``, ``nu < 1`` (otherwise the density is not integrable); anything else
    gives log weight ``-inf`` and a finite ``s``.

    Numerics: the map is written as ``log s = log s_anchor + log1p(x expm1(-y)) / a`` with
    ``y = |a| log(s_max / s_min) >= 0``, anchored at ``s_max`` (``x = 1 - r``) for ``a >= 0`` and
    at ``s_min`` (``x = r``) for ``a < 0``. ``expm1``/``log1p`` then never overflow and keep full
    relative precision for any ``a != 0``, and ``s_min = 0`` works for ``a > 0``. For
    ``y < eps^(1/5)`` the removable ``0/0`` at ``nu = 1`` is replaced by its Taylor series to
    ``O(y^5)``: the truncation error (``~eps / 720``) and the cancellation error that autodiff
    of the direct form would have in ``d/dnu`` (``~eps / y``) are then both below ``1e-12``
    (float64) and ``1e-6`` (float32).
    """

    nu_key: str = "nu"

    def __post_init__(self):
        check_key("nu_key", self.nu_key)

    def _params(self, s_min, s_max, cond):
        nu = _require(cond, self.nu_key, type(self).__name__)
        s_min, s_max = jnp.asarray(s_min), jnp.asarray(s_max)
        a = 1.0 - nu
        ok = ((s_min >= 0) & (s_max > s_min) & jnp.isfinite(s_max) & jnp.isfinite(nu)
              & ((s_min > 0) | (a > 0)))
        # Harmless stand-ins where invalid, so nothing below produces NaN (values or grads).
        nu = jnp.where(ok, nu, 1.0)
        a = 1.0 - nu
        s_min = jnp.where(ok, s_min, 1.0)
        s_max = jnp.where(ok, s_max, 2.0)
        log_min, log_max = safe_log(s_min), jnp.log(s_max)  # log_min = -inf when s_min = 0
        big_l = log_max - log_min
        abs_a = jnp.abs(a)
        rising = a >= 0  # anchor at s_max (else at s_min)
        threshold = float(jnp.finfo(jnp.result_type(nu, s_min, s_max, float)).eps) ** 0.2
        small = abs_a * jnp.where(jnp.isfinite(big_l), big_l, 1.0) < threshold
        small = small & jnp.isfinite(big_l)
        log_anchor = jnp.where(rising, log_max, log_min)
        # Double-where: each branch only sees inputs where it is the selected one.
        l_ser = jnp.where(small, big_l, 1.0)
        y_ser = jnp.where(small, abs_a * l_ser, 0.0)
        a_dir = jnp.where(small, 1.0, a)
        y_dir = jnp.where(small, 1.0, jnp.abs(a_dir) * big_l)
        # log((s_max^a - s_min^a) / a) - a log s_anchor = log(-expm1(-y) / |a|).
        log_c = jnp.where(small, jnp.log(l_ser) + _log_e_series(y_ser),
                          jnp.log(-jnp.expm1(-y_dir)) - jnp.log(jnp.abs(a_dir)))
        return ok, nu, rising, small, log_anchor, l_ser, y_ser, a_dir, y_dir, log_c

    def transform(self, r, s_min, s_max, cond):
        """``(s, log ds/dr)`` for scalar ``r``; reads the exponent from ``cond[nu_key]``."""
        ok, nu, rising, small, log_anchor, l_ser, y_ser, a_dir, y_dir, log_c = self._params(
            s_min, s_max, cond)
        r = jnp.asarray(r)
        x = jnp.where(rising, 1.0 - r, r)
        sign = jnp.where(rising, 1.0, -1.0)
        # q = log(s / s_anchor) = log1p(x expm1(-y)) / a  (<= 0 when rising, >= 0 otherwise).
        # The log1p argument reaches -1 only for s_min = 0 at r = 0 (s = 0): guard it so the
        # gradient there is finite rather than 0 * inf.
        arg = x * jnp.expm1(-y_dir)
        at_zero = arg <= -1.0
        q_dir = jnp.where(at_zero, -jnp.inf, jnp.log1p(jnp.where(at_zero, 0.0, arg)) / a_dir)
        q = jnp.where(small, sign * l_ser * _log1p_x_expm1_series(x, y_ser), q_dir)
        s = jnp.exp(log_anchor + q)
        # log ds/dr = log s_anchor + nu q + log_c; q = -inf only at s = 0 (s_min = 0, r = 0),
        # where ds/dr = 0 for nu > 0 and s_max for nu = 0 (avoid 0 * inf).
        finite_q = q > -jnp.inf
        nu_q = jnp.where(finite_q, nu * jnp.where(finite_q, q, 0.0),
                         jnp.where(nu > 0, -jnp.inf, 0.0))
        return s, jnp.where(ok, log_anchor + nu_q + log_c, -jnp.inf)

    def inverse_transform(self, s, s_min, s_max, cond):
        """``(r, -log ds/dr)`` for scalar ``s``."""
        ok, nu, rising, small, log_anchor, l_ser, y_ser, a_dir, y_dir, log_c = self._params(
            s_min, s_max, cond)
        q = safe_log(jnp.asarray(s)) - log_anchor
        finite_q = q > -jnp.inf
        q_fin = jnp.where(finite_q, q, 0.0)
        abs_q = jnp.abs(q_fin)
        # x = expm1(a q) / expm1(-y); a q = -|a| |q| <= 0 on both anchors.
        z_ser = jnp.where(small, y_ser * abs_q / l_ser, 0.0)
        x_ser = abs_q / l_ser * jnp.exp(_log_e_series(z_ser) - _log_e_series(y_ser))
        x_dir = jnp.expm1(a_dir * jnp.where(finite_q, q, -jnp.inf)) / jnp.expm1(-y_dir)
        x = jnp.where(small, x_ser, x_dir)
        r = jnp.where(rising, 1.0 - x, x)
        nu_q = jnp.where(finite_q, nu * q_fin, jnp.where(nu > 0, -jnp.inf, 0.0))
        return r, jnp.where(ok, -(log_anchor + nu_q + log_c), -jnp.inf)


__all__ = ["BreitWignerMap", "PowerLawMap", "UniformMap"]
