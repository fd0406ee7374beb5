"""Differentiable parameter studies on e+e- -> mu+mu- and plain functions (cheap to compile).

Gradients through the Monte Carlo estimate against the reference derivatives of
REFERENCES.md, the moving-cut bias and its remedies on the ``cos_max`` cut, scans against
loops, histograms, likelihoods, fits and observables. The Z' (Drell-Yan) studies are in
``test_studies_zprime.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.integrate
import scipy.stats

from jaxnis import studies as st
from jaxnis.flows.flow import make_flow
from jaxnis.physics import cross_sections as xs
from jaxnis.physics.processes import EEToFFbar
from tests.conftest import tol

PROC = EEToFFbar("mu")
# REFERENCES.md: e+e- -> mu+mu- at sqrt(s) = 91.188 GeV (photon + Z)
SIGMA_MUMU = 2099.2653903
DSIGMA_DMZ = 67.755083
DSIGMA_DGZ = -1710.5682
N_SIGMA = 3.0

_STATIC = ("integrand", "n", "wrt", "mode")
grad_jit = jax.jit(st.cross_section_and_grad, static_argnames=_STATIC)
value_jit = jax.jit(st.cross_section, static_argnames=("integrand", "n"))
weights_jit = jax.jit(st.per_event_weights, static_argnames=("integrand",))
per_event_jit = jax.jit(st.per_event_value_and_grad, static_argnames=("integrand", "wrt", "mode"))
scan_jit = jax.jit(st.scan_cross_section, static_argnames=_STATIC + ("chunk", "event_chunk"))


def _fd(integrand, params, name, h, points):
    """Central difference with common random numbers from one compiled weight function."""
    up = weights_jit(integrand, {**params, name: params[name] + h}, points)
    down = weights_jit(integrand, {**params, name: params[name] - h}, points)
    return st.stratified_mean((up - down) / (2.0 * h), points, 1)


# ---------------------------------------------------------------------------- gradients


def test_ee_mumu_gradient_matches_reference(dtype):
    """d sigma / d M_Z and d sigma / d Gamma_Z through the MC estimate (REFERENCES.md)."""
    params = PROC.default_params(dtype, sqrt_s=91.188)
    est = grad_jit(PROC, params, jax.random.key(1), n=1 << 16, wrt=("M_Z", "Gamma_Z"))
    assert est.value.dtype == dtype and est.grad["M_Z"].dtype == dtype
    for got, err, want in ((est.value, est.error, SIGMA_MUMU),
                           (est.grad["M_Z"], est.grad_error["M_Z"], DSIGMA_DMZ),
                           (est.grad["Gamma_Z"], est.grad_error["Gamma_Z"], DSIGMA_DGZ)):
        got, err = float(got), float(err)
        assert 0 < err < 0.02 * abs(want), (got, err, want)
        assert abs(got - want) < N_SIGMA * err, (got, err, want)


def test_forward_and_reverse_per_event_gradients_agree(dtype):
    params = PROC.default_params(dtype, sqrt_s=91.188)
    points = st.uniform_points(jax.random.key(2), 256, PROC.dim, 1, dtype)
    w_f, g_f = per_event_jit(PROC, params, points, wrt=("M_Z", "alpha"), mode="fwd")
    w_r, g_r = per_event_jit(PROC, params, points, wrt=("M_Z", "alpha"), mode="rev")
    np.testing.assert_allclose(w_f, w_r, rtol=tol(dtype, 1e-6, 1e-13))
    for k in ("M_Z", "alpha"):
        assert g_f[k].shape == (256,)
        np.testing.assert_allclose(g_f[k], g_r[k], rtol=tol(dtype, 1e-5, 1e-12),
                                   atol=tol(dtype, 1e-5, 1e-12) * float(jnp.max(jnp.abs(g_r[k]))))
    # the per-event weights average to the estimate
    assert float(jnp.mean(w_f)) == pytest.approx(float(value_jit(PROC, params,
                                                                 points=points).value),
                                                 rel=tol(dtype, 1e-5, 1e-12))


def test_function_integrand_gradient_matches_closed_form():
    """int_0^1 int_0^1 exp(-a r0) (1 + b r1) dr = (1 - e^-a)/a (1 + b/2): value and gradient."""
    fn = st.FunctionIntegrand(lambda r, p: jnp.exp(-p["a"] * r[0]) * (1 + p["b"] * r[1]), 2)
    params = {"a": jnp.asarray(1.5), "b": jnp.asarray(0.5)}
    est = grad_jit(fn, params, jax.random.key(3), n=1 << 15, wrt=None)
    a, b = 1.5, 0.5
    i_a = (1 - math.exp(-a)) / a
    want = {"a": (math.exp(-a) * (1 + a) - 1) / a**2 * (1 + b / 2), "b": i_a / 2}
    assert abs(float(est.value) - i_a * (1 + b / 2)) < N_SIGMA * float(est.error)
    for k, v in want.items():
        assert abs(float(est.grad[k]) - v) < N_SIGMA * float(est.grad_error[k]), k


@dataclasses.dataclass(frozen=True)
class _TwoMaps(st.Integrand):
    """Two channels for int_0^1 exp(-a x) dx: x = r and x = r^2, alpha = 1/2 each."""

    dim: int = 1
    n_channels: int = 2

    def weight_and_event(self, r, params, channel):
        maps = [lambda r: (r[0], jnp.ones_like(r[0])), lambda r: (r[0] ** 2, 2.0 * r[0])]
        x, jac = (maps[channel](r) if isinstance(channel, int)
                  else jax.lax.switch(channel, maps, r))
        return 0.5 * jnp.exp(-params["a"] * x) * jac, None


def test_channel_blocks_equal_switch_layout(dtype):
    """Static channel blocks and the traced-channel layout give the same estimate, and the
    stratified multi-channel estimate and gradient match the closed form."""
    integrand = _TwoMaps()
    params = {"a": jnp.asarray(2.0, dtype)}
    blocks = st.uniform_points(jax.random.key(11), 1 << 14, 1, 2, dtype)
    assert blocks.counts == (1 << 13, 1 << 13)
    switch = st.Points(blocks.r, blocks.log_q, blocks.channel, None)
    a = grad_jit(integrand, params, wrt=("a",), points=blocks)
    b = grad_jit(integrand, params, wrt=("a",), points=switch)
    for x, y in ((a.value, b.value), (a.error, b.error), (a.grad["a"], b.grad["a"])):
        np.testing.assert_allclose(x, y, rtol=tol(dtype, 1e-6, 1e-13))
    value = (1 - math.exp(-2.0)) / 2.0
    deriv = (math.exp(-2.0) * 3.0 - 1.0) / 4.0  # d/da (1 - e^-a)/a at a = 2
    assert abs(float(a.value) - value) < N_SIGMA * float(a.error)
    assert abs(float(a.grad["a"]) - deriv) < N_SIGMA * float(a.grad_error["a"])


def test_flow_points_hold_a_flow_fixed():
    """A (randomly perturbed) flow as the fixed sampler: unbiased value and gradient."""
    flow = make_flow(2, n_bins=6, hidden=(8,))
    flow_params = flow.init(jax.random.key(4))
    leaves, tree = jax.tree.flatten(flow_params)
    keys = jax.random.split(jax.random.key(5), len(leaves))
    flow_params = jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape, x.dtype)
                                            for x, k in zip(leaves, keys, strict=True)])
    # 2^16 points and the wrt of the reference test: the same compiled gradient is reused
    points = jax.jit(st.flow_points, static_argnums=(1, 2))(jax.random.key(6), 1 << 16, flow,
                                                            flow_params)
    assert float(jnp.std(points.log_q)) > 0.05  # not the identity
    params = PROC.default_params(sqrt_s=91.188)
    est = grad_jit(PROC, params, wrt=("M_Z", "Gamma_Z"), points=points)
    assert abs(float(est.value) - SIGMA_MUMU) < N_SIGMA * float(est.error)
    assert abs(float(est.grad["Gamma_Z"]) - DSIGMA_DGZ) < N_SIGMA * float(est.grad_error["Gamma_Z"])


def test_static_mistakes_raise():
    params = PROC.default_params()
    with pytest.raises(ValueError, match="string"):
        st.cross_section_and_grad(PROC, params, jax.random.key(0), 64, wrt="M_Z")
    with pytest.raises(ValueError, match="Q_Z"):
        st.cross_section_and_grad(PROC, params, jax.random.key(0), 64, wrt=("Q_Z",))
    with pytest.raises(ValueError, match="mode"):
        st.cross_section_and_grad(PROC, params, jax.random.key(0), 64, wrt=("M_Z",), mode="x")
    with pytest.raises(ValueError, match="n=3"):
        st.uniform_points(jax.random.key(0), 3, 2, n_channels=2)
    with pytest.raises(ValueError, match="dim"):
        st.as_integrand(lambda r, p: r[0])
    with pytest.raises(ValueError, match="key and n"):
        st.cross_section(PROC, params)
    with pytest.raises(ValueError, match="axis 5"):
        st.restrict(PROC, 5, lambda p, c: (0.0, 1.0))
    with pytest.raises(ValueError, match="luminosity"):
        st.mass_window(PROC, "m_lo", "m_hi")
    with pytest.raises(ValueError, match="unknown parameters"):
        st.scan_cross_section(PROC, params, {"m_top": jnp.ones(3)}, jax.random.key(0), 64)
    with pytest.raises(ValueError, match="1-D of one length"):
        st.scan_cross_section(PROC, params, {"M_Z": jnp.ones(3), "Gamma_Z": jnp.ones(2)},
                              jax.random.key(0), 64)


# ---------------------------------------------------------------------------- moving cuts


def _g_abs_cos(c, params):
    """d sigma / d|cos theta| of e+e- -> mu+mu- at |cos theta| = c (closed form)."""
    return float(xs.dsigma_dcos_ffbar(c, params["sqrt_s"], params, "e", "mu")
                 + xs.dsigma_dcos_ffbar(-c, params["sqrt_s"], params, "e", "mu"))


@pytest.mark.x64
def test_cos_max_cut_pathwise_bias_and_remedies():
    """A cut |cos theta| <= cos_max with cos_max the parameter: the boundary moves in r.

    The hard cut's pathwise gradient is exactly zero (the indicator is flat at fixed r) while
    central differences with common random numbers recover the closed-form derivative; the
    restricted map and the smoothed cut give unbiased (resp. O(tau^2)-biased) gradients.
    """
    dtype = jnp.float64
    params = PROC.default_params(dtype, sqrt_s=91.188, cos_max=0.8)
    want = float(jax.grad(lambda c: PROC.reference_sigma({**params, "cos_max": c}))(
        params["cos_max"]))
    points = st.uniform_points(jax.random.key(7), 1 << 16, PROC.dim, 1, dtype)

    hard = grad_jit(PROC, params, wrt=("cos_max",), points=points)
    fd = _fd(PROC, params, "cos_max", 0.01, points)  # O(h^2) bias ~ 1e-4 relative here
    assert float(hard.grad["cos_max"]) == 0.0  # the boundary term is missed entirely
    assert abs(float(fd.value) - want) < N_SIGMA * float(fd.error)
    assert abs(float(fd.value) - float(hard.grad["cos_max"])) > 10 * float(fd.error)

    # remedy 1: map r[0] = (1 + cos) / 2 onto the cut region, support fixed in u
    rest = st.restrict(PROC, 0, lambda p, c: ((1 - p["cos_max"]) / 2, (1 + p["cos_max"]) / 2))
    good = grad_jit(rest, params, wrt=("cos_max",), points=points)
    assert abs(float(good.value) - float(PROC.reference_sigma(params))) < N_SIGMA * float(
        good.error)
    assert abs(float(good.grad["cos_max"]) - want) < N_SIGMA * float(good.grad_error["cos_max"])
    assert abs(float(good.grad["cos_max"]) - float(fd.value)) < N_SIGMA * float(fd.error)
    # with common random numbers in u the restricted estimate is smooth: FD = pathwise
    fd_rest = _fd(rest, params, "cos_max", 1e-4, points)
    assert float(fd_rest.value) == pytest.approx(float(good.grad["cos_max"]), rel=1e-6)

    # remedy 2: logistic smoothing of width tau; bias (pi^2 tau^2 / 6) g''(c)
    tau = 0.01
    smooth_params = {**params, "cos_max": jnp.asarray(1.0, dtype), "cos_cut": params["cos_max"],
                     "tau": jnp.asarray(tau, dtype)}
    smooth = st.window(PROC, st.abs_cos_theta_star, hi="cos_cut", width="tau")
    soft = grad_jit(smooth, smooth_params, wrt=("cos_cut",), points=points)
    c = 0.8
    g2 = (_g_abs_cos(c + 1e-3, params) - 2 * _g_abs_cos(c, params)
          + _g_abs_cos(c - 1e-3, params)) / 1e-6
    bias = float(st.smoothing_bias(g2, tau))
    # the smoothed derivative, by quadrature: int g(v) sigma'((c - v)/tau)/tau dv
    smoothed = scipy.integrate.quad(
        lambda v: _g_abs_cos(v, params) * scipy.stats.logistic.pdf((c - v) / tau) / tau,
        0.0, 1.0, points=[c], limit=200)[0]
    assert smoothed - want == pytest.approx(bias, rel=0.05)
    assert abs(float(soft.grad["cos_cut"]) - smoothed) < N_SIGMA * float(
        soft.grad_error["cos_cut"])
    # the price: events within tau of the edge carry the boundary term (variance ~ 1/tau)
    assert float(soft.grad_error["cos_cut"]) > 5 * float(good.grad_error["cos_max"])


# ---------------------------------------------------------------------------- scans


def test_scan_equals_loop_and_closed_form(dtype):
    """A vmap scan over sqrt(s) (common random numbers) equals a loop of single calls."""
    params = PROC.default_params(dtype)
    grid = {"sqrt_s": jnp.linspace(86.0, 96.0, 8, dtype=dtype)}
    points = st.uniform_points(jax.random.key(8), 4096, PROC.dim, 1, dtype)
    out = scan_jit(PROC, params, grid, points=points, wrt=("M_Z",))
    # grid blocks of 3 and point blocks of 1000: both tilings pad their last block
    chunked = scan_jit(PROC, params, grid, points=points, wrt=("M_Z",), chunk=3,
                       event_chunk=1000)
    untiled = scan_jit(PROC, params, grid, points=points, wrt=("M_Z",), event_chunk=None)
    rtol = tol(dtype, 2e-6, 1e-13)
    for g, s in enumerate(np.asarray(grid["sqrt_s"])):
        single = grad_jit(PROC, {**params, "sqrt_s": jnp.asarray(s, dtype)}, wrt=("M_Z",),
                          points=points)
        np.testing.assert_allclose(out.value[g], single.value, rtol=rtol)
        np.testing.assert_allclose(out.error[g], single.error, rtol=10 * rtol)
        np.testing.assert_allclose(out.grad["M_Z"][g], single.grad["M_Z"], rtol=10 * rtol)
    for other in (chunked, untiled):
        np.testing.assert_allclose(other.value, out.value, rtol=rtol)
        np.testing.assert_allclose(other.error, out.error, rtol=10 * rtol)
        np.testing.assert_allclose(other.grad["M_Z"], out.grad["M_Z"], rtol=10 * rtol)
    truth = np.asarray(xs.sigma_ffbar(grid["sqrt_s"], params, "e", "mu"))
    pulls = (np.asarray(out.value) - truth) / np.asarray(out.error)
    # eight correlated points (common random numbers): none beyond 4 sigma
    assert np.max(np.abs(pulls)) < 4.0, pulls


def test_reweight_scan_equals_loop(dtype):
    """Reweighting fixed e+e- events over an M_Z grid in one call (events and grid tiled,
    with padded last blocks) equals a loop of single reweightings; tiling is exact."""
    params = PROC.default_params(dtype, sqrt_s=91.188)
    points = st.uniform_points(jax.random.key(9), 1000, PROC.dim, 1, dtype)
    sample = jax.jit(st.generate_events, static_argnames=("integrand",))(PROC, params,
                                                                         points=points)
    grid = {"M_Z": jnp.linspace(90.0, 92.5, 5, dtype=dtype)}
    scan = jax.jit(st.reweight_scan, static_argnames=("integrand", "chunk", "event_chunk"))(
        PROC, sample, params, grid, chunk=2, event_chunk=96)
    reweight = jax.jit(st.reweight, static_argnames=("integrand", "event_chunk"))
    rtol = tol(dtype, 2e-6, 1e-13)
    for g, m in enumerate(grid["M_Z"]):
        p = {**params, "M_Z": m}
        w = reweight(PROC, sample, p)
        np.testing.assert_allclose(reweight(PROC, sample, p, event_chunk=300), w, rtol=rtol)
        single = st.sample_cross_section(sample, w)
        np.testing.assert_allclose(scan.value[g], single.value, rtol=rtol)
        np.testing.assert_allclose(scan.error[g], single.error, rtol=10 * rtol)
    with pytest.raises(ValueError, match="event_chunk"):
        st.reweight_scan(PROC, sample, params, grid, event_chunk=0)


def test_product_grid():
    grid = st.product_grid({"M_Zp": jnp.array([1.0, 2.0]), "Gamma_Zp": jnp.array([3.0, 4.0, 5.0])})
    np.testing.assert_array_equal(grid["M_Zp"], [1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(grid["Gamma_Zp"], [3, 4, 5, 3, 4, 5])
    with pytest.raises(ValueError, match="'a'"):
        st.product_grid({"a": jnp.zeros((2, 2))})


# ---------------------------------------------------------------------------- histograms, fits


def test_histograms_and_poisson_nll(dtype):
    rng = np.random.default_rng(9)
    v = rng.normal(size=2000).astype(jnp.dtype(dtype).name)
    w = rng.uniform(size=2000).astype(v.dtype)
    edges = np.linspace(-2.0, 2.0, 9).astype(v.dtype)
    hard = st.histogram(v, w, edges)
    np.testing.assert_allclose(hard, np.histogram(v, edges, weights=w)[0], rtol=1e-5)
    np.testing.assert_array_equal(st.bin_index(jnp.array([-3.0, -2.0, 0.1, 2.0]), edges),
                                  [-1, 0, 4, 8])

    @jax.jit
    def soft_and_grad(x):
        soft = st.soft_histogram(x, w, edges, 1e-4)
        # soft bins move with the events: only events near the outer edges move the total
        d_total = jax.grad(lambda y: jnp.sum(st.soft_histogram(y, w, edges, 0.05)))(x)
        return soft, d_total

    soft, d_total = soft_and_grad(jnp.asarray(v))
    np.testing.assert_allclose(soft, hard, rtol=2e-3)
    inner = np.abs(v) < 1.5
    assert float(jnp.max(jnp.abs(d_total[inner]))) < 1e-3 * float(jnp.max(jnp.abs(d_total)))
    nu = jnp.asarray([0.5, 3.0, 10.0], dtype)
    n = jnp.asarray([0.0, 2.0, 13.0], dtype)
    want = -scipy.stats.poisson.logpmf([0, 2, 13], [0.5, 3.0, 10.0]).sum()
    assert float(st.poisson_nll(nu, n)) == pytest.approx(want, rel=tol(dtype, 1e-6, 1e-12))
    assert float(st.poisson_nll(jnp.asarray([0.0], dtype), jnp.asarray([1.0], dtype))) == math.inf


@pytest.mark.parametrize("optimizer", [None, optax.lbfgs()], ids=["adam", "lbfgs"])
def test_fit_recovers_minimum_and_inverse_hessian(optimizer):
    """Quadratic NLL: minimum and covariance are exact."""
    mean = jnp.asarray([750.0, 1.2])
    cov = jnp.asarray([[4.0, 0.03], [0.03, 0.0009]])
    prec = jnp.linalg.inv(cov)

    def nll(p):
        d = jnp.stack([p["m"], p["g"]]) - mean
        return 0.5 * d @ prec @ d

    init = {"g": jnp.asarray(1.0), "m": jnp.asarray(745.0)}
    scale = {"g": jnp.asarray(0.03), "m": jnp.asarray(2.0)}
    res = jax.jit(functools.partial(st.fit, nll, scale=scale, optimizer=optimizer,
                                    n_steps=300 if optimizer is None else 20))(init)
    assert float(res.params["m"]) == pytest.approx(750.0, abs=2e-3 * 2.0)
    assert float(res.params["g"]) == pytest.approx(1.2, abs=2e-3 * 0.03)
    assert float(res.errors["m"]) == pytest.approx(2.0, rel=1e-3)
    assert float(res.errors["g"]) == pytest.approx(0.03, rel=1e-3)
    # ravel order is sorted keys: g, m
    assert float(res.covariance[0, 1]) == pytest.approx(0.03, rel=1e-3)
    assert res.history.shape == ((300,) if optimizer is None else (20,))


# ---------------------------------------------------------------------------- observables


def test_observables_of_ee_events(dtype):
    params = PROC.default_params(dtype, sqrt_s=91.188)
    r = jax.random.uniform(jax.random.key(10), (64, PROC.dim), dtype)

    @jax.jit
    def observe(r):
        events, _ = jax.vmap(PROC.event, (0, None))(r, params)
        return jax.vmap(st.pair_mass)(events), jax.vmap(st.cos_theta_star)(events)

    m, cos = observe(r)
    np.testing.assert_allclose(m, 91.188, rtol=tol(dtype, 1e-5, 1e-12))
    # the two-body decay draws cos(theta) = 2 r[0] - 1 of the fermion to the e- beam
    np.testing.assert_allclose(cos, 2 * r[:, 0] - 1, atol=tol(dtype, 1e-5, 1e-12))
