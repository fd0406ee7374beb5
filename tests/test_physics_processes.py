"""Process integrands: channel maps + |M|^2 + flux + PDFs + cuts, against independent numbers.

Monte Carlo estimates use fixed seeds and are compared within 4 standard errors with
closed forms (e+e- -> f fbar, three-jet rate), a deterministic quadrature of the
factorised cross section (Drell-Yan), or a second, independent channel weighting
(e+e- -> mu mu gamma: single-diagram-enhanced prior vs the balance heuristic from the maps'
densities).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate
from scipy.special import logsumexp, roots_legendre

from jaxnis.channels import MultiChannelIntegrand
from jaxnis.kinematics import invariant_mass
from jaxnis.physics import cross_sections as xs
from jaxnis.physics import lhapdf, pdf
from jaxnis.physics import parameters as pp
from jaxnis.physics import processes as pr
from tests.conftest import tol
from tests.test_physics_lhapdf import write_set

N_SIGMA = 4.0


def _pull(weights_by_channel, truth):
    """Stratified estimate ``sum_c mean_c`` with its error; returns (estimate, error, pull)."""
    w = np.asarray(weights_by_channel, np.float64)
    assert np.all(np.isfinite(w)), f"{np.sum(~np.isfinite(w))} non-finite weights"
    est = w.mean(axis=-1).sum()
    err = np.sqrt((w.var(axis=-1, ddof=1) / w.shape[-1]).sum())
    return est, err, (est - truth) / err


@functools.cache
def _evaluator(proc):
    """jit(vmap(evaluate)) over (channel, r): one compilation covers every channel."""
    return jax.jit(jax.vmap(proc.multichannel().evaluate, in_axes=(0, 0, None)))


def _stratified(proc, params, n, seed, dtype):
    """Per-channel weights ``alpha_c f J_c`` ``[C, n]`` and the raw ChannelEval."""
    c = proc.n_channels
    ch = jnp.repeat(jnp.arange(c), n)
    r = jax.random.uniform(jax.random.key(seed), (c * n, proc.dim), dtype)
    out = _evaluator(proc)(ch, r, params)
    log_a = jnp.take_along_axis(out.log_prior, ch[:, None], axis=1)[:, 0]
    w = np.exp(np.asarray(out.log_fj + log_a, np.float64)).reshape(c, n)
    return w, out, ch, r


def test_three_jet_b_reference(dtype):
    got = pr.three_jet_b(jnp.asarray([0.05, 0.1], dtype))
    np.testing.assert_allclose(np.asarray(got), [8.647683105625635, 3.6875046806866343],
                               rtol=tol(dtype, 2e-5, 1e-12))


# ----------------------------------------------------------------------------- e+e- -> f fbar


@functools.cache
def _ffbar_integrand(proc):
    return jax.jit(jax.vmap(proc.integrand, in_axes=(0, None)))


@pytest.mark.parametrize("final,sqrt_s,cos_max", [("mu", 91.188, 1.0), ("mu", 1000.0, 0.8),
                                                  ("u", 91.188, 1.0), ("u", 500.0, 0.6)])
def test_ee_to_ffbar_matches_closed_form(dtype, final, sqrt_s, cos_max):
    proc = pr.EEToFFbar(final)
    params = proc.default_params(dtype, sqrt_s=sqrt_s, cos_max=cos_max)
    r = jax.random.uniform(jax.random.key(1), (20000, proc.dim), dtype)
    w = _ffbar_integrand(proc)(r, params)
    assert w.dtype == dtype
    truth = float(proc.reference_sigma(params))
    if cos_max == 1.0:
        np.testing.assert_allclose(truth, float(xs.sigma_ffbar(sqrt_s, params, "e", final)),
                                   rtol=1e-6)
    est, err, pull = _pull(w[None], truth)
    assert abs(pull) < N_SIGMA, (est, err, truth)
    assert err < 0.01 * truth


@pytest.mark.x64
def test_ee_to_ffbar_gradient_through_the_integrand():
    """Pathwise d sigma / d M_Z and d / d Gamma_Z of the Monte Carlo estimate (fixed r)
    agree with the closed form (67.755083 and -1710.5682 pb/GeV at the Z pole)."""
    proc = pr.EEToFFbar("mu")
    params = proc.default_params(jnp.float64)
    r = jax.random.uniform(jax.random.key(2), (20000, proc.dim), jnp.float64)

    def per_event(p):
        return jax.vmap(proc.integrand, in_axes=(0, None))(r, p)

    jac = jax.jit(jax.jacfwd(per_event))(params)  # per-event derivatives, 15 inputs
    for key, truth in (("M_Z", 67.755083), ("Gamma_Z", -1710.5682)):
        est, err, pull = _pull(np.asarray(jac[key])[None], truth)
        assert abs(pull) < N_SIGMA, (key, est, err)
        assert err < 0.02 * abs(truth), (key, err)


# ----------------------------------------------------------------------------- three jets


def test_qqg_three_jet_rate(dtype):
    proc = pr.EEToQQG("u")
    params = proc.default_params(dtype)
    w, out, _, _ = _stratified(proc, params, 20000, 3, dtype)
    truth = float(proc.reference_sigma(params))
    est, err, pull = _pull(w, truth)
    assert abs(pull) < N_SIGMA, (est, err, truth)
    assert err < 0.02 * truth
    lse = logsumexp(np.asarray(out.log_prior, np.float64), axis=1)
    np.testing.assert_allclose(lse, 0.0, atol=tol(dtype, 1e-5, 1e-12))
    assert out.features.shape == (w.size, proc.n_features)


@pytest.mark.x64
def test_multichannel_contract_matches_static_channels():
    proc = pr.EEToQQG("u")  # the same process as above: its evaluator is already compiled
    mc = proc.multichannel()
    assert isinstance(mc, MultiChannelIntegrand)
    assert (mc.dim, mc.n_channels, mc.names) == (5, 2, ("qg", "qbarg"))
    params = proc.default_params(jnp.float64, sqrt_s=250.0, y_cut=0.02)
    r = jax.random.uniform(jax.random.key(4), (64, proc.dim), jnp.float64)
    c = 1  # one static channel: one extra compilation
    static = jax.jit(jax.vmap(functools.partial(proc.integrand, channel=c),
                              in_axes=(0, None)))(r, params)
    out = _evaluator(proc)(jnp.full(64, c), r, params)
    traced = np.exp(np.asarray(out.log_fj + out.log_prior[:, c]))
    np.testing.assert_allclose(traced, np.asarray(static), rtol=1e-12)
    assert np.sum(np.asarray(static) > 0) > 10


# ----------------------------------------------------------------------------- Drell-Yan


def _toy_xf_numpy(x):
    """Toy PDF in float64 numpy: (u, ubar, d, dbar, s) momentum densities."""
    uv = 5.1072 * x**0.8 * (1 - x) ** 3
    dv = 3.06432 * x**0.8 * (1 - x) ** 4
    dbar = 0.1939875 * x**-0.1 * (1 - x) ** 6
    ubar = (1 - x) * dbar
    s = 0.2 * (ubar + dbar)
    return {"u": uv + ubar, "ubar": ubar, "d": dv + dbar, "dbar": dbar, "s": s, "sbar": s}


def _drell_yan_quadrature(params_np, sqrt_s, m_min, epsrel):
    """sigma = int dtau dy sum_q [f_q f_qbar + f_qbar f_q] sigma_hat_q(tau S) in pb, with the
    closed-form partonic cross section and the toy PDF (c = b = 0)."""
    big_s = sqrt_s**2
    flavours = ("u", "d", "s")
    sig_hat = jax.jit(lambda rs: jnp.stack([
        xs.sigma_ffbar(rs, params_np, q, "mu", bosons=("photon", "Z", "Zp"))
        for q in flavours]))
    ty, wy = roots_legendre(96)

    def integrand(log_s):
        s = np.exp(log_s)
        tau = s / big_s
        half = -0.5 * np.log(tau)
        y, wgt = half * ty, half * wy
        x1, x2 = np.sqrt(tau) * np.exp(y), np.sqrt(tau) * np.exp(-y)
        f1, f2 = _toy_xf_numpy(x1), _toy_xf_numpy(x2)
        partonic = np.asarray(sig_hat(np.sqrt(s)), np.float64)
        total = 0.0
        for q, sig in zip(flavours, partonic, strict=True):
            lum = np.sum(wgt * (f1[q] * f2[q + "bar"] + f1[q + "bar"] * f2[q])) / tau
            total += lum * sig
        return total * tau  # d tau = tau d log s

    m_z, m_zp = float(params_np["M_Z"]), float(params_np["M_Zp"])
    edges = np.log([m_min**2, (m_z - 10) ** 2, (m_z + 10) ** 2, (m_zp - 100) ** 2,
                    (m_zp + 100) ** 2, big_s])
    return sum(integrate.quad(integrand, a, b, epsrel=epsrel, limit=200)[0]
               for a, b in zip(edges[:-1], edges[1:], strict=True))


def test_drell_yan_matches_quadrature():
    """float32 run only: the float64 run exercises the same code in the gradient test."""
    dtype = jnp.float32
    proc = pr.DrellYan()
    assert proc.channel_names == ("photon", "Z", "Zp")
    params = proc.default_params(dtype)
    w, out, _, _ = _stratified(proc, params, 12000, 5, dtype)
    # float32: the partonic cross section is single precision, so quad cannot reach 1e-7
    truth = _drell_yan_quadrature(params, 13000.0, 60.0, epsrel=tol(dtype, 1e-5, 1e-7))
    est, err, pull = _pull(w, truth)
    assert abs(pull) < N_SIGMA, (est, err, truth)
    assert err < 0.01 * truth
    lse = logsumexp(np.asarray(out.log_prior, np.float64), axis=1)
    np.testing.assert_allclose(lse, 0.0, atol=tol(dtype, 1e-5, 1e-12))


@pytest.mark.x64
@pytest.mark.parametrize("overrides", [{}, {"M_Zp": 400.0, "Gamma_Zp": 40.0, "m_ll_min": 20.0}])
def test_drell_yan_reference_sigma_matches_adaptive_quadrature(overrides):
    """The library's Gauss-Legendre reference against the independent adaptive quadrature
    above (scipy, epsrel 1e-10), also with a broad Z' and a lower mass cut; its gradient
    in M_Z and M_Z' against central finite differences."""
    proc = pr.DrellYan()
    params = proc.default_params(jnp.float64, **overrides)
    ref = jax.jit(proc.reference_sigma)
    truth = _drell_yan_quadrature(params, 13000.0, float(params["m_ll_min"]), epsrel=1e-10)
    np.testing.assert_allclose(float(ref(params)), truth, rtol=1e-9)
    grad = jax.jit(jax.grad(proc.reference_sigma))(params)
    for name, h in (("M_Z", 1e-4), ("M_Zp", 1e-3)):
        up, down = (float(ref({**params, name: params[name] + d})) for d in (h, -h))
        np.testing.assert_allclose(float(grad[name]), (up - down) / (2 * h), rtol=1e-6)


