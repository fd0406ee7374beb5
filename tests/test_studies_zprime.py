"""Z' studies in Drell-Yan: gradients through parameter-dependent maps, moving cuts,
reweighting, a fit to pseudo-data and joint score / likelihood ratio.

The process is a light Drell-Yan (u quarks, Z and Z' exchange, two channels, each a
Breit-Wigner luminosity map that follows its boson's mass and width) so that the few
compiled functions stay cheap. The finite-difference tests run in the float64 process, the
statistical ones (reweighting, fit, SBI) in the 32-bit one; each compiled function is
shared across tests (same static arguments and shapes).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnis import studies as st
from jaxnis.physics.processes import DrellYan

PROC = DrellYan(flavours=("u",), bosons=("Z", "Zp"))
ZP_COUPLINGS = ("gV_Zp_l", "gA_Zp_l", "gV_Zp_u", "gA_Zp_u", "gV_Zp_d", "gA_Zp_d")
N_EVENTS = 2 * 8192

_STATIC = ("integrand", "n", "wrt", "mode")
grad_jit = jax.jit(st.cross_section_and_grad, static_argnames=_STATIC)
value_jit = jax.jit(st.cross_section, static_argnames=("integrand", "n"))
weights_jit = jax.jit(st.per_event_weights, static_argnames=("integrand",))
generate_jit = jax.jit(st.generate_events, static_argnames=("integrand", "n"))
reweight_jit = jax.jit(st.reweight, static_argnames=("integrand",))
augment_jit = jax.jit(st.augment, static_argnames=("integrand", "wrt"))


def base_params(dtype, **extra):
    params = PROC.default_params(dtype, m_ll_min=550.0)
    return {**params, **{k: jnp.asarray(v, dtype) for k, v in extra.items()}}


def physics(params, fit_params):
    """Physics parameters from the fitted ``M_Zp`` and an overall Z' coupling scale."""
    out = {**params, "M_Zp": fit_params["M_Zp"]}
    for k in ZP_COUPLINGS:
        out[k] = params[k] * fit_params["g_Zp"]
    return out


def points(seed, dtype, n=N_EVENTS):
    """Uniform points, both channels in one ``lax.switch`` layout (``counts=None``): one copy
    of the matrix element in the compiled code instead of one per channel block, which
    halves compile times (the block layout is tested against it in ``test_studies.py``)."""
    pts = st.uniform_points(jax.random.key(seed), n, PROC.dim, PROC.n_channels, dtype)
    return st.Points(pts.r, pts.log_q, pts.channel, None)


def fd(integrand, params, name, h, pts):
    """Central difference with common random numbers (one compiled weight function)."""
    up = weights_jit(integrand, {**params, name: params[name] + h}, pts)
    down = weights_jit(integrand, {**params, name: params[name] - h}, pts)
    return st.stratified_mean((up - down) / (2.0 * h), pts, PROC.n_channels)


# ---------------------------------------------------------------------------- gradients (x64)


@pytest.mark.x64
def test_zprime_gradients_match_central_differences():
    """Pathwise d sigma / d(M_Z', Gamma_Z', g_A^l) through the Breit-Wigner map that follows
    the Z' equals central differences with common random numbers."""
    dtype = jnp.float64
    params = base_params(dtype)
    pts = points(11, dtype, n=2 * 4096)
    wrt = ("M_Zp", "Gamma_Zp", "gA_Zp_l")
    est = grad_jit(PROC, params, wrt=wrt, points=pts)
    for name, h in (("M_Zp", 1e-2), ("Gamma_Zp", 1e-2), ("gA_Zp_l", 1e-5)):
        got, err = float(est.grad[name]), float(est.grad_error[name])
        assert abs(got) > 5 * err, (name, got, err)  # a gradient that the test can see
        ref = fd(PROC, params, name, h, pts)
        # same points: the two differ only by the O(h^2) truncation of the difference
        assert got == pytest.approx(float(ref.value), rel=1e-6), name
        assert err == pytest.approx(float(ref.error), rel=1e-4), name


