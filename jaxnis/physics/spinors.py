"""Two-component (Weyl) spinor algebra for massless fermions.

Used to evaluate helicity amplitudes of processes whose squared matrix element has no short
closed form (``e+ e- -> mu+ mu- gamma`` with photon, Z and Z' and both initial- and
final-state radiation). Conventions (chiral basis, metric ``(+, -, -, -)``):

.. math::

    \\gamma^\\mu = \\begin{pmatrix} 0 & \\sigma^\\mu \\\\ \\bar\\sigma^\\mu & 0 \\end{pmatrix},
    \\quad \\sigma^\\mu = (1, \\vec\\sigma),\\ \\bar\\sigma^\\mu = (1, -\\vec\\sigma),\\quad
    \\not p = \\begin{pmatrix} 0 & p\\cdot\\sigma \\\\ p\\cdot\\bar\\sigma & 0 \\end{pmatrix},

with ``p.sigma = E - p_vec.sigma_vec`` and ``p.sigmabar = E + p_vec.sigma_vec``. A massless
Dirac spinor of chirality L is ``(lambda_L, 0)``, of chirality R ``(0, lambda_R)``, with

.. math::

    \\lambda_L \\lambda_L^\\dagger = p\\cdot\\sigma,\\qquad
    \\lambda_R \\lambda_R^\\dagger = p\\cdot\\bar\\sigma

(so ``sum_h u_h ubar_h = pslash``). For massless fermions the antifermion spinors span the
same spaces, so the same pair serves for ``v``. A fermion line
``wbar_a gamma^mu1 ... gamma^mun P_chi w_b`` with an odd number of gamma matrices reduces to
``lambda_a^dagger V^mu1 A V^mu2 ... lambda_b`` with ``V = sigmabar, A = a.sigma`` for
``chi = L`` and ``V = sigma, A = a.sigmabar`` for ``chi = R`` (``a`` the slashed momenta).
Squared amplitudes summed over helicities do not depend on the phase of each spinor.

All functions act on one momentum ``[4]``; complex outputs are ``complex64`` for float32
input and ``complex128`` for float64, and everything is differentiable.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxnis.numerics import safe_sqrt
from jaxnis.types import Array, ArrayLike

_PAULI = np.array(
    [[[1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]],
    dtype=np.complex128,
)
#: ``sigma^mu = (1, sigma_vec)``, shape ``[4, 2, 2]``.
SIGMA = _PAULI.copy()
#: ``sigmabar^mu = (1, -sigma_vec)``, shape ``[4, 2, 2]``.
SIGMA_BAR = np.concatenate([_PAULI[:1], -_PAULI[1:]])
#: Vertex matrices by chirality ``[L, R]``: ``[sigmabar^mu, sigma^mu]``, shape ``[2, 4, 2, 2]``.
VERTEX = np.stack([SIGMA_BAR, SIGMA])
#: Minkowski metric diagonal ``(+, -, -, -)``.
METRIC = np.array([1.0, -1.0, -1.0, -1.0])


def complex_dtype(dtype) -> np.dtype:
    """The complex dtype matching a real floating dtype."""
    return jnp.result_type(dtype, jnp.complex64)


def slashed(p: ArrayLike) -> Array:
    """``[p.sigma, p.sigmabar]``, shape ``[2, 2, 2]`` complex, for ``p`` of shape ``[4]``.

    Index 0 is the propagator block of a left-chiral line, index 1 of a right-chiral one.
    """
    p = jnp.asarray(p)
    cdt = complex_dtype(p.dtype)
    p_lower = (p * jnp.asarray(METRIC, dtype=p.dtype)).astype(cdt)
    return jnp.stack([
        jnp.einsum("m,mij->ij", p_lower, jnp.asarray(SIGMA, dtype=cdt)),
        jnp.einsum("m,mij->ij", p_lower, jnp.asarray(SIGMA_BAR, dtype=cdt)),
    ])


def massless_spinors(p: ArrayLike) -> Array:
    """Weyl spinors ``[lambda_L(p), lambda_R(p)]`` of a massless momentum, ``[2, 2]`` complex.

    ``lambda_L = sqrt(2E) xi_-`` and ``lambda_R = sqrt(2E) xi_+`` with
    ``(p_hat . sigma_vec) xi_+- = +- xi_+-``. ``E`` is taken as ``|p_vec|`` so that slightly
    off-shell rounding does not spoil the Weyl equations. Two phase conventions are used,
    ``lambda_R = (E + p_z, p_x + i p_y) / sqrt(E + p_z)`` for ``p_z >= 0`` and
    ``(p_x - i p_y, E - p_z) / sqrt(E - p_z)`` otherwise, so the denominator is never below
    ``sqrt(E)`` (no singularity along the beam axes); ``p = 0`` gives zero spinors.
    """
    p = jnp.asarray(p)
    cdt = complex_dtype(p.dtype)
    px, py, pz = p[1], p[2], p[3]
    e = safe_sqrt(px * px + py * py + pz * pz)
    upper = pz >= 0
    # Denominator >= E on the chosen branch; the where guards the all-zero momentum.
    den = jnp.where(upper, e + pz, e - pz)
    ok = den > 0
    inv = jnp.where(ok, 1.0 / safe_sqrt(jnp.where(ok, den, 1.0)), 0.0).astype(cdt)
    pperp = px.astype(cdt) + 1j * py.astype(cdt)
    pperp_c = px.astype(cdt) - 1j * py.astype(cdt)
    ep = (e + pz).astype(cdt)
    em = (e - pz).astype(cdt)
    lam_r = jnp.where(upper, jnp.stack([ep, pperp]), jnp.stack([pperp_c, em]))
    lam_l = jnp.where(upper, jnp.stack([-pperp_c, ep]), jnp.stack([-em, pperp]))
    return jnp.stack([lam_l, lam_r]) * inv


def currents(bra: ArrayLike, ket: ArrayLike) -> Array:
    """Chiral currents ``lambda_chi(bra)^dagger V_chi^mu lambda_chi(ket)``, ``[2, 4]`` complex.

    Equals ``wbar_bra gamma^mu P_chi w_ket`` for the Dirac spinors of chirality ``chi``.
    ``bra``, ``ket``: outputs of :func:`massless_spinors`.
    """
    bra, ket = jnp.asarray(bra), jnp.asarray(ket)
    vtx = jnp.asarray(VERTEX, dtype=ket.dtype)
    return jnp.einsum("xi,xmij,xj->xm", jnp.conj(bra), vtx, ket)


def radiative_currents(bra: ArrayLike, ket: ArrayLike, a_mu_first: ArrayLike,
                       a_rho_first: ArrayLike) -> Array:
    """Two-vertex chains of one fermion line, ``[2 (chi), 4 (mu), 4 (rho)]`` complex:

    .. math::

        \\bar w_{bra}\\left[\\gamma^\\mu P_\\chi \\not A_1 \\gamma^\\rho
            + \\gamma^\\rho \\not A_2 \\gamma^\\mu P_\\chi\\right] w_{ket}

    with ``A_1 = a_mu_first``, ``A_2 = a_rho_first`` (four-vectors, including any
    propagator denominators the caller divides out afterwards).
    """
    bra, ket = jnp.asarray(bra), jnp.asarray(ket)
    vtx = jnp.asarray(VERTEX, dtype=ket.dtype)
    bra_v = jnp.einsum("xi,xmij->xmj", jnp.conj(bra), vtx)  # bra^dagger V^mu
    ket_v = jnp.einsum("xmij,xj->xmi", vtx, ket)  # V^mu ket
    a1, a2 = slashed(a_mu_first), slashed(a_rho_first)
    t1 = jnp.einsum("xmi,xij,xrj->xmr", bra_v, a1, ket_v)
    t2 = jnp.einsum("xri,xij,xmj->xmr", bra_v, a2, ket_v)
    return t1 + t2


__all__ = [
    "METRIC",
    "SIGMA",
    "SIGMA_BAR",
    "VERTEX",
    "complex_dtype",
    "currents",
    "massless_spinors",
    "radiative_currents",
    "slashed",
]