def test_drell_yan_reference_sigma_refuses_lepton_cuts():
    proc = pr.DrellYan()
    with pytest.raises(ValueError, match="pt_min must be 0"):
        proc.reference_sigma(proc.default_params(pt_min=20.0))
    with pytest.raises(ValueError, match="eta_max must be inf"):
        proc.reference_sigma(proc.default_params(eta_max=2.5))


def test_drell_yan_with_lhapdf_grid_matches_toy(tmp_path):
    """The same events with the toy PDF tabulated in LHAPDF format: per-event agreement at
    the interpolation accuracy (1e-4 relative away from the grid edges)."""
    write_set(tmp_path, "ToyLH")
    grid = lhapdf.load_lhapdf("ToyLH", data_path=tmp_path)
    toy = pr.DrellYan(flavours=("u", "d"))
    gridded = pr.DrellYan(flavours=("u", "d"), pdf=functools.partial(lhapdf.xfxq2, grid))
    params = toy.default_params()
    r = jax.random.uniform(jax.random.key(6), (512, toy.dim))

    def both(rr):
        event, _ = toy.event(rr, params, 1)
        return toy.log_f(event, params), gridded.log_f(event, params), event.x1, event.x2

    a, b, x1, x2 = (np.asarray(v, np.float64) for v in jax.jit(jax.vmap(both))(r))
    inside = (np.maximum(x1, x2) < 0.8) & np.isfinite(a)
    assert inside.sum() > 400
    np.testing.assert_allclose(np.exp(b[inside] - a[inside]), 1.0, atol=2e-4)