@pytest.mark.x64
def test_moving_mass_window_bias_and_mass_window_remedy():
    """A fixed m_ll window [740, 900] GeV while the Z' map moves events with M_Z' at fixed r.

    The hard cut's pathwise gradient misses the flux of events through the window edges;
    central differences with common random numbers see it. Mapping the window onto r[0]
    with each channel's own map (``mass_window``) gives an unbiased pathwise gradient.
    """
    dtype = jnp.float64
    params = base_params(dtype, m_lo=740.0, m_hi=900.0)
    pts = points(12, dtype)
    hard = st.window(PROC, st.pair_mass, lo="m_lo", hi="m_hi")
    biased = grad_jit(hard, params, wrt=("M_Zp",), points=pts)
    # h = 1 GeV << Gamma_Z' = 22.5 GeV: O(h^2) truncation ~ 1e-3 relative, well below error
    ref = fd(hard, params, "M_Zp", 1.0, pts)
    gap = float(ref.value) - float(biased.grad["M_Zp"])
    assert abs(gap) > 5 * float(ref.error), (float(ref.value), float(biased.grad["M_Zp"]))

    remedy = st.mass_window(PROC, "m_lo", "m_hi")
    good = grad_jit(remedy, params, wrt=("M_Zp",), points=pts)
    both = np.hypot(float(ref.error), float(good.grad_error["M_Zp"]))
    assert abs(float(good.grad["M_Zp"]) - float(ref.value)) < 3 * both
    # same window, same value within errors (different maps of the same integral)
    assert abs(float(good.value) - float(biased.value)) < 3 * np.hypot(float(good.error),
                                                                       float(biased.error))
    # with the window fixed in u the estimate is smooth: CRN differences = pathwise
    smooth_ref = fd(remedy, params, "M_Zp", 1e-2, pts)
    assert float(good.grad["M_Zp"]) == pytest.approx(float(smooth_ref.value), rel=1e-6)


# ---------------------------------------------------------------------------- reweighting


def test_reweighting_matches_direct_cross_section():
    """Reweighting fixed events (momenta) to a new Z' mass and coupling equals a direct
    estimate; a ratio at fixed random numbers without the Jacobian ratio does not."""
    dtype = jnp.float32
    params0 = base_params(dtype)
    params1 = physics(params0, {"M_Zp": jnp.asarray(765.0, dtype),
                                "g_Zp": jnp.asarray(1.1, dtype)})
    pts = points(13, dtype)
    sample = generate_jit(PROC, params0, points=pts)
    np.testing.assert_allclose(reweight_jit(PROC, sample, params0), sample.weight, rtol=1e-6)
    w1 = reweight_jit(PROC, sample, params1)
    rw = st.sample_cross_section(sample, w1)
    direct = value_jit(PROC, params1, points=points(14, dtype))
    both = np.hypot(float(rw.error), float(direct.error))
    assert abs(float(rw.value) - float(direct.value)) < 3 * both, (rw, direct)
    # the reweighted sample keeps most of its statistical power
    ess0 = float(st.effective_sample_size(sample.weight))
    assert 0.3 * ess0 < float(st.effective_sample_size(w1)) < ess0

    # wrong: hold r fixed, let the events move with the map, and take only f1(x1) / f0(x0)
    moved = generate_jit(PROC, params1, points=pts)
    alive = jnp.isfinite(sample.log_f) & jnp.isfinite(moved.log_f)
    naive_w = jnp.where(alive, sample.weight * jnp.exp(jnp.where(
        alive, moved.log_f - sample.log_f, 0.0)), 0.0)
    # against the direct estimate on the same r (common random numbers) the per-event
    # difference is f1(x1) (J0 - J1) / q: the Jacobian ratio the naive ratio leaves out
    diff = st.sample_cross_section(sample, naive_w - moved.weight)
    assert abs(float(diff.value)) > 5 * float(diff.error), diff


# ---------------------------------------------------------------------------- fit


