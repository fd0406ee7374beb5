"""Matrix elements and closed-form cross sections of the toy processes.

The matrix elements are validated independently of the closed forms: the two-body ones are
integrated over the phase space by Gauss-Legendre quadrature in cos(theta) (exact for their
quadratic angular dependence), the three-body ones against the classic x1, x2 distribution,
the three-jet function B(y), a factorised closed form, the soft limit and gauge invariance.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import roots_legendre

from jaxnis.kinematics import boost, minkowski_dot
from jaxnis.physics import cross_sections as xs
from jaxnis.physics import matrix_elements as me
from jaxnis.physics import parameters as pp
from tests.checks import assert_batch_equals_loop, assert_grad_matches_fd
from tests.conftest import tol

ALL_BOSONS = ("photon", "Z", "Zp")


# ----------------------------------------------------------------------------- kinematics


def two_body(sqrt_s, cos_theta, phi):
    """``[N, 4, 4]`` massless 2 -> 2 momenta in the CM frame (float64 numpy)."""
    cos_theta, phi = np.broadcast_arrays(np.asarray(cos_theta, float), np.asarray(phi, float))
    e = sqrt_s / 2.0
    sin_theta = np.sqrt(1.0 - cos_theta**2)
    n = np.stack([sin_theta * np.cos(phi), sin_theta * np.sin(phi), cos_theta], axis=-1)
    ones = np.ones(cos_theta.shape + (1,))
    beam = np.broadcast_to(np.array([0.0, 0.0, 1.0]), n.shape)
    p1 = e * np.concatenate([ones, beam], -1)
    p2 = e * np.concatenate([ones, -beam], -1)
    p3 = e * np.concatenate([ones, n], -1)
    p4 = e * np.concatenate([ones, -n], -1)
    return np.stack([p1, p2, p3, p4], axis=-2)


def three_body(sqrt_s, x1, x2, beam_dir, rot_angle=0.0):
    """``[5, 4]`` massless momenta ``[p1, p2, p3, p4, k]`` with energy fractions ``x1, x2``
    of p3, p4 (float64 numpy). The final state lies in the xz plane (rotated about y by
    ``rot_angle``); the beams run along the unit vector ``beam_dir``."""
    x3 = 2.0 - x1 - x2
    e3, e4 = x1 * sqrt_s / 2.0, x2 * sqrt_s / 2.0
    c34 = 1.0 - 2.0 * (1.0 - x3) / (x1 * x2)
    s34 = np.sqrt(max(1.0 - c34**2, 0.0))
    n3 = np.array([0.0, 0.0, 1.0])
    n4 = np.array([s34, 0.0, c34])
    ca, sa = np.cos(rot_angle), np.sin(rot_angle)
    rot = np.array([[ca, 0, sa], [0, 1, 0], [-sa, 0, ca]])
    k3 = rot @ (e3 * n3)
    k4 = rot @ (e4 * n4)
    kk = -(k3 + k4)
    nb = np.asarray(beam_dir, float) / np.linalg.norm(beam_dir)
    e = sqrt_s / 2.0
    return np.stack([
        np.concatenate([[e], e * nb]),
        np.concatenate([[e], -e * nb]),
        np.concatenate([[e3], k3]),
        np.concatenate([[e4], k4]),
        np.concatenate([[np.linalg.norm(kk)], kk]),
    ])


#: Octahedron directions: a spherical 3-design, so averaging a quadratic in the beam
#: direction over them is the exact orientation average.
OCTAHEDRON = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1.0]])


def params_of(dtype):
    return pp.default_params(dtype)


@functools.cache
def _batched(fn_name, dtype_name, **static):
    fn = functools.partial(getattr(me, fn_name), **static)
    return jax.jit(jax.vmap(fn, in_axes=(0, None)))


def batched(fn_name, dtype, **static):
    return _batched(fn_name, jnp.dtype(dtype).name, **static)


# ----------------------------------------------------------------------------- closed forms

REFERENCE_SIGMA = [
    # (sqrt_s, final, bosons, sigma_pb, abs tolerance = half the last quoted digit)
    (91.188, "mu", ("photon",), 11.171423749, 5e-10),
    (1000.0, "mu", ("photon",), 0.092893196, 5e-10),
    (91.188, "mu", ("photon", "Z"), 2099.2653903, 5e-8),
    (1000.0, "mu", ("photon", "Z"), 0.106383609, 5e-10),
    (91.188, "u", ("photon", "Z"), 7229.6814955, 5e-8),
]


@pytest.mark.parametrize("sqrt_s,final,bosons,want,atol", REFERENCE_SIGMA)
def test_closed_form_sigma_reference(dtype, sqrt_s, final, bosons, want, atol):
    got = xs.sigma_ffbar(jnp.asarray(sqrt_s, dtype), params_of(dtype), "e", final, bosons=bosons)
    assert got.dtype == dtype
    # float32 carries ~7 significant digits, so there the check is relative.
    np.testing.assert_allclose(float(got), want, atol=tol(dtype, 3e-6 * want, atol), rtol=0)


@pytest.mark.parametrize("sqrt_s,want", [(91.188, 0.0358856), (1000.0, 0.481854)])
def test_closed_form_afb_reference(dtype, sqrt_s, want):
    got = xs.afb_ffbar(jnp.asarray(sqrt_s, dtype), params_of(dtype))
    np.testing.assert_allclose(float(got), want, atol=tol(dtype, 1e-6, 5e-7), rtol=0)


def test_closed_form_matches_textbook_va_formula(dtype):
    """The chiral form equals the v/a formula of the references for every light flavour."""
    params = params_of(dtype)
    d = {k: float(v) for k, v in pp.derived(params).items()}
    alpha, mz, gz = float(params["alpha"]), float(params["M_Z"]), float(params["Gamma_Z"])
    kappa = 1.0 / (4.0 * d["sw2"] * d["cw2"])
    for sqrt_s in (30.0, 91.188, 200.0, 1000.0):
        s = sqrt_s**2
        den = (s - mz**2) ** 2 + gz**2 * mz**2
        chi1, chi2 = kappa * s * (s - mz**2) / den, kappa**2 * s**2 / den
        v_e, a_e = -0.5 + 2.0 * d["sw2"], -0.5
        for flavour in ("mu", *pp.LIGHT_QUARKS):
            f = pp.FERMIONS[flavour]
            v_f, a_f = f.t3 - 2.0 * f.charge * d["sw2"], f.t3
            want = f.colours * 4 * np.pi * alpha**2 / (3 * s) * (
                f.charge**2 - 2 * f.charge * v_e * v_f * chi1
                + (a_e**2 + v_e**2) * (a_f**2 + v_f**2) * chi2
            ) * pp.GEV2_TO_PB
            a1 = -4 * f.charge * a_e * a_f * chi1 + 8 * a_e * v_e * a_f * v_f * chi2
            a0 = f.charge**2 - 2 * f.charge * v_e * v_f * chi1 + (
                (a_e**2 + v_e**2) * (a_f**2 + v_f**2) * chi2
            )
            got = xs.sigma_ffbar(jnp.asarray(sqrt_s, dtype), params, "e", flavour)
            afb = xs.afb_ffbar(jnp.asarray(sqrt_s, dtype), params, "e", flavour)
            np.testing.assert_allclose(float(got), want, rtol=tol(dtype, 2e-5, 1e-12))
            np.testing.assert_allclose(float(afb), 3 * a1 / (8 * a0),
                                       rtol=tol(dtype, 2e-4, 1e-10), atol=tol(dtype, 1e-6, 0))


# ----------------------------------------------------------------------------- 2 -> 2 |M|^2

CASES_2TO2 = [
    # (label, me name, static kwargs, closed-form kwargs, sqrt_s)
    ("mumu-a-91", "me_ee_to_mumu", {"bosons": ("photon",)},
     {"initial": "e", "final": "mu", "bosons": ("photon",)}, 91.188),
    ("mumu-aZ-91", "me_ee_to_mumu", {}, {"initial": "e", "final": "mu"}, 91.188),
    ("mumu-aZ-1000", "me_ee_to_mumu", {}, {"initial": "e", "final": "mu"}, 1000.0),
    ("mumu-aZZp-1000", "me_ee_to_mumu", {"bosons": ALL_BOSONS},
     {"initial": "e", "final": "mu", "bosons": ALL_BOSONS}, 1000.0),
    *[(f"{q}-aZ-91", "me_ee_to_qq", {"flavour": q}, {"initial": "e", "final": q}, 91.188)
      for q in pp.LIGHT_QUARKS],
    ("u-aZ-500", "me_ee_to_qq", {"flavour": "u"}, {"initial": "e", "final": "u"}, 500.0),
    *[(f"dy-{q}-{rs}", "me_qq_to_ll", {"flavour": q},
       {"initial": q, "final": "mu", "bosons": ALL_BOSONS}, rs)
      for q in ("u", "d") for rs in (91.188, 750.0, 2000.0)],
]


def _integrate_2to2(fn, sqrt_s, params, dtype, lo=-1.0, hi=1.0, n=8):
    """``sigma = 1/(2s) int |M|^2 dPhi_2``, ``dPhi_2 = 1/(8 pi) dOmega / (4 pi)``, in pb.

    Gauss-Legendre in cos(theta) (n = 8 is exact for the quadratic angular dependence) at
    scattered azimuths (the integrand does not depend on phi).
    """
    t, w = roots_legendre(n)
    c = 0.5 * (hi - lo) * t + 0.5 * (hi + lo)
    w = 0.5 * (hi - lo) * w
    phi = np.linspace(0.3, 5.9, n)
    mom = jnp.asarray(two_body(sqrt_s, c, phi), dtype)
    m2 = np.asarray(fn(mom, params), np.float64)
    s = sqrt_s**2
    # int dphi = 2 pi, so dPhi_2 -> dcos / (16 pi)
    return float(np.sum(w * m2)) / (2.0 * s) / (16.0 * np.pi) * pp.GEV2_TO_PB


@pytest.mark.parametrize("label,name,static,closed,sqrt_s", CASES_2TO2,
                         ids=[c[0] for c in CASES_2TO2])
def test_me_2to2_integrates_to_closed_form(dtype, label, name, static, closed, sqrt_s):
    params = params_of(dtype)
    fn = batched(name, dtype, **static)
    got = _integrate_2to2(fn, sqrt_s, params, dtype)
    want = float(xs.sigma_ffbar(sqrt_s, pp.default_params(), **closed))
    # float32: a sum of 8 single-precision |M|^2 values is good to a few 1e-6.
    np.testing.assert_allclose(got, want, rtol=tol(dtype, 2e-5, 1e-6))
    if label.startswith("mumu-aZ"):
        fwd = _integrate_2to2(fn, sqrt_s, params, dtype, 0.0, 1.0)
        bwd = _integrate_2to2(fn, sqrt_s, params, dtype, -1.0, 0.0)
        afb = xs.afb_ffbar(sqrt_s, params, **closed)
        np.testing.assert_allclose((fwd - bwd) / (fwd + bwd), float(afb),
                                   rtol=tol(dtype, 2e-4, 1e-6))


def test_me_2to2_angular_distribution_matches_dsigma_dcos(dtype):
    params = params_of(dtype)
    sqrt_s = 200.0
    c = np.linspace(-0.95, 0.95, 7)
    mom = jnp.asarray(two_body(sqrt_s, c, 0.4), dtype)
    m2 = np.asarray(batched("me_ee_to_mumu", dtype)(mom, params), np.float64)
    # dsigma/dcos = |M|^2 / (2 s) * 1/(8 pi) * 2 pi / (4 pi) (dPhi_2 integrated over phi)
    got = m2 / (2 * sqrt_s**2) / (16 * np.pi) * pp.GEV2_TO_PB
    want = xs.dsigma_dcos_ffbar(jnp.asarray(c, dtype), sqrt_s, params)
    np.testing.assert_allclose(got, np.asarray(want), rtol=tol(dtype, 2e-5, 1e-12))


@pytest.mark.x64
def test_me_2to2_lorentz_invariant_and_batch_equals_loop():
    params = pp.default_params(jnp.float64)
    mom = jnp.asarray(two_body(300.0, np.linspace(-0.9, 0.9, 5), np.linspace(0, 6, 5)))
    ch, sh = np.cosh(0.7), np.sinh(0.7)  # boost along z after a rotation about x
    ca, sa = np.cos(1.1), np.sin(1.1)
    rotation = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, ca, -sa], [0, 0, sa, ca]])
    boost = np.array([[ch, 0, 0, sh], [0, 1, 0, 0], [0, 0, 1, 0], [sh, 0, 0, ch]])
    moved = jnp.einsum("ij,jk,nak->nai", boost, rotation, mom)
    fn = batched("me_qq_to_ll", jnp.float64, flavour="d")
    np.testing.assert_allclose(fn(moved, params), fn(mom, params), rtol=1e-12)
    single = jax.jit(functools.partial(me.me_qq_to_ll, params=params, flavour="d"))
    assert_batch_equals_loop(single, (mom,), rtol=1e-12)


# ----------------------------------------------------------------------------- derivatives


@pytest.mark.x64
def test_grad_sigma_mumu_reference():
    params = pp.default_params(jnp.float64)
    g = jax.jit(jax.grad(lambda p: xs.sigma_ffbar(91.188, p)))(params)
    np.testing.assert_allclose(float(g["M_Z"]), 67.755083, rtol=1e-5)
    np.testing.assert_allclose(float(g["Gamma_Z"]), -1710.5682, rtol=1e-5)
    # The same derivative through the momentum-space |M|^2 and the quadrature.
    fn = jax.vmap(me.me_ee_to_mumu, in_axes=(0, None))
    t, w = roots_legendre(8)
    mom = jnp.asarray(two_body(91.188, t, 0.0))

    def sigma_me(p):
        return jnp.sum(w * fn(mom, p)) / (2 * 91.188**2) / (16 * np.pi) * pp.GEV2_TO_PB

    g_me = jax.jit(jax.grad(sigma_me))(params)
    for key in ("M_Z", "Gamma_Z", "alpha", "G_F"):
        np.testing.assert_allclose(float(g_me[key]), float(g[key]), rtol=1e-9)


@pytest.mark.x64
def test_grad_drell_yan_me_matches_finite_differences():
    """Derivatives of q qbar -> mu mu near the Z' peak in all Z' parameters."""
    keys = ("M_Zp", "Gamma_Zp", "gV_Zp_u", "gA_Zp_u", "gV_Zp_l", "gA_Zp_l", "M_Z")
    base = pp.default_params(jnp.float64)
    mom = jnp.asarray(two_body(740.0, 0.3, 1.0))

    def f(v):
        params = {**base, **{k: v[i] for i, k in enumerate(keys)}}
        return me.me_qq_to_ll(mom, params, "u")

    x0 = jnp.asarray([float(base[k]) for k in keys])
    assert_grad_matches_fd(f, x0, h=1e-5, rtol=1e-6)


# ----------------------------------------------------------------------------- e+e- -> q qbar g


def _qqg_normalised(x1, x2, sqrt_s, flavour, bosons, dtype):
    """Orientation-averaged ``(1/sigma_0) d sigma / dx1 dx2`` from ``me_ee_to_qqg``."""
    x1, x2 = np.ravel(x1), np.ravel(x2)
    mom = np.stack([three_body(sqrt_s, a, b, nb, rot_angle=0.37)
                    for a, b in zip(x1, x2, strict=True) for nb in OCTAHEDRON])
    params = params_of(dtype)
    fn = batched("me_ee_to_qqg", dtype, flavour=flavour, bosons=bosons)
    m2 = np.asarray(fn(jnp.asarray(mom, dtype), params), np.float64).reshape(x1.size, 6)
    s = sqrt_s**2
    dsigma = m2.mean(axis=1) / (2.0 * s) * s / (128.0 * np.pi**3)  # GeV^-2 per dx1 dx2
    sigma0 = float(xs.sigma_ffbar(sqrt_s, pp.default_params(), "e", flavour, bosons=bosons))
    return dsigma * pp.GEV2_TO_PB / sigma0


@pytest.mark.parametrize("sqrt_s,bosons", [(91.188, ("photon",)), (91.188, ("photon", "Z")),
                                           (1000.0, ALL_BOSONS)])
def test_qqg_reproduces_x1_x2_distribution(dtype, sqrt_s, bosons):
    rng = np.random.default_rng(7)
    x1 = rng.uniform(0.05, 0.98, 64)
    x2 = rng.uniform(0.05, 0.98, 64)
    keep = (x1 + x2 > 1.02)
    x1, x2 = x1[keep], x2[keep]
    got = _qqg_normalised(x1, x2, sqrt_s, "d", bosons, dtype)
    alpha_s = float(pp.DEFAULTS["alpha_s"])
    want = pp.C_F * alpha_s / (2 * np.pi) * (x1**2 + x2**2) / ((1 - x1) * (1 - x2))
    np.testing.assert_allclose(got, want, rtol=tol(dtype, 2e-4, 1e-9))


@pytest.mark.parametrize("y,want", [(0.05, 8.647683105625635), (0.1, 3.6875046806866343)])
def test_qqg_three_jet_function(dtype, y, want):
    """B(y) = int over {all s_ij / s > y} of the distribution / (C_F alpha_s / 2 pi)."""
    t, w = roots_legendre(48)
    u, wu = 0.5 * (t + 1), 0.5 * w
    uu, vv = np.meshgrid(u, u, indexing="ij")
    ww = np.outer(wu, wu)
    a = y + (1 - 3 * y) * uu  # a = 1 - x1 = s(qbar g)/s
    b = y + (1 - 3 * y) * (1 - uu) * vv  # b = 1 - x2, with a + b < 1 - y
    jac = (1 - 3 * y) ** 2 * (1 - uu)
    dist = _qqg_normalised(1 - a, 1 - b, 500.0, "u", ("photon", "Z"), dtype)
    alpha_s = float(pp.DEFAULTS["alpha_s"])
    got = np.sum(ww.ravel() * jac.ravel() * dist) / (pp.C_F * alpha_s / (2 * np.pi))
    np.testing.assert_allclose(got, want, rtol=1e-4)


@pytest.mark.x64
def test_qqg_equals_gluon_recoloured_photon_radiation():
    """e+e- -> q qbar g is final-state photon radiation off the quark with
    e^2 Q_q^2 -> g_s^2 C_F: checks the chirality assignment of the closed form."""
    params = pp.default_params(jnp.float64)
    d = pp.derived(params)
    beams = ([0.3, -0.5, 0.8], [0, 0, 1.0], [0, 0, -1.0])
    mom = jnp.asarray(np.stack([three_body(700.0, 0.83, 0.64, b, rot_angle=1.3)
                                for b in beams]))
    flavour = "u"  # the chiral structure is flavour blind; one flavour keeps it cheap
    a = batched("me_ee_to_qqg", jnp.float64, flavour=flavour, bosons=ALL_BOSONS)(mom, params)
    b = batched("me_ffbar_to_ffbar_a", jnp.float64, initial="e", final=flavour,
                bosons=ALL_BOSONS, emission="fsr")(mom, params)
    q = pp.FERMIONS[flavour].charge
    want = float(d["g_s"] ** 2 * pp.C_F / (d["e"] ** 2 * q * q))
    np.testing.assert_allclose(np.asarray(a / b), want, rtol=1e-11)


# ----------------------------------------------------------------------------- e+e- -> mu mu gamma


def _random_three_body(rng, n, sqrt_s, lo=0.05):
    out = []
    while len(out) < n:
        x1, x2 = rng.uniform(lo, 1.0 - lo, 2)
        if x1 + x2 > 1.0 + lo:
            out.append(three_body(sqrt_s, x1, x2, rng.normal(size=3), rng.uniform(0, 6.3)))
    return np.stack(out)


def _eikonal(mom):
    p1, p2, p3, p4, k = (mom[..., i, :] for i in range(5))
    j = (p1 / minkowski_dot(p1, k)[..., None] - p2 / minkowski_dot(p2, k)[..., None]
         - p3 / minkowski_dot(p3, k)[..., None] + p4 / minkowski_dot(p4, k)[..., None])
    return -minkowski_dot(j, j)


def test_mumua_photon_only_equals_factorised_closed_form(dtype):
    mom = jnp.asarray(_random_three_body(np.random.default_rng(3), 24, 250.0), dtype)
    params = params_of(dtype)
    got = batched("me_ee_to_mumua", dtype, bosons=("photon",))(mom, params)
    e2 = 4 * np.pi * float(params["alpha"])
    m = np.asarray(mom, np.float64)
    dots = {(i, j): minkowski_dot(m[:, i], m[:, j]) for i in range(5) for j in range(5)}
    s, q2 = 2 * dots[0, 1], 2 * dots[2, 3]
    sum4 = dots[0, 2] ** 2 + dots[0, 3] ** 2 + dots[1, 2] ** 2 + dots[1, 3] ** 2
    want = e2**3 * 4 * sum4 / (s * q2) * _eikonal(m)
    # float32: the spinor sums lose a few digits near the collinear edges.
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tol(dtype, 2e-3, 1e-11))


@pytest.mark.x64
@pytest.mark.parametrize("sqrt_s", [91.188, 1000.0])
def test_mumua_soft_limit(sqrt_s):
    """|M_3|^2 -> -e^2 J.J |M_2|^2 for a soft photon, with linear convergence in E_gamma."""
    params = pp.default_params(jnp.float64)
    e2 = 4 * np.pi * float(params["alpha"])
    dev = {}
    for eps in (1e-5, 1e-6):
        # generic beam directions; near radiation-zero configurations converge more slowly
        mom = np.stack([three_body(sqrt_s, 1 - 0.3 * eps, 1 - 0.7 * eps, nb, 0.8)
                        for nb in ([0.2, 0.5, 0.8], [1.0, -0.3, 0.1], [0.3, -0.9, 0.2])])
        m3 = batched("me_ee_to_mumua", jnp.float64)(jnp.asarray(mom), params)
        m2 = batched("me_ffbar_to_ffbar", jnp.float64, initial="e", final="mu",
                     bosons=ALL_BOSONS)(jnp.asarray(mom[:, :4]), params)
        ratio = np.asarray(m3) / (e2 * _eikonal(mom) * np.asarray(m2))
        dev[eps] = np.max(np.abs(ratio - 1.0))
    assert dev[1e-6] < 3e-5, dev
    assert dev[1e-6] < 0.2 * dev[1e-5], dev


@pytest.mark.x64
def test_mumua_gauge_invariance():
    """k_rho M^rho = 0 for every helicity, separately for ISR and FSR and each boson."""
    params = pp.default_params(jnp.float64)
    mom = jnp.asarray(_random_three_body(np.random.default_rng(5), 6, 1000.0))
    k_lower = mom[:, 4] * jnp.asarray([1.0, -1.0, -1.0, -1.0])
    amp = jax.jit(jax.vmap(lambda m: me.radiative_amplitudes_by_boson(m, params)))(mom)
    # [event, emission, boson, chi_a, chi_b, rho]: every piece is gauge invariant alone
    contracted = jnp.einsum("nebxyr,nr->nebxy", amp, k_lower.astype(amp.dtype))
    scale = jnp.max(jnp.abs(amp)) * 1000.0
    assert float(jnp.max(jnp.abs(contracted))) < 1e-11 * float(scale)


def isr_events(sqrt_s, m_mumu, cos_gamma, decay_dirs):
    """``[len(decay_dirs), 5, 4]``: photon at polar angle ``acos(cos_gamma)`` recoiling
    against a mu pair of mass ``m_mumu`` that decays along ``decay_dirs`` in its rest frame."""
    e = sqrt_s / 2
    eg = (sqrt_s**2 - m_mumu**2) / (2 * sqrt_s)
    sin_gamma = np.sqrt(1 - cos_gamma**2)
    k = eg * np.array([1.0, sin_gamma, 0.0, cos_gamma])
    q = np.array([sqrt_s, 0.0, 0.0, 0.0]) - k
    out = []
    for n in decay_dirs:
        n = np.asarray(n, float) / np.linalg.norm(n)
        rest3 = m_mumu / 2 * np.concatenate([[1.0], n])
        rest4 = m_mumu / 2 * np.concatenate([[1.0], -n])
        p3, p4 = (np.asarray(boost(jnp.asarray(r), jnp.asarray(q))) for r in (rest3, rest4))
        out.append(np.stack([[e, 0, 0, e], [e, 0, 0, -e], p3, p4, k]))
    return np.stack(out)


@pytest.mark.x64
@pytest.mark.parametrize("m_mumu", [30.0, 91.188, 93.0, 400.0, 750.0, 760.0])
def test_mumua_isr_factorises_into_production_and_decay(m_mumu):
    """Averaged over the mu decay angles, initial-state radiation factorises into
    ``f fbar -> gamma V*`` times the decay of ``V*``:

        <|M_ISR|^2>_Omega* = (2 e^6 q^2 / 3) sum_ij |G_ij(q^2)|^2
                             (t/u + u/t + 2 s q^2 / (t u)),

    ``t = (p1 - k)^2``, ``u = (p2 - k)^2``: an independent check of the resonant channels
    (Z and Z' radiative return) and of their normalisation. The octahedron average is
    exact because |M|^2 is quadratic in the decay direction."""
    params = pp.default_params(jnp.float64)
    sqrt_s = 1000.0
    fn = batched("me_ee_to_mumua", jnp.float64, emission="isr")
    e2 = 4 * np.pi * float(params["alpha"])
    for cos_gamma in (-0.7, 0.1, 0.95):
        mom = isr_events(sqrt_s, m_mumu, cos_gamma, OCTAHEDRON)
        got = float(np.mean(np.asarray(fn(jnp.asarray(mom), params))))
        p1, p2, k = mom[0, 0], mom[0, 1], mom[0, 4]
        s, q2 = sqrt_s**2, m_mumu**2
        t = float(minkowski_dot(p1 - k, p1 - k))
        u = float(minkowski_dot(p2 - k, p2 - k))
        re, im = pp.coupling_matrix(jnp.asarray(q2), params, "e", "mu", ALL_BOSONS)
        g2 = float(jnp.sum(re**2 + im**2))
        want = 2 * e2**3 * q2 * g2 / 3 * (t / u + u / t + 2 * s * q2 / (t * u))
        np.testing.assert_allclose(got, want, rtol=1e-10)


# ----------------------------------------------------------------------------- robustness

ME_CASES = [
    # (name, static arguments, number of particles, check gradients): the 2 -> 2 functions
    # share one code path, so one of them carries the (compile-heavy) gradient check; the
    # spinor-based one checks gradients in float32 only, the more fragile precision.
    ("me_ee_to_mumu", {}, 4, False),
    ("me_ee_to_qq", {"flavour": "c"}, 4, False),
    ("me_qq_to_ll", {"flavour": "u"}, 4, True),
    ("me_ee_to_qqg", {"flavour": "b"}, 5, True),
    ("me_ee_to_mumua", {}, 5, "f32"),
]


@pytest.mark.parametrize("name,static,n,grads", ME_CASES, ids=[c[0] for c in ME_CASES])
def test_me_finite_values_and_gradients(dtype, name, static, n, grads):
    rng = np.random.default_rng(11)
    if n == 4:
        base = two_body(91.188, np.concatenate([rng.uniform(-1, 1, 14), [-1.0, 1.0]]),
                        rng.uniform(0, 6.3, 16))
        boosted = base.copy()
        boosted[..., [0, 3]] = base[..., [0, 3]] @ np.array([[1.25, 0.75], [0.75, 1.25]])
        mom = np.concatenate([base, boosted, two_body(13000.0, [0.0, 0.999999], 0.0)])
    else:
        mom = np.concatenate([
            _random_three_body(rng, 12, 1000.0, lo=1e-4),
            _random_three_body(rng, 4, 91.188, lo=0.1),
            # exactly collinear and exactly soft photons/gluons: guarded, finite
            three_body(1000.0, 1.0, 0.5, [0, 0, 1.0])[None],
            three_body(1000.0, 1.0, 1.0, [0, 0, 1.0])[None],
        ])
    mom = jnp.asarray(mom, dtype)
    params = params_of(dtype)
    fn = jax.vmap(functools.partial(getattr(me, name), **static), in_axes=(0, None))
    if not grads or (grads == "f32" and dtype != jnp.float32):
        m2 = batched(name, dtype, **static)(mom, params)
        assert m2.dtype == dtype
        assert np.all(np.isfinite(np.asarray(m2))) and np.all(np.asarray(m2) >= 0.0)
        return

    @jax.jit
    def values_and_grads(p, m):
        # one compilation for the values and the gradients in parameters and momenta
        return fn(m, p), jax.grad(lambda p, m: jnp.sum(jnp.log1p(fn(m, p))), (0, 1))(p, m)

    m2, (g_params, g_mom) = values_and_grads(params, mom)
    assert m2.dtype == dtype
    assert np.all(np.isfinite(np.asarray(m2))) and np.all(np.asarray(m2) >= 0.0)
    for key, g in g_params.items():
        assert np.isfinite(float(g)), key
    assert np.all(np.isfinite(np.asarray(g_mom)))


def test_static_errors():
    params = pp.default_params()
    mom = jnp.asarray(two_body(100.0, 0.1, 0.0), jnp.float32)
    with pytest.raises(ValueError, match="'top'"):
        me.me_ee_to_qq(mom, params, "top")
    with pytest.raises(ValueError, match="'mu'"):
        me.me_ee_to_qq(mom, params, "mu")
    with pytest.raises(ValueError, match="'gluino'"):
        me.me_qq_to_ll(mom, params, "gluino")
    with pytest.raises(ValueError, match="'W'"):
        me.me_ee_to_mumu(mom, params, bosons=("photon", "W"))
    with pytest.raises(ValueError, match="'e'"):
        me.me_ffbar_to_ffbar(mom, params, "e", "e")
    with pytest.raises(ValueError, match="'soft'"):
        me.me_ee_to_mumua(jnp.zeros((5, 4)), params, emission="soft")
    with pytest.raises(ValueError, match="'nu'"):
        xs.sigma_ffbar(100.0, params, "e", "nu")