@pytest.mark.x64
def test_drell_yan_gradient_matches_finite_differences():
    """d sigma / d M_Z' (and a Z' coupling) through the Breit-Wigner channel map, the PDFs
    and |M|^2 equals a central finite difference of the same-r estimate (two channels and
    one flavour keep the compilation small)."""
    proc = pr.DrellYan(flavours=("u",), bosons=("Z", "Zp"))
    params = proc.default_params(jnp.float64)
    n = 1000
    ch = jnp.repeat(jnp.arange(proc.n_channels), n)
    r = jax.random.uniform(jax.random.key(7), (ch.size, proc.dim), jnp.float64)
    evaluate = jax.vmap(proc.multichannel().evaluate, in_axes=(0, 0, None))

    def estimate(p):
        out = evaluate(ch, r, p)
        log_a = jnp.take_along_axis(out.log_prior, ch[:, None], axis=1)[:, 0]
        return jnp.sum(jnp.exp(out.log_fj + log_a)) / n

    value_and_grad = jax.jit(jax.value_and_grad(estimate))
    value, grad = value_and_grad(params)
    assert np.isfinite(float(value)) and float(value) > 0
    for key in ("M_Zp", "gA_Zp_u"):
        h = 1e-5 * max(1.0, abs(float(params[key])))
        up = float(value_and_grad({**params, key: params[key] + h})[0])
        down = float(value_and_grad({**params, key: params[key] - h})[0])
        np.testing.assert_allclose(float(grad[key]), (up - down) / (2 * h), rtol=1e-5,
                                   err_msg=key)
    assert all(np.isfinite(float(g)) for g in grad.values())