def test_zprime_fit_recovers_injected_mass_and_coupling():
    """Fit M_Z' and the Z' coupling scale to Poisson pseudo-data in 30 m_ll bins; the
    binned prediction reweights one fixed event sample (exact bins, moving weights)."""
    dtype = jnp.float32
    params0 = base_params(dtype)
    sample = generate_jit(PROC, params0, points=points(13, dtype))
    m_ll = jax.vmap(st.pair_mass)(sample.events)
    edges = jnp.linspace(600.0, 900.0, 31, dtype=dtype)
    lumi = 1000.0  # pb^-1: about 800 events in the window, 380 in the peak bins

    def expected(fp, sample, m_ll):
        weights = st.reweight(PROC, sample, physics(params0, fp))
        return lumi * st.histogram(m_ll, weights, edges)

    truth = {"M_Zp": jnp.asarray(750.0, dtype), "g_Zp": jnp.asarray(1.0, dtype)}
    nu = np.asarray(jax.jit(expected)(truth, sample, m_ll), np.float64)
    observed = np.random.default_rng(15).poisson(nu, size=(10, nu.size))
    init = {"M_Zp": jnp.asarray(740.0, dtype), "g_Zp": jnp.asarray(0.9, dtype)}
    scale = {"M_Zp": jnp.asarray(5.0, dtype), "g_Zp": jnp.asarray(0.05, dtype)}

    @jax.jit
    def fit_all(observed, sample, m_ll):
        def one(obs):
            return st.fit(lambda fp: st.poisson_nll(expected(fp, sample, m_ll), obs), init,
                          scale=scale)

        return jax.vmap(one)(observed)

    res = fit_all(jnp.asarray(observed, dtype), sample, m_ll)
    for k in truth:
        err = np.asarray(res.errors[k])
        assert np.all(np.isfinite(err) & (err > 0)), k
        pulls = (np.asarray(res.params[k]) - float(truth[k])) / err
        assert np.sum(np.abs(pulls) < 2.0) >= 8, (k, pulls)
    assert float(np.median(res.errors["M_Zp"])) < 1.5  # GeV: the peak is resolved
    assert float(np.max(res.grad_norm)) < 0.5  # converged (rescaled units)


# ---------------------------------------------------------------------------- SBI


def test_joint_score_and_likelihood_ratio_expectations():
    """Over events generated at theta1: E[t(theta1)] = 0 and E[p(theta0) / p(theta1)] = 1
    (5 sigma), with sigma and grad sigma from independent pathwise estimates."""
    dtype = jnp.float32
    params0 = base_params(dtype)
    params1 = {**params0, "M_Zp": jnp.asarray(760.0, dtype),
               "gA_Zp_l": params0["gA_Zp_l"] * 1.1}
    wrt = ("M_Zp", "gA_Zp_l")
    sample = generate_jit(PROC, params1, points=points(16, dtype))
    norm1 = grad_jit(PROC, params1, wrt=wrt, points=points(17, dtype))
    norm0 = value_jit(PROC, params0, points=points(18, dtype))
    data = augment_jit(PROC, sample, params1, wrt, norm=norm1, params_alt=params0, norm_alt=norm0)
    assert data.log_r.shape == (N_EVENTS,) and data.score["M_Zp"].shape == (N_EVENTS,)
    alive = np.asarray(sample.weight) > 0
    assert np.all(np.isfinite(np.asarray(data.log_p)[alive]))

    sigma1, dsigma1 = float(norm1.value), float(norm1.error)
    for k in wrt:
        mean = st.sample_mean(sample, data.score[k])
        g, dg = float(norm1.grad[k]), float(norm1.grad_error[k])
        err_norm = np.hypot(dg / sigma1, g * dsigma1 / sigma1**2)
        assert abs(float(mean.value)) < 5 * np.hypot(float(mean.error), err_norm), k
        # the score is not trivially zero: its spread is much larger than the test's error
        assert float(jnp.std(data.score[k][alive])) > 20 * np.hypot(float(mean.error),
                                                                   err_norm)

    ratio = st.sample_mean(sample, jnp.exp(data.log_r))
    rel_norm = np.hypot(float(norm0.error) / float(norm0.value), dsigma1 / sigma1)
    err = np.hypot(float(ratio.error), float(ratio.value) * rel_norm)
    assert abs(float(ratio.value) - 1.0) < 5 * err, (float(ratio.value), err)
    assert float(jnp.std(jnp.exp(data.log_r[alive]))) > 0.05  # theta0 != theta1 visibly


def test_self_normalised_score_has_zero_weighted_mean():
    """Without an external normalisation the score is centred by construction."""
    dtype = jnp.float32
    params0 = base_params(dtype)
    sample = generate_jit(PROC, params0, points=points(13, dtype))
    data = jax.jit(functools.partial(st.augment, PROC, wrt=("M_Zp",)))(sample, params0)
    mean = jnp.sum(sample.weight * data.score["M_Zp"]) / jnp.sum(sample.weight)
    assert abs(float(mean)) < 1e-4 * float(jnp.std(data.score["M_Zp"]))
    assert data.log_r is None
