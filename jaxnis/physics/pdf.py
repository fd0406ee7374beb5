"""Parton densities: flavour bookkeeping and the Les Houches toy PDF.

All parton densities in jaxnis return **momentum densities** ``x f(x, Q^2)`` for the 13
flavour slots of LHAPDF's ordering, PDG ids

    ``(-6, -5, -4, -3, -2, -1, 21, 1, 2, 3, 4, 5, 6)``
    ``(tbar, bbar, cbar, sbar, ubar, dbar, g, d, u, s, c, b, t)``,

as an array ``[..., 13]`` (use :func:`flavour_index` to pick one). The same interface,
``xfxq2(x, q2) -> [..., 13]``, is shared by the analytic toy PDF here and by the LHAPDF grid
interpolation of :mod:`jaxnis.physics.lhapdf`, so integrands accept either.

The toy PDF is the one of the Les Houches 2001 benchmark (hep-ph/0204316), at
``Q_0 = sqrt(2)`` GeV and without evolution (scale independent):

.. math::

    x u_v &= 5.107200\\, x^{0.8} (1-x)^3, &
    x d_v &= 3.064320\\, x^{0.8} (1-x)^4,\\\\
    x g &= 1.7\\, x^{-0.1} (1-x)^5, &
    x \\bar d &= 0.1939875\\, x^{-0.1} (1-x)^6,\\\\
    x \\bar u &= (1-x)\\, x \\bar d, &
    x s &= x \\bar s = 0.2\\, (x \\bar u + x \\bar d),

``u = u_v + ubar``, ``d = d_v + dbar``, and ``c = b = t = 0``. It satisfies
``int u_v = 2``, ``int d_v = 1`` and carries momentum fraction 0.99999998.

Example:
    >>> import jax.numpy as jnp
    >>> from jaxnis.physics import pdf
    >>> xf = pdf.toy_xfx(jnp.asarray(0.1))
    >>> round(float(xf[pdf.flavour_index("u")]), 4)
    0.7069
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from jaxnis.types import Array, ArrayLike

#: PDG ids of the 13 flavour slots, LHAPDF order (gluon as 21 in the middle).
PIDS = (-6, -5, -4, -3, -2, -1, 21, 1, 2, 3, 4, 5, 6)
#: Flavour names of the slots, same order.
NAMES = ("tbar", "bbar", "cbar", "sbar", "ubar", "dbar", "g", "d", "u", "s", "c", "b", "t")
#: Starting scale of the toy PDF, GeV.
TOY_Q0 = math.sqrt(2.0)

_BY_NAME = {name: i for i, name in enumerate(NAMES)}
_BY_PID = {pid: i for i, pid in enumerate(PIDS)}
_BY_PID[0] = _BY_PID[21]  # LHAPDF accepts 0 for the gluon as well


def flavour_index(flavour: str | int) -> int:
    """Slot of a flavour in the ``[..., 13]`` arrays, from a name (``"u"``, ``"dbar"``,
    ``"g"``) or a PDG id (``2``, ``-1``, ``21`` or ``0``).

    Raises:
        ValueError: naming an unknown flavour.
    """
    table = _BY_NAME if isinstance(flavour, str) else _BY_PID
    try:
        return table[flavour]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown parton flavour {flavour!r}; expected a name in {NAMES} or a PDG id in "
            f"{PIDS} (0 also means the gluon)"
        ) from None


def _toy_components(x: ArrayLike):
    """``(inside, x u_v, x d_v, x g, x dbar, x ubar, x s)`` with guarded powers."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(float)
    inside = (x > 0) & (x < 1)
    # Evaluate on a harmless stand-in outside (0, 1): x^-0.1 at x = 0 would be inf.
    xs = jnp.where(inside, x, 0.5)
    one_m = 1.0 - xs
    log_x, log_1mx = jnp.log(xs), jnp.log(one_m)
    uv = 5.1072 * jnp.exp(0.8 * log_x + 3.0 * log_1mx)
    dv = 3.06432 * jnp.exp(0.8 * log_x + 4.0 * log_1mx)
    g = 1.7 * jnp.exp(-0.1 * log_x + 5.0 * log_1mx)
    dbar = 0.1939875 * jnp.exp(-0.1 * log_x + 6.0 * log_1mx)
    ubar = one_m * dbar
    s = 0.2 * (ubar + dbar)
    return inside, uv, dv, g, dbar, ubar, s


def toy_xfx(x: ArrayLike) -> Array:
    """Les Houches toy ``x f(x)`` for all 13 flavours, shape ``[..., 13]``.

    ``x`` outside ``(0, 1)`` gives 0 (the small-x powers are guarded so that values and
    gradients stay finite there). dtype follows ``x``.
    """
    inside, uv, dv, g, dbar, ubar, s = _toy_components(x)
    zero = jnp.zeros_like(g)
    slots = [zero, zero, zero, s, ubar, dbar, g, dv + dbar, uv + ubar, s, zero, zero, zero]
    out = jnp.stack(slots, axis=-1)
    return jnp.where(inside[..., None], out, 0.0)


def toy_xfxq2(x: ArrayLike, q2: ArrayLike) -> Array:
    """The toy PDF with the common ``xfxq2(x, q2) -> [..., 13]`` signature.

    The toy PDF has no scale dependence; ``q2`` only broadcasts against ``x``.
    """
    x = jnp.asarray(x)
    q2 = jnp.asarray(q2)
    shape = jnp.broadcast_shapes(x.shape, q2.shape)
    return toy_xfx(jnp.broadcast_to(x, shape))


def toy_xf(x: ArrayLike, flavour: str | int) -> Array:
    """Toy ``x f(x)`` of one flavour (static name or PDG id), shape of ``x``."""
    return toy_xfx(x)[..., flavour_index(flavour)]


def toy_valence(x: ArrayLike) -> tuple[Array, Array]:
    """Toy valence momentum densities ``(x u_v, x d_v)``, each of the shape of ``x``."""
    inside, uv, dv, *_ = _toy_components(x)
    return jnp.where(inside, uv, 0.0), jnp.where(inside, dv, 0.0)


__all__ = [
    "NAMES",
    "PIDS",
    "TOY_Q0",
    "flavour_index",
    "toy_valence",
    "toy_xf",
    "toy_xfx",
    "toy_xfxq2",
]
