"""Closed-form total cross sections and forward-backward asymmetries (tree level, massless).

For ``f_a fbar_a -> f_b fbar_b`` through s-channel photon, Z and Z' (chiral coefficients
``G_ij(s)`` of :func:`~jaxnis.physics.parameters.coupling_matrix`), integrating the matrix
element of :mod:`jaxnis.physics.matrix_elements` over ``dOmega`` gives

.. math::

    \\sigma = C\\, \\frac{\\pi \\alpha^2 s}{3} \\sum_{ij} |G_{ij}(s)|^2, \\qquad
    A_{FB} = \\frac{3}{4}\\,
        \\frac{|G_{LL}|^2 + |G_{RR}|^2 - |G_{LR}|^2 - |G_{RL}|^2}{\\sum_{ij} |G_{ij}|^2},

``C`` the colour factor. For the photon alone ``sigma = 4 pi alpha^2 / (3 s)`` (times
``N_c Q_f^2``); with photon and Z this is the textbook

.. math::

    \\sigma = N_c \\frac{4\\pi\\alpha^2}{3s}\\left[Q_f^2 - 2 Q_f v_e v_f \\chi_1
        + (a_e^2 + v_e^2)(a_f^2 + v_f^2)\\chi_2\\right].

"Forward" means the outgoing fermion in the hemisphere of the incoming fermion. Results are
in pb (``GEV2_TO_PB``); ``sqrt_s`` in GeV, shape ``[...]``; dtype follows ``sqrt_s`` and
``params``.

Example:
    >>> from jaxnis.physics import cross_sections as xs, parameters as pp
    >>> round(float(xs.sigma_ffbar(1000.0, pp.default_params(), bosons=("photon",))), 4)
    0.0929
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxnis.physics import parameters as pp
from jaxnis.physics.matrix_elements import _check_pair, colour_factor
from jaxnis.types import Array, ArrayLike, Params


def _g2_sums(sqrt_s, params, initial, final, bosons):
    _check_pair(initial, final)
    bosons = pp.check_bosons(bosons)
    sqrt_s = jnp.asarray(sqrt_s)
    dtype = jnp.result_type(sqrt_s, params["alpha"])
    sqrt_s = sqrt_s.astype(dtype)
    params = pp.cast_params(params, dtype)
    s = sqrt_s * sqrt_s
    re, im = pp.coupling_matrix(s, params, initial, final, bosons)
    g2 = re * re + im * im
    same = g2[..., 0, 0] + g2[..., 1, 1]
    opp = g2[..., 0, 1] + g2[..., 1, 0]
    return s, params, same, opp


def sigma_ffbar(
    sqrt_s: ArrayLike,
    params: Params,
    initial: str = "e",
    final: str = "mu",
    *,
    bosons=("photon", "Z"),
) -> Array:
    """Total cross section of ``f_a fbar_a -> f_b fbar_b`` in pb (formula in module doc).

    Args:
        sqrt_s: centre-of-mass energy in GeV, shape ``[...]``.
        params: parameter pytree.
        initial, final: static flavour names (must differ).
        bosons: static subset of ``("photon", "Z", "Zp")``.

    Returns:
        ``sigma`` in pb, shape ``[...]``.
    """
    s, params, same, opp = _g2_sums(sqrt_s, params, initial, final, bosons)
    alpha = params["alpha"]
    sigma = colour_factor(initial, final) * jnp.pi * alpha * alpha * s * (same + opp) / 3.0
    return sigma * pp.GEV2_TO_PB


def afb_ffbar(
    sqrt_s: ArrayLike,
    params: Params,
    initial: str = "e",
    final: str = "mu",
    *,
    bosons=("photon", "Z"),
) -> Array:
    """Forward-backward asymmetry ``(sigma_F - sigma_B) / (sigma_F + sigma_B)``, ``[...]``."""
    _, _, same, opp = _g2_sums(sqrt_s, params, initial, final, bosons)
    return 0.75 * (same - opp) / (same + opp)


def dsigma_dcos_ffbar(
    cos_theta: ArrayLike,
    sqrt_s: ArrayLike,
    params: Params,
    initial: str = "e",
    final: str = "mu",
    *,
    bosons=("photon", "Z"),
) -> Array:
    """``d sigma / d cos theta`` in pb, ``theta`` the angle between incoming and outgoing
    fermion: ``C (pi alpha^2 s / 8) [S_same (1 + c)^2 + S_opp (1 - c)^2]``."""
    s, params, same, opp = _g2_sums(sqrt_s, params, initial, final, bosons)
    c = jnp.asarray(cos_theta, dtype=s.dtype)
    alpha = params["alpha"]
    shape = same * (1.0 + c) ** 2 + opp * (1.0 - c) ** 2
    return colour_factor(initial, final) * jnp.pi * alpha**2 * s * shape / 8.0 * pp.GEV2_TO_PB


__all__ = ["afb_ffbar", "dsigma_dcos_ffbar", "sigma_ffbar"]