# ----------------------------------------------------------------------------- mu mu gamma


def test_mumugamma_finite_and_normalised():
    """float32 (the float64 run checks the same and more in the next test)."""
    dtype = jnp.float32
    proc = pr.EEToMuMuGamma()
    assert proc.channel_names == ("isr_photon", "isr_Z", "isr_Zp", "fsr_mu", "fsr_mubar")
    params = proc.default_params(dtype)
    w, out, _, _ = _stratified(proc, params, 2000, 8, dtype)
    assert out.log_fj.dtype == dtype
    assert not np.any(np.isnan(np.asarray(out.log_fj)))
    assert np.all(np.isfinite(w))
    assert (w > 0).mean() > 0.8  # most events pass the cuts
    lse = logsumexp(np.asarray(out.log_prior, np.float64), axis=1)
    np.testing.assert_allclose(lse, 0.0, atol=tol(dtype, 1e-5, 1e-12))


@pytest.mark.x64
def test_mumugamma_sde_prior_matches_balance_heuristic():
    """Two independent channel weightings of the same stratified samples give the same
    cross section: the single-diagram-enhanced prior, and the balance heuristic
    ``alpha_c = g_c / sum_j g_j`` with each map's density ``g_j = 1 / J_j`` from its
    inverse. Also: each channel inverts its own events, and at the Z' pole the ISR-Z'
    channel carries the prior."""
    proc = pr.EEToMuMuGamma()
    params = proc.default_params(jnp.float64)
    n_ch = proc.n_channels

    def one(c, r):
        branches = [lambda rr, j=j: proc.event(rr, params, j) for j in range(n_ch)]
        event, log_j = jax.lax.switch(c, branches, r)
        log_g = jnp.stack([proc.inverse(event, params, j)[1] for j in range(n_ch)])
        m_mumu = invariant_mass(event.momenta[2], event.momenta[3])
        return (proc.log_f(event, params), log_j, log_g, proc.log_prior(event, params),
                m_mumu)

    n = 12000
    ch = jnp.repeat(jnp.arange(n_ch), n)
    r = jax.random.uniform(jax.random.key(9), (ch.size, proc.dim), jnp.float64)
    log_f, log_j, log_g, log_p, m_mumu = (
        np.asarray(v) for v in jax.jit(jax.vmap(one))(ch, r))
    c = np.asarray(ch)
    rows = np.arange(c.size)
    ok = np.isfinite(log_j)
    np.testing.assert_allclose(log_g[rows, c][ok] + log_j[ok], 0.0, atol=1e-6)
    sde = np.exp(log_f + log_j + log_p[rows, c]).reshape(n_ch, n)
    bh = np.exp(log_f - logsumexp(log_g, axis=1)).reshape(n_ch, n)
    est_sde, err_sde, _ = _pull(sde, 0.0)
    est_bh, err_bh, _ = _pull(bh, 0.0)
    diff, err_diff, pull = _pull(sde - bh, 0.0)
    assert abs(pull) < N_SIGMA, (est_sde, err_sde, est_bh, err_bh)
    assert err_sde < 0.02 * est_sde and err_bh < 0.02 * est_bh
    m_zp, g_zp = float(params["M_Zp"]), float(params["Gamma_Zp"])
    peak = np.abs(m_mumu - m_zp) < g_zp
    assert peak.sum() > 100
    assert np.mean(np.exp(log_p[peak, 2])) > 0.8
    m_z = float(params["M_Z"])
    z_peak = np.abs(m_mumu - m_z) < 2.5
    assert z_peak.sum() > 100
    assert np.mean(np.exp(log_p[z_peak, 1])) > 0.8


# ----------------------------------------------------------------------------- validation


