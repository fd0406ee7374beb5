"""Closed-form squared matrix elements of the toy processes.

Every function returns the spin- and colour-summed, initial-state-averaged ``|M|^2`` (GeV
units: dimensionless for 2 -> 2, GeV^-2 for 2 -> 3) of **one event**, a pure function of
``momenta`` (``[n, 4]``, ``(E, px, py, pz)``, GeV) and the parameter pytree of
:mod:`jaxnis.physics.parameters`. Batches are made with ``jax.vmap(me, in_axes=(0, None))``.
Flavours and the set of exchanged bosons are static; every float is traced, so
``jax.grad`` with respect to masses, widths and couplings is exact. The parameters are cast
to the dtype of ``momenta``.

Row order of ``momenta``: incoming fermion, incoming antifermion, outgoing fermion,
outgoing antifermion, then any radiated boson, e.g. ``[e-, e+, mu-, mu+]`` or
``[e-, e+, q, qbar, g]``. All fermions are massless.

Neutral current ``f_a fbar_a -> f_b fbar_b`` (s-channel photon, Z, Z'): with the chiral
coefficients ``G_ij(s)`` of :func:`~jaxnis.physics.parameters.coupling_matrix` (``i`` the
chirality of the initial line, ``j`` of the final line), the helicity amplitudes give

.. math::

    \\overline{|M|^2} = 2 C e^4 \\sum_{ij} |G_{ij}(s)|^2 W_{ij},\\qquad
    W_{LL} = W_{RR} = (p_1 p_4)^2 + (p_2 p_3)^2,\\quad
    W_{LR} = W_{RL} = (p_1 p_3)^2 + (p_2 p_4)^2,

``C = N_c`` for quarks in the final state, ``1/N_c`` for quarks in the initial state. For the
photon alone this is the textbook ``2 e^4 (t^2 + u^2) / s^2``. Equal chiralities favour the
outgoing fermion along the incoming fermion (``u^2 = 4 (p_1 p_4)^2``), which gives the
forward-backward asymmetry.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxnis.kinematics import minkowski_dot
from jaxnis.numerics import safe_div
from jaxnis.physics import parameters as pp
from jaxnis.physics import spinors as sp
from jaxnis.types import Array, ArrayLike, Params


def colour_factor(initial: str, final: str) -> float:
    """Colour sum over the final state times colour average over the initial state for an
    s-channel colour-singlet exchange ``f_a fbar_a -> f_b fbar_b``."""
    fi, ff = pp.fermion(initial), pp.fermion(final)
    factor = 1.0
    if ff.is_quark:
        factor *= ff.colours
    if fi.is_quark:
        factor /= fi.colours
    return factor


def _check_pair(initial: str, final: str) -> None:
    fi, ff = pp.fermion(initial), pp.fermion(final)
    if fi.name == ff.name:
        raise ValueError(
            f"initial and final flavour are both {fi.name!r}: only the s-channel is "
            "implemented (no t-channel exchange)"
        )


def _chiral_weights(p: Array) -> tuple[Array, Array]:
    """``(W_same, W_opposite)`` of the module docstring from rows 0-3 of ``p``."""
    p13 = minkowski_dot(p[0], p[2])
    p14 = minkowski_dot(p[0], p[3])
    p23 = minkowski_dot(p[1], p[2])
    p24 = minkowski_dot(p[1], p[3])
    return p14 * p14 + p23 * p23, p13 * p13 + p24 * p24


def _sum_g2_w(s: Array, params: Params, initial: str, final: str, bosons, w_same, w_opp):
    """``sum_ij |G_ij(s)|^2 W_ij``."""
    re, im = pp.coupling_matrix(s, params, initial, final, bosons)
    g2 = re * re + im * im
    return (g2[0, 0] + g2[1, 1]) * w_same + (g2[0, 1] + g2[1, 0]) * w_opp


def me_ffbar_to_ffbar(
    momenta: ArrayLike,
    params: Params,
    initial: str,
    final: str,
    *,
    bosons=("photon", "Z"),
) -> Array:
    """``|M|^2`` of ``f_a fbar_a -> f_b fbar_b`` through the s-channel ``bosons``.

    Formula in the module docstring. ``initial`` and ``final`` are static flavour names
    (``"e"``, ``"mu"``, ``"tau"``, ``"d"``, ``"u"``, ``"s"``, ``"c"``, ``"b"``) and must
    differ (the t-channel of Bhabha-like scattering is not included).

    Args:
        momenta: ``[4, 4]`` rows ``[f_a, fbar_a, f_b, fbar_b]``.
        params: parameter pytree.
        initial, final: static flavour names.
        bosons: static subset of ``("photon", "Z", "Zp")``.

    Returns:
        Scalar spin/colour summed and averaged ``|M|^2`` (dimensionless).

    Raises:
        ValueError: unknown flavour or boson, or ``initial == final``.
    """
    _check_pair(initial, final)
    bosons = pp.check_bosons(bosons)
    p = jnp.asarray(momenta)
    params = pp.cast_params(params, p.dtype)
    e2 = pp.derived(params)["e"] ** 2
    e4 = e2 * e2
    shat = 2.0 * minkowski_dot(p[0], p[1])
    w_same, w_opp = _chiral_weights(p)
    total = _sum_g2_w(shat, params, initial, final, bosons, w_same, w_opp)
    return 2.0 * colour_factor(initial, final) * e4 * total


def me_ee_to_mumu(momenta: ArrayLike, params: Params, *, bosons=("photon", "Z")) -> Array:
    """``|M|^2`` of ``e- e+ -> mu- mu+`` (rows ``[e-, e+, mu-, mu+]``); see
    :func:`me_ffbar_to_ffbar`. Photon only: ``2 e^4 (t^2 + u^2) / s^2``."""
    return me_ffbar_to_ffbar(momenta, params, "e", "mu", bosons=bosons)


def me_ee_to_qq(
    momenta: ArrayLike, params: Params, flavour: str, *, bosons=("photon", "Z")
) -> Array:
    """``|M|^2`` of ``e- e+ -> q qbar`` for a light ``flavour`` in ``d, u, s, c, b`` (rows
    ``[e-, e+, q, qbar]``), summed over the ``N_c`` colours; see :func:`me_ffbar_to_ffbar`.

    Raises:
        ValueError: if ``flavour`` is not a light quark.
    """
    if flavour not in pp.LIGHT_QUARKS:
        raise ValueError(f"unknown quark flavour {flavour!r}; expected one of {pp.LIGHT_QUARKS}")
    return me_ffbar_to_ffbar(momenta, params, "e", flavour, bosons=bosons)


def me_qq_to_ll(
    momenta: ArrayLike,
    params: Params,
    flavour: str,
    *,
    lepton: str = "mu",
    bosons=("photon", "Z", "Zp"),
) -> Array:
    """``|M|^2`` of ``q qbar -> l- l+`` (Drell-Yan) through photon, Z and Z'.

    Rows ``[q, qbar, l-, l+]``; averaged over the quark colours (factor ``1 / N_c``).
    ``flavour`` is a light quark, ``lepton`` a charged lepton; see :func:`me_ffbar_to_ffbar`.

    Raises:
        ValueError: unknown quark or lepton flavour.
    """
    if flavour not in pp.LIGHT_QUARKS:
        raise ValueError(f"unknown quark flavour {flavour!r}; expected one of {pp.LIGHT_QUARKS}")
    if lepton not in pp.CHARGED_LEPTONS:
        raise ValueError(f"unknown lepton {lepton!r}; expected one of {pp.CHARGED_LEPTONS}")
    return me_ffbar_to_ffbar(momenta, params, flavour, lepton, bosons=bosons)


def me_ee_to_qqg(
    momenta: ArrayLike, params: Params, flavour: str, *, bosons=("photon", "Z")
) -> Array:
    """``|M|^2`` of ``e- e+ -> q qbar g`` at leading order, massless (GeV^-2).

    Rows ``[e-, e+, q, qbar, g]`` = ``(p_1, p_2, p_3, p_4, k)``. Summing the two gluon
    emissions off the quark line,

    .. math::

        \\overline{|M|^2} = 2 N_c C_F e^4 g_s^2\\, s \\sum_{ij} |G_{ij}(s)|^2
        \\frac{W_{ij}}{(p_3 k)(p_4 k)},\\qquad g_s^2 = 4\\pi\\alpha_s,

    with ``W_ij`` as in the module docstring (evaluated with the 2 -> 3 momenta). Averaged
    over the beam orientation and combined with ``dPhi_3 = s / (128 pi^3) dx_1 dx_2`` it
    reproduces the classic

    .. math::

        \\frac{1}{\\sigma_0}\\frac{d\\sigma}{dx_1 dx_2} = \\frac{C_F \\alpha_s}{2\\pi}
        \\frac{x_1^2 + x_2^2}{(1 - x_1)(1 - x_2)},\\qquad x_i = 2 E_i / \\sqrt{s}.

    The collinear/soft poles ``p_i k = 0`` (measure zero) return 0 instead of infinity so
    the value and its gradient stay finite.

    Raises:
        ValueError: if ``flavour`` is not a light quark.
    """
    if flavour not in pp.LIGHT_QUARKS:
        raise ValueError(f"unknown quark flavour {flavour!r}; expected one of {pp.LIGHT_QUARKS}")
    bosons = pp.check_bosons(bosons)
    p = jnp.asarray(momenta)
    params = pp.cast_params(params, p.dtype)
    d = pp.derived(params)
    e2, gs2 = d["e"] ** 2, 4.0 * jnp.pi * params["alpha_s"]
    shat = 2.0 * minkowski_dot(p[0], p[1])
    w_same, w_opp = _chiral_weights(p)
    total = _sum_g2_w(shat, params, "e", flavour, bosons, w_same, w_opp)
    den = minkowski_dot(p[2], p[4]) * minkowski_dot(p[3], p[4])
    # den = 0 only exactly on a soft/collinear pole (measure zero): guarded.
    eikonal = safe_div(shat * total, den)
    return 2.0 * pp.N_C * pp.C_F * e2 * e2 * gs2 * eikonal


EMISSIONS = ("isr", "fsr")


def _check_emission(emission) -> tuple[str, ...]:
    if isinstance(emission, str):
        emission = (emission,)
    emission = tuple(emission)
    if not emission or any(e not in EMISSIONS for e in emission) or len(set(emission)) != len(
        emission
    ):
        raise ValueError(f"emission {emission!r} must be a non-empty subset of {EMISSIONS}")
    return emission


def _complex_g(x, params, initial, final, bosons, cdt):
    re, im = pp.coupling_matrix(x, params, initial, final, bosons)
    return re.astype(cdt) + 1j * im.astype(cdt)


def radiative_amplitudes_by_boson(
    momenta: ArrayLike,
    params: Params,
    initial: str = "e",
    final: str = "mu",
    *,
    bosons=("photon", "Z", "Zp"),
) -> Array:
    """Helicity amplitudes ``M^rho / e^3`` split by emission and exchanged boson.

    The fermion currents are computed once and contracted with each boson's coupling
    matrix, so the pieces needed by single-diagram-enhanced channel weights cost little more
    than the full amplitude. The formula is in :func:`me_ffbar_to_ffbar_a`.

    Returns:
        Complex array ``[2, n_bosons, 2, 2, 4]`` indexed
        ``[emission (ISR, FSR), boson, chi_a, chi_b, rho]``: ``chi`` the chiralities (L, R)
        of the initial and final fermion lines, which for massless fermions label the only
        non-vanishing helicity configurations, ``rho`` the upper Lorentz index of the photon.
        The sum over the first two axes is the full amplitude.
    """
    _check_pair(initial, final)
    bosons = pp.check_bosons(bosons)
    fa, fb = pp.fermion(initial), pp.fermion(final)
    p = jnp.asarray(momenta)
    dtype = p.dtype
    cdt = sp.complex_dtype(dtype)
    params = pp.cast_params(params, dtype)
    p1, p2, p3, p4, k = p[0], p[1], p[2], p[3], p[4]
    s = 2.0 * minkowski_dot(p1, p2)
    q2 = 2.0 * minkowski_dot(p3, p4)
    w1, w2, w3, w4 = (sp.massless_spinors(p[i]) for i in range(4))
    metric = jnp.asarray(sp.METRIC, dtype=cdt)

    def prop(a):  # a / a^2: massless fermion propagator, slashed inside radiative_currents
        # a^2 = 0 only on an exact soft/collinear pole (measure zero): guarded to 0.
        return a * safe_div(1.0, minkowski_dot(a, a))

    # ISR: photon on the initial line, boson at q^2; FSR: on the final line, boson at s.
    r_a = fa.charge * sp.radiative_currents(w2, w1, prop(p1 - k), prop(k - p2))
    j_b = sp.currents(w3, w4)
    r_b = fb.charge * sp.radiative_currents(w3, w4, prop(-p4 - k), prop(p3 + k))
    j_a = sp.currents(w2, w1)
    g_isr = jnp.stack([_complex_g(q2, params, initial, final, (b,), cdt) for b in bosons])
    g_fsr = jnp.stack([_complex_g(s, params, initial, final, (b,), cdt) for b in bosons])
    isr = jnp.einsum("vxy,xmr,ym,m->vxyr", g_isr, r_a, j_b, metric)
    fsr = jnp.einsum("vxy,xm,ymr,m->vxyr", g_fsr, j_a, r_b, metric)
    return jnp.stack([isr, fsr])


def radiative_amplitudes(
    momenta: ArrayLike,
    params: Params,
    initial: str = "e",
    final: str = "mu",
    *,
    bosons=("photon", "Z", "Zp"),
    emission=("isr", "fsr"),
) -> Array:
    """Helicity amplitudes ``M^rho / e^3`` of ``f_a fbar_a -> f_b fbar_b gamma``.

    The formula is in :func:`me_ffbar_to_ffbar_a`; arguments as there.

    Returns:
        Complex array ``[2, 2, 4]`` indexed ``[chi_a, chi_b, rho]`` (see
        :func:`radiative_amplitudes_by_boson`).
    """
    emission = _check_emission(emission)
    pieces = radiative_amplitudes_by_boson(momenta, params, initial, final, bosons=bosons)
    rows = [i for i, e in enumerate(EMISSIONS) if e in emission]
    return jnp.sum(pieces[jnp.asarray(rows)], axis=(0, 1))


def me_ffbar_to_ffbar_a(
    momenta: ArrayLike,
    params: Params,
    initial: str = "e",
    final: str = "mu",
    *,
    bosons=("photon", "Z", "Zp"),
    emission=("isr", "fsr"),
) -> Array:
    r"""``|M|^2`` of ``f_a fbar_a -> f_b fbar_b gamma`` with s-channel photon, Z and Z' (GeV^-2).

    Rows ``[f_a, fbar_a, f_b, fbar_b, gamma]`` = ``(p_1, p_2, p_3, p_4, k)``, all massless.
    With ``q^2 = (p_3 + p_4)^2``, ``s = (p_1 + p_2)^2``, the chiral currents
    ``J_a^mu = vbar_2 gamma^mu P_i u_1``, ``J_b^mu = ubar_3 gamma^mu P_j v_4`` and the
    radiative currents (photon index ``rho``, charges ``Q_a, Q_b``)

    .. math::

        R_a^{\mu\rho} &= Q_a\, \bar v_2\left[\gamma^\mu P_i
            \frac{\not p_1 - \not k}{(p_1 - k)^2}\gamma^\rho
            + \gamma^\rho \frac{\not k - \not p_2}{(p_2 - k)^2}\gamma^\mu P_i\right] u_1,\\
        R_b^{\mu\rho} &= Q_b\, \bar u_3\left[\gamma^\rho
            \frac{\not p_3 + \not k}{(p_3 + k)^2}\gamma^\mu P_j
            + \gamma^\mu P_j \frac{-\not p_4 - \not k}{(p_4 + k)^2}\gamma^\rho\right] v_4,

    the amplitude is (common phase dropped)

    .. math::

        M^\rho = e^3 \sum_{ij}\left[G_{ij}(q^2)\, R_{a,\mu}^{\ \rho} J_b^\mu
            + G_{ij}(s)\, J_{a,\mu} R_b^{\mu\rho}\right]

    (first term initial-state radiation, second final-state), ``G_ij`` the chiral coupling
    matrix of :func:`~jaxnis.physics.parameters.coupling_matrix`, and

    .. math::

        \overline{|M|^2} = \frac{C}{4} \sum_{\rm helicities} (-g_{\rho\sigma})
            M^\rho M^{\sigma *},

    the ``-g`` polarisation sum being exact because each fermion line's two emissions
    satisfy ``k_rho M^rho = 0``. The helicity sum runs over the four chirality
    configurations of the two massless lines, with explicit Weyl spinors
    (:mod:`jaxnis.physics.spinors`).

    Checks (see the tests): for the photon alone this equals the factorised closed form
    (Berends et al., Phys. Lett. 103B (1981) 124)

    .. math::

        \overline{|M|^2} = e^6 \frac{4 [(p_1p_3)^2 + (p_1p_4)^2 + (p_2p_3)^2 + (p_2p_4)^2]}
            {s\, q^2} \, (-J\cdot J),\qquad
        J^\mu = \frac{p_1^\mu}{p_1 k} - \frac{p_2^\mu}{p_2 k}
            - \frac{p_3^\mu}{p_3 k} + \frac{p_4^\mu}{p_4 k};

    with Z and Z' it tends to ``-e^2 Q^2 J.J |M_{2->2}|^2`` for a soft photon, and it is
    gauge invariant (``k_rho M^rho = 0``).

    ``emission`` (static) restricts to initial- or final-state radiation, each gauge
    invariant on its own (the photon couples to one fermion line in each); the initial-state
    part carries the resonances in ``q^2`` (radiative return to the Z and Z')
    and is what single-diagram-enhanced channel weights need.

    Args:
        momenta: ``[5, 4]``.
        params: parameter pytree.
        initial, final: static flavour names (must differ).
        bosons: static subset of ``("photon", "Z", "Zp")``.
        emission: static subset of ``("isr", "fsr")``.

    Returns:
        Scalar ``|M|^2`` in GeV^-2; exactly soft/collinear poles (measure zero) give 0.
    """
    p = jnp.asarray(momenta)
    amp = radiative_amplitudes(p, params, initial, final, bosons=bosons, emission=emission)
    return radiative_me_from_amplitudes(amp, params, initial, final)


def radiative_me_from_amplitudes(amp: ArrayLike, params: Params, initial: str = "e",
                                 final: str = "mu") -> Array:
    """``|M|^2`` from the amplitudes of :func:`radiative_amplitudes` (``[..., 2, 2, 4]``):
    ``(C / 4) e^6 sum_chi (-g_{rho sigma}) M^rho M^sigma*``, shape ``[...]``.

    Amplitudes are linear in the exchanged bosons and in the emissions, so sums of
    amplitudes for separate bosons or emissions give the interfering total.
    """
    amp = jnp.asarray(amp)
    dtype = jnp.real(amp).dtype
    e2 = pp.derived(pp.cast_params(params, dtype))["e"] ** 2
    a2 = jnp.real(amp * jnp.conj(amp))
    # -g_{rho sigma} M^rho M^sigma*: spatial components minus the time component.
    total = jnp.sum(a2[..., 1:], axis=(-3, -2, -1)) - jnp.sum(a2[..., 0], axis=(-2, -1))
    return colour_factor(initial, final) * e2 * e2 * e2 * total / 4.0


def me_ee_to_mumua(
    momenta: ArrayLike,
    params: Params,
    *,
    bosons=("photon", "Z", "Zp"),
    emission=("isr", "fsr"),
) -> Array:
    """``|M|^2`` of ``e- e+ -> mu- mu+ gamma`` (rows ``[e-, e+, mu-, mu+, gamma]``) with photon,
    Z and Z' exchange and initial- plus final-state radiation; see
    :func:`me_ffbar_to_ffbar_a`. Above the Z' mass, radiative return gives two resonant
    channels in ``m_{mu mu}`` (Z and Z') besides the non-resonant final-state radiation."""
    return me_ffbar_to_ffbar_a(momenta, params, "e", "mu", bosons=bosons, emission=emission)


__all__ = [
    "EMISSIONS",
    "colour_factor",
    "me_ee_to_mumu",
    "me_ee_to_mumua",
    "me_ee_to_qq",
    "me_ee_to_qqg",
    "me_ffbar_to_ffbar",
    "me_ffbar_to_ffbar_a",
    "me_qq_to_ll",
    "radiative_amplitudes",
    "radiative_amplitudes_by_boson",
    "radiative_me_from_amplitudes",
]
