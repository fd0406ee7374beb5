"""Two-body phase space: isotropic decays and 2 -> 2 scattering with a t-channel map.

Convention (see ``REFERENCES.md``):
``dPhi_n = (2 pi)^4 delta^4(P - sum p) prod d^3p / ((2 pi)^3 2E)``.
For two bodies, in the rest frame of ``P`` (mass ``M``) with ``|p*| = sqrt(lambda(M^2, m1^2,
m2^2)) / (2 M)``::

    dPhi_2 = |p*| / (16 pi^2 M) dcos(theta) dphi,        Phi_2 = |p*| / (4 pi M)

and, for incoming ``pa, pb`` with ``t = (pa - p1)^2``, ``dt = 2 |pa*| |p1*| dcos(theta)``::

    dPhi_2 = dt dphi / (16 pi^2 sqrt(lambda(s, ma^2, mb^2))).

Every map returns the log of the phase-space density per unit volume of ``r``, so the Monte
Carlo mean of ``exp(log_weight)`` over uniform ``r`` is the phase-space volume.

Example::

    decay = TwoBodyDecay()
    cond = {"sqrt_s": 1000.0, "masses": jnp.array([173.0, 173.0])}
    p, log_w = decay.forward(jnp.array([0.2, 0.7]), cond)  # p: [2, 4] in the CM frame
    # exp(log_w) == Phi_2 = 0.0373311651 for every r
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from jaxnis import kinematics as kin
from jaxnis.numerics import kallen, safe_div, safe_log, safe_sqrt
from jaxnis.phasespace.propagators import PowerLawMap, check_r
from jaxnis.types import Array, ArrayLike, Cond

_LOG_4PI = math.log(4.0 * math.pi)
_LOG_2PI = math.log(2.0 * math.pi)
_LOG_16PI2 = math.log(16.0 * math.pi**2)


def _unit_time(dtype) -> Array:
    return jnp.array([1.0, 0.0, 0.0, 0.0], dtype=dtype)


def _safe_parent(p: Array) -> tuple[Array, Array, Array]:
    """``(ok, P_safe, M)``: a time-like ``P`` (E > 0, P^2 > 0) or a stand-in at rest."""
    m2 = kin.mass_squared(p)
    ok = (m2 > 0) & (p[..., 0] > 0)
    p_safe = jnp.where(ok[..., None], p, _unit_time(p.dtype))
    return ok, p_safe, jnp.sqrt(jnp.where(ok, m2, 1.0))


def _boost(p: Array, q: Array, m: Array) -> Array:
    """Boost ``p`` from the rest frame of ``q`` (mass ``m`` given) to the frame of ``q``.

    The formula of :func:`jaxnis.kinematics.boost` with ``M`` passed in: it maps ``(M, 0)`` to
    ``q`` exactly, so daughters whose rest-frame energies sum to ``M`` sum to ``q`` even when
    ``m`` and ``sqrt(q.q)`` differ by rounding.
    """
    e_p = p[..., :1]
    energy = (q[0] * e_p + jnp.sum(q[1:] * p[..., 1:], axis=-1, keepdims=True)) / m
    return jnp.concatenate([energy, p[..., 1:] + q[1:] * (e_p + energy) / (q[0] + m)], axis=-1)


def _cm_momentum(m: Array, m1: Array, m2: Array) -> tuple[Array, Array]:
    """``(ok, |p*|)`` for ``M -> m1 m2``; ``|p*| = 0`` (finite, zero gradient) when closed."""
    ok = (m1 >= 0) & (m2 >= 0) & (m > m1 + m2)
    lam = kallen(m * m, m1 * m1, m2 * m2)
    return ok, safe_sqrt(jnp.where(ok, lam, 0.0)) / (2.0 * m)


def _cm_energies(m: Array, m1: Array, m2: Array) -> tuple[Array, Array]:
    m_sq, a, b = m * m, m1 * m1, m2 * m2
    return (m_sq + a - b) / (2.0 * m), (m_sq - a + b) / (2.0 * m)


def _direction(cos_t: Array, sin_t: Array, phi: Array) -> Array:
    return jnp.stack([sin_t * jnp.cos(phi), sin_t * jnp.sin(phi), cos_t], axis=-1)


def _pair(e1: Array, e2: Array, k: Array) -> Array:
    """Back-to-back momenta ``[2, 4]``: ``(e1, k)`` and ``(e2, -k)``."""
    return jnp.stack([jnp.concatenate([e1[None], k]), jnp.concatenate([e2[None], -k])])


def two_body_decay(r: ArrayLike, parent: ArrayLike, m1: ArrayLike, m2: ArrayLike,
                   parent_mass: ArrayLike | None = None) -> tuple[Array, Array]:
    """Isotropic decay ``P -> p1 p2`` from two random numbers.

    In the rest frame of ``P`` (reached by a rotation-free boost), ``cos(theta) = 2 r[0] - 1``
    and ``phi = pi (2 r[1] - 1)`` give the direction of ``p1`` with respect to fixed x, y, z
    axes; the pair is then boosted back to the frame in which ``parent`` is given.

    Args:
        r: ``[2]`` in ``[0, 1]``.
        parent: ``[4]`` time-like four-momentum ``P`` (any frame).
        m1, m2: daughter masses ``[]``.
        parent_mass: ``M`` when it is known more precisely than ``sqrt(P.P)`` (e.g. a sampled
            invariant mass: in float32, ``E^2 - |p|^2`` of a fast parent loses ~eps E^2/M^2,
            which matters near threshold); default ``sqrt(P.P)``.

    Returns:
        ``(momenta [2, 4], log_weight [])`` with ``exp(log_weight) = Phi_2 = |p*| / (4 pi M)``.
        Below threshold (``M <= m1 + m2``), for negative masses or a non-time-like ``P``, the
        log weight is ``-inf`` and the momenta are finite.
    """
    r = jnp.asarray(r)
    ok_p, p_safe, m = _safe_parent(jnp.asarray(parent))
    if parent_mass is not None:
        parent_mass = jnp.asarray(parent_mass)
        ok_p = ok_p & (parent_mass > 0)
        p_safe = jnp.where(ok_p, p_safe, _unit_time(p_safe.dtype))
        m = jnp.where(ok_p, parent_mass, 1.0)
    m1, m2 = jnp.asarray(m1), jnp.asarray(m2)
    ok_k, k = _cm_momentum(m, m1, m2)
    e1, e2 = _cm_energies(m, m1, m2)
    cos_t = 2.0 * r[0] - 1.0
    sin_t = 2.0 * safe_sqrt(r[0] * (1.0 - r[0]))  # sqrt((1 - c)(1 + c)), no cancellation
    phi = jnp.pi * (2.0 * r[1] - 1.0)
    rest = _pair(e1, e2, k * _direction(cos_t, sin_t, phi))
    log_w = jnp.where(ok_p & ok_k, safe_log(k) - jnp.log(m) - _LOG_4PI, -jnp.inf)
    return _boost(rest, p_safe, m), log_w


def two_body_decay_inverse(momenta: ArrayLike, m1: ArrayLike,
                           m2: ArrayLike) -> tuple[Array, Array]:
    """Inverse of :func:`two_body_decay` from ``momenta [2, 4] = (p1, p2)``; ``P = p1 + p2``.

    Returns ``(r [2], log_weight [])`` with ``log_weight = -log Phi_2`` (``-inf`` where the
    forward weight is ``-inf``).
    """
    momenta = jnp.asarray(momenta)
    ok_p, p_safe, m = _safe_parent(momenta[0] + momenta[1])
    ok_k, k = _cm_momentum(m, jnp.asarray(m1), jnp.asarray(m2))
    q = kin.boost_to_rest_frame(momenta[0], p_safe)
    cos_t = safe_div(q[3], kin.momentum(q))
    r = jnp.stack([(1.0 + cos_t) / 2.0, (kin.azimuth(q) / jnp.pi + 1.0) / 2.0])
    log_w = jnp.where(ok_p & ok_k, jnp.log(m) + _LOG_4PI - safe_log(k), -jnp.inf)
    return r, log_w


def _masses(cond: Cond, n: int, owner: str) -> Array:
    if "masses" not in cond:
        raise ValueError(f"{owner} needs cond['masses'] of shape ({n},); got keys {sorted(cond)}")
    masses = jnp.asarray(cond["masses"])
    if masses.shape != (n,):
        raise ValueError(f"{owner}: cond['masses'] must have shape ({n},), got {masses.shape}")
    return masses


def parent_momentum(cond: Cond, owner: str) -> Array:
    """The decaying four-momentum: ``cond["parent"]`` ``[4]``, else ``(sqrt_s, 0, 0, 0)``."""
    if "parent" in cond:
        parent = jnp.asarray(cond["parent"])
        if parent.shape != (4,):
            raise ValueError(f"{owner}: cond['parent'] must have shape (4,), got {parent.shape}")
        return parent
    if "sqrt_s" not in cond:
        raise ValueError(f"{owner} needs cond['parent'] or cond['sqrt_s']; got {sorted(cond)}")
    sqrt_s = jnp.asarray(cond["sqrt_s"])
    return jnp.stack([sqrt_s, *([jnp.zeros_like(sqrt_s)] * 3)])


@dataclasses.dataclass(frozen=True)
class TwoBodyDecay:
    """Two-body decay ``P -> p1 p2`` as a phase-space map with ``n_random = 2``.

    ``cond`` keys: ``"masses"`` ``[2]`` (daughter masses) and either ``"parent"`` ``[4]`` (the
    decaying momentum, any frame) or ``"sqrt_s"`` ``[]`` (parent at rest). ``forward`` returns
    momenta ``[2, 4]`` in the frame of ``P`` and ``log Phi_2`` (constant in ``r``); ``inverse``
    reads ``P = p1 + p2`` from the momenta. See :func:`two_body_decay`.
    """

    n_random = 2

    def forward(self, r: ArrayLike, cond: Cond) -> tuple[Array, Array]:
        """``r [2] -> (momenta [2, 4], log_weight [])``."""
        r = check_r(r, 2, "TwoBodyDecay")
        masses = _masses(cond, 2, "TwoBodyDecay")
        return two_body_decay(r, parent_momentum(cond, "TwoBodyDecay"), masses[0], masses[1])

    def inverse(self, momenta: ArrayLike, cond: Cond) -> tuple[Array, Array]:
        """``momenta [2, 4] -> (r [2], -log_weight)``."""
        momenta = _check_momenta(momenta, 2, "TwoBodyDecay")
        masses = _masses(cond, 2, "TwoBodyDecay")
        return two_body_decay_inverse(momenta, masses[0], masses[1])


def _check_momenta(momenta: ArrayLike, n: int, owner: str) -> Array:
    momenta = jnp.asarray(momenta)
    if momenta.shape != (n, 4):
        raise ValueError(f"{owner} takes momenta of shape ({n}, 4), got {momenta.shape}")
    return momenta


def _rotation_to(n: Array) -> tuple[Array, Array, Array, Array]:
    """``(cos theta, sin theta, cos phi, sin phi)`` of the direction ``n`` ``[3]``.

    ``R = R_z(phi) R_y(theta)`` maps the z axis onto ``n``; along the z axis ``phi = 0``.
    """
    norm = safe_sqrt(jnp.sum(n * n))
    rho = safe_sqrt(n[0] ** 2 + n[1] ** 2)
    on_axis = rho == 0
    cos_t = safe_div(n[2], norm)
    sin_t = safe_div(rho, norm)
    cos_p = jnp.where(on_axis, 1.0, safe_div(n[0], rho))
    sin_p = jnp.where(on_axis, 0.0, safe_div(n[1], rho))
    return cos_t, sin_t, cos_p, sin_p


def _rotate(v: Array, rot, inverse: bool = False) -> Array:
    cos_t, sin_t, cos_p, sin_p = rot
    x, y, z = v[0], v[1], v[2]
    if inverse:  # R_y(-theta) R_z(-phi)
        x, y = cos_p * x + sin_p * y, -sin_p * x + cos_p * y
        return jnp.stack([cos_t * x - sin_t * z, y, sin_t * x + cos_t * z])
    x, z = cos_t * x + sin_t * z, -sin_t * x + cos_t * z  # R_y(theta)
    return jnp.stack([cos_p * x - sin_p * y, sin_p * x + cos_p * y, z])


def beams(sqrt_s: ArrayLike) -> Array:
    """Massless incoming momenta ``[2, 4]`` along ``+z`` and ``-z`` in their CM frame."""
    half = jnp.asarray(sqrt_s) / 2.0
    zero = jnp.zeros_like(half)
    return jnp.stack([jnp.stack([half, zero, zero, half]), jnp.stack([half, zero, zero, -half])])


@dataclasses.dataclass(frozen=True)
class TChannelMap:
    """2 -> 2 scattering ``pa pb -> p1 p2`` with ``-t = -(pa - p1)^2`` drawn by a propagator map.

    ``r[0]`` gives ``u = -t`` in ``[u_min, u_max]`` through ``t_map`` (default
    :class:`PowerLawMap`, density ``1 / |t|^nu``); ``r[1]`` gives the azimuth
    ``phi = pi (2 r[1] - 1)`` of ``p1`` around the direction of ``pa`` in the CM frame. With
    ``E, |p|`` the CM energies and momenta::

        u_min,max = 2 (Ea E1 -+ |pa| |p1|) - ma^2 - m1^2,
        Ea E1 - |pa| |p1| = (ma^2 |p1|^2 + m1^2 |pa|^2 + ma^2 m1^2) / (Ea E1 + |pa| |p1|),

    (the second form keeps ``u_min`` exact when masses vanish) and the weight is
    ``(du/dr) 2 pi / (16 pi^2 sqrt(lambda(s, ma^2, mb^2)))``.

    ``cond`` keys: ``"masses"`` ``[2]`` (outgoing); ``"incoming"`` ``[2, 4]`` (``pa, pb`` in any
    frame; outputs are in that frame), or else ``"sqrt_s"`` (massless beams along ``+-z`` in the
    CM frame); and the keys of ``t_map`` (``"nu"`` for the default). A power law with
    ``nu >= 1`` needs ``u_min > 0`` (a massive final state); otherwise the log weight is
    ``-inf``. Below threshold the log weight is ``-inf`` and the momenta are finite.
    """

    t_map: object = dataclasses.field(default_factory=PowerLawMap)
    n_random = 2

    def __post_init__(self):
        if getattr(self.t_map, "n_random", None) != 1 or not hasattr(self.t_map, "transform"):
            raise ValueError(
                f"t_map must be a propagator map with n_random = 1, got {self.t_map!r}")

    def _incoming(self, cond: Cond) -> Array:
        if "incoming" in cond:
            return _check_momenta(cond["incoming"], 2, "TChannelMap: cond['incoming']")
        if "sqrt_s" not in cond:
            raise ValueError(f"TChannelMap needs cond['incoming'] or cond['sqrt_s']; "
                             f"got {sorted(cond)}")
        return beams(cond["sqrt_s"])

    @staticmethod
    def _kinematics(pa: Array, pb: Array, m1: Array, m2: Array):
        ok_p, p_safe, w = _safe_parent(pa + pb)
        ma2, mb2 = kin.mass_squared(pa), kin.mass_squared(pb)
        s = w * w
        lam_ab = kallen(s, ma2, mb2)
        ok_in = lam_ab > 0
        lam_ab = jnp.where(ok_in, lam_ab, 1.0)
        ok_k, k1 = _cm_momentum(w, m1, m2)
        ka = jnp.sqrt(lam_ab) / (2.0 * w)
        ea = (s + ma2 - mb2) / (2.0 * w)
        e1, e2 = _cm_energies(w, m1, m2)
        m1s = m1 * m1
        lower = 2.0 * (ma2 * k1 * k1 + m1s * ka * ka + ma2 * m1s) / (ea * e1 + ka * k1)
        u_min = lower - ma2 - m1s
        u_max = 2.0 * (ea * e1 + ka * k1) - ma2 - m1s
        log_norm = _LOG_2PI - _LOG_16PI2 - 0.5 * jnp.log(lam_ab)
        ok = ok_p & ok_in & ok_k
        return ok, p_safe, w, k1, ka, e1, e2, u_min, u_max, log_norm

    def forward(self, r: ArrayLike, cond: Cond) -> tuple[Array, Array]:
        """``r [2] -> (momenta [2, 4], log_weight [])`` in the frame of ``cond['incoming']``."""
        r = check_r(r, 2, "TChannelMap")
        pa, pb = self._incoming(cond)
        return self.forward_incoming(r, pa, pb, cond)

    def inverse(self, momenta: ArrayLike, cond: Cond) -> tuple[Array, Array]:
        """``momenta [2, 4] -> (r [2], -log_weight)``."""
        momenta = _check_momenta(momenta, 2, "TChannelMap")
        pa, pb = self._incoming(cond)
        return self.inverse_incoming(momenta, pa, pb, cond)

    def forward_incoming(self, r: Array, pa: ArrayLike, pb: ArrayLike,
                         cond: Cond) -> tuple[Array, Array]:
        """As :meth:`forward` with the incoming momenta given explicitly."""
        pa, pb = jnp.asarray(pa), jnp.asarray(pb)
        masses = _masses(cond, 2, "TChannelMap")
        ok, p_safe, w, k1, ka, e1, e2, u_min, u_max, log_norm = self._kinematics(
            pa, pb, masses[0], masses[1])
        u, log_du = self.t_map.transform(r[0], u_min, u_max, cond)
        # 1 -+ cos(theta) from the distances to the ends: no cancellation near the poles.
        span = 2.0 * ka * k1
        one_minus = jnp.clip(safe_div(u - u_min, span), 0.0, 2.0)
        one_plus = jnp.clip(safe_div(u_max - u, span), 0.0, 2.0)
        cos_t = (one_plus - one_minus) / 2.0
        sin_t = safe_sqrt(one_minus * one_plus)
        phi = jnp.pi * (2.0 * r[1] - 1.0)
        axis = _rotation_to(kin.boost_to_rest_frame(pa, p_safe)[1:])
        k = _rotate(k1 * _direction(cos_t, sin_t, phi), axis)
        momenta = _boost(_pair(e1, e2, k), p_safe, w)
        return momenta, jnp.where(ok, log_du + log_norm, -jnp.inf)

    def inverse_incoming(self, momenta: Array, pa: ArrayLike, pb: ArrayLike,
                         cond: Cond) -> tuple[Array, Array]:
        """As :meth:`inverse` with the incoming momenta given explicitly."""
        pa, pb = jnp.asarray(pa), jnp.asarray(pb)
        masses = _masses(cond, 2, "TChannelMap")
        ok, p_safe, _, k1, ka, e1, e2, u_min, u_max, log_norm = self._kinematics(
            pa, pb, masses[0], masses[1])
        axis = _rotation_to(kin.boost_to_rest_frame(pa, p_safe)[1:])
        v = _rotate(kin.boost_to_rest_frame(momenta[0], p_safe)[1:], axis, inverse=True)
        norm = safe_sqrt(jnp.sum(v * v))
        rho2 = v[0] ** 2 + v[1] ** 2
        # 1 - cos(theta) = rho^2 / (|v| (|v| + v_z)) avoids cancellation in the forward cone.
        one_minus = jnp.where(v[2] > 0, safe_div(rho2, norm * (norm + v[2])),
                              safe_div(norm - v[2], norm))
        u = u_min + 2.0 * ka * k1 * one_minus
        r0, log_du = self.t_map.inverse_transform(u, u_min, u_max, cond)
        r = jnp.stack([r0, (kin.azimuth(jnp.concatenate([norm[None], v])) / jnp.pi + 1.0) / 2.0])
        return r, jnp.where(ok, log_du - log_norm, -jnp.inf)


__all__ = [
    "TChannelMap",
    "TwoBodyDecay",
    "beams",
    "parent_momentum",
    "two_body_decay",
    "two_body_decay_inverse",
]
