"""Four-vector helpers.

All functions take four-momenta ``[..., 4]`` ordered ``(E, px, py, pz)`` (GeV, metric
``(+, -, -, -)``) and broadcast over leading dimensions, so they work on one event
``[n, 4]`` or a batch ``[N, n, 4]`` alike. They are gradient-safe: square roots and logs
are guarded so that massless or collinear configurations give finite derivatives.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxnis.numerics import safe_div, safe_sqrt
from jaxnis.types import Array, ArrayLike


def minkowski_dot(p: ArrayLike, q: ArrayLike) -> Array:
    """Minkowski product ``p.q = E_p E_q - p_vec . q_vec``; shape ``[...]``."""
    p, q = jnp.asarray(p), jnp.asarray(q)
    return p[..., 0] * q[..., 0] - jnp.sum(p[..., 1:] * q[..., 1:], axis=-1)


def mass_squared(p: ArrayLike) -> Array:
    """Invariant mass squared ``p.p``; shape ``[...]`` (may be slightly negative by rounding)."""
    return minkowski_dot(p, p)


def mass(p: ArrayLike) -> Array:
    """Invariant mass ``sqrt(max(p.p, 0))``; shape ``[...]``."""
    return safe_sqrt(mass_squared(p))


def invariant_mass(*momenta: ArrayLike) -> Array:
    """Invariant mass of the sum of the given momenta, e.g. ``invariant_mass(p1, p2)``."""
    return mass(sum(jnp.asarray(p) for p in momenta))


def momentum(p: ArrayLike) -> Array:
    """Magnitude of the three-momentum ``|p_vec|``; shape ``[...]``."""
    p = jnp.asarray(p)
    return safe_sqrt(jnp.sum(p[..., 1:] ** 2, axis=-1))


def pt(p: ArrayLike) -> Array:
    """Transverse momentum ``sqrt(px^2 + py^2)`` with respect to the beam (z) axis."""
    p = jnp.asarray(p)
    return safe_sqrt(p[..., 1] ** 2 + p[..., 2] ** 2)


def azimuth(p: ArrayLike) -> Array:
    """Azimuthal angle ``phi = atan2(py, px)`` in ``(-pi, pi]``; 0 with zero gradient at pT = 0."""
    p = jnp.asarray(p)
    px, py = p[..., 1], p[..., 2]
    on_axis = (px == 0) & (py == 0)
    return jnp.where(on_axis, 0.0, jnp.arctan2(py, jnp.where(on_axis, 1.0, px)))


def rapidity(p: ArrayLike) -> Array:
    """Rapidity ``y = 1/2 log((E + pz) / (E - pz))``.

    Uses ``atanh(pz / E)``; ``|pz / E|`` is clipped just below one so that a massless
    particle exactly along the beam gives a large finite value instead of infinity.
    """
    p = jnp.asarray(p)
    ratio = safe_div(p[..., 3], p[..., 0])
    limit = 1.0 - 10.0 * jnp.finfo(ratio.dtype).eps
    return jnp.arctanh(jnp.clip(ratio, -limit, limit))


def pseudorapidity(p: ArrayLike) -> Array:
    """Pseudorapidity ``eta = atanh(pz / |p|)`` (clipped like :func:`rapidity`)."""
    p = jnp.asarray(p)
    ratio = safe_div(p[..., 3], momentum(p))
    limit = 1.0 - 10.0 * jnp.finfo(ratio.dtype).eps
    return jnp.arctanh(jnp.clip(ratio, -limit, limit))


def delta_phi(p: ArrayLike, q: ArrayLike) -> Array:
    """Azimuthal separation wrapped into ``[0, pi]``."""
    d = jnp.abs(azimuth(p) - azimuth(q))
    return jnp.where(d > jnp.pi, 2.0 * jnp.pi - d, d)


def delta_r(p: ArrayLike, q: ArrayLike) -> Array:
    """``Delta R = sqrt(Delta eta^2 + Delta phi^2)`` using pseudorapidity."""
    deta = pseudorapidity(p) - pseudorapidity(q)
    return safe_sqrt(deta**2 + delta_phi(p, q) ** 2)


def boost(p: ArrayLike, q: ArrayLike) -> Array:
    """Boost ``p``, given in the rest frame of ``q``, into the frame where ``q`` is given.

    With ``M = sqrt(q.q)``::

        E'     = (E_q E_p + q_vec . p_vec) / M
        p_vec' = p_vec + q_vec (E_p + E') / (E_q + M)

    ``q`` must be time-like. Broadcasts over leading dimensions of ``p`` and ``q``.
    """
    p, q = jnp.asarray(p), jnp.asarray(q)
    m = mass(q)[..., None]
    e_p, e_q = p[..., :1], q[..., :1]
    qp = jnp.sum(q[..., 1:] * p[..., 1:], axis=-1, keepdims=True)
    energy = (e_q * e_p + qp) / m
    vec = p[..., 1:] + q[..., 1:] * (e_p + energy) / (e_q + m)
    return jnp.concatenate([energy, vec], axis=-1)


def boost_to_rest_frame(p: ArrayLike, q: ArrayLike) -> Array:
    """Boost ``p`` into the rest frame of the time-like ``q`` (the inverse of :func:`boost`)."""
    q = jnp.asarray(q)
    return boost(p, q * jnp.array([1.0, -1.0, -1.0, -1.0], dtype=q.dtype))


def boost_z(p: ArrayLike, y: ArrayLike) -> Array:
    """Longitudinal boost of ``p`` by rapidity ``y`` along +z (e.g. partonic CM frame -> lab)."""
    p, y = jnp.asarray(p), jnp.asarray(y)
    ch, sh = jnp.cosh(y)[..., None], jnp.sinh(y)[..., None]
    e, pz = p[..., :1], p[..., 3:]
    return jnp.concatenate([ch * e + sh * pz, p[..., 1:3], sh * e + ch * pz], axis=-1)


__all__ = [
    "azimuth",
    "boost",
    "boost_to_rest_frame",
    "boost_z",
    "delta_phi",
    "delta_r",
    "invariant_mass",
    "mass",
    "mass_squared",
    "minkowski_dot",
    "momentum",
    "pseudorapidity",
    "pt",
    "rapidity",
]