def test_settings_validation():
    with pytest.raises(ValueError, match="y_cut = 0.5"):
        pr.EEToQQG().default_params(y_cut=0.5)
    with pytest.raises(ValueError, match="nu = 1.2"):
        pr.EEToQQG().default_params(nu=1.2)
    with pytest.raises(ValueError, match="m_ll_min = 20000"):
        pr.DrellYan().default_params(m_ll_min=20000.0)
    with pytest.raises(ValueError, match="sqrt_s = -1"):
        pr.EEToFFbar().default_params(sqrt_s=-1.0)
    with pytest.raises(ValueError, match="nu_fsr"):
        pr.EEToMuMuGamma().default_params(nu_fsr=1.0)
    with pytest.raises(ValueError, match="'Gamma_W'"):
        pr.EEToFFbar().default_params(Gamma_W=2.0)
    with pytest.raises(ValueError, match="'t'"):
        pr.EEToQQG("t")
    with pytest.raises(ValueError, match="'e'"):
        pr.EEToFFbar("e")
    with pytest.raises(ValueError, match="'top'"):
        pr.DrellYan(flavours=("u", "top"))
    with pytest.raises(ValueError, match="'nu'"):
        pr.DrellYan(lepton="nu")
    with pytest.raises(ValueError, match="'W'"):
        pr.EEToMuMuGamma(bosons=("Z", "W"))
    with pytest.raises(ValueError, match="needs params"):
        pr.EEToQQG().integrand(jnp.zeros(5), pp.default_params())
    # Values edited into a parameter dict by hand are checked where they are concrete.
    dy = pr.DrellYan()
    params = dy.default_params()
    with pytest.raises(ValueError, match="M_Z = -91.0 must be positive"):
        dy.reference_sigma({**params, "M_Z": -91.0})
    with pytest.raises(ValueError, match="m_ll_min = 20000.0 must be in"):
        dy.event(jnp.full(dy.dim, 0.5), {**params, "m_ll_min": 20000.0})
    with pytest.raises(ValueError, match="y_cut = 0.5"):
        pr.EEToQQG().reference_sigma({**pr.EEToQQG().default_params(), "y_cut": 0.5})
    with pytest.raises(ValueError, match="Gamma_Z = -1.0 must not be negative"):
        pr.EEToFFbar("mu").reference_sigma({**pr.EEToFFbar("mu").default_params(),
                                            "Gamma_Z": -1.0})
    # traced values pass (the gradient of sigma in M_Z), and so do extra keys
    d_sigma = jax.grad(lambda m: dy.reference_sigma({**params, "M_Z": m}))(params["M_Z"])
    assert np.isfinite(d_sigma)
    assert dy.reference_sigma({**params, "m_lo": 740.0}) == dy.reference_sigma(params)
    # the toy PDF is the default parton density
    assert pr.DrellYan().pdf is None and pdf.TOY_Q0 == pytest.approx(2**0.5)


@pytest.mark.parametrize("make", [lambda: pr.EEToFFbar("mu"), lambda: pr.EEToQQG("u"),
                                  lambda: pr.DrellYan(), lambda: pr.EEToMuMuGamma()],
                         ids=["ee_mumu", "ee_qqg", "drell_yan", "mumugamma"])
def test_integrands_finite_on_the_edges_of_the_hypercube(make, dtype):
    """Every channel, at points built from {0, eps, 1/2, 1 - eps, 1} in each coordinate
    (the limits where maps become singular) and random points: log(alpha f J) is finite or
    -inf (weight zero, e.g. cut), never NaN or +inf, in float32 and float64."""
    proc = make()
    params = proc.default_params(dtype)
    eps = float(jnp.finfo(dtype).eps)
    levels = jnp.asarray([0.0, eps, 0.5, 1.0 - eps, 1.0], dtype)
    key = jax.random.key(7)
    picks = jax.random.randint(key, (256, proc.dim), 0, levels.shape[0])
    edges = jnp.concatenate([levels[picks], jnp.zeros((1, proc.dim), dtype),
                             jnp.ones((1, proc.dim), dtype)])
    r = jnp.concatenate([edges, jax.random.uniform(key, (256, proc.dim), dtype)])
    c = proc.n_channels
    ch = jnp.repeat(jnp.arange(c), r.shape[0])
    out = _evaluator(proc)(ch, jnp.tile(r, (c, 1)), params)
    log_w = np.asarray(out.log_fj + jnp.take_along_axis(out.log_prior, ch[:, None], 1)[:, 0])
    assert not np.any(np.isnan(log_w)), f"{np.sum(np.isnan(log_w))} NaN log weights"
    assert not np.any(log_w == np.inf), "log weight +inf"
    assert np.any(np.isfinite(log_w)), "every point has weight zero"
