import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnis import kinematics as kin
from jaxnis.phasespace.decays import TChannelMap, TwoBodyDecay, beams
from jaxnis.phasespace.propagators import UniformMap
from tests import checks
from tests.checks import call, fwd, inv
from tests.conftest import tol

PHI2_TTBAR = 0.0373311651  # sqrt(lambda) / (8 pi s), m_t = 173 at 1000 GeV (REFERENCES.md)
DECAY = TwoBodyDecay()
TCHAN = TChannelMap()


def _r(dtype, n, d=2, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, d), dtype=dtype, minval=1e-7,
                              maxval=1.0 - 1e-7)


def _decay_cond(dtype, parent=(1000.0, 0.0, 0.0, 0.0), masses=(173.0, 173.0)):
    return {"parent": jnp.asarray(parent, dtype), "masses": jnp.asarray(masses, dtype)}


def _tchan_cond(dtype, sqrt_s=1000.0, masses=(173.0, 173.0), nu=1.0, incoming=None):
    inc = beams(jnp.asarray(sqrt_s, dtype)) if incoming is None else jnp.asarray(incoming, dtype)
    return {"incoming": inc, "masses": jnp.asarray(masses, dtype), "nu": jnp.asarray(nu, dtype)}


BOOSTED = (1500.0, 300.0, -400.0, 700.0)
N_DECAY, N_T = 512, 20_000  # one batch shape per map: each vmapped map compiles once


def _massless_incoming():
    na = np.array([0.3, -0.5, 0.8])
    nb = np.array([-0.1, 0.6, -0.7])
    na, nb = na / np.linalg.norm(na), nb / np.linalg.norm(nb)
    return np.stack([np.r_[600.0, 600.0 * na], np.r_[400.0, 400.0 * nb]])


def _assert_physical(p, total, masses, dtype):
    p = np.asarray(p, np.float64)
    scale = float(np.abs(total[0]))
    np.testing.assert_allclose(p.sum(axis=-2), np.broadcast_to(total, p.shape[:-2] + (4,)),
                               atol=tol(dtype, 1e-5, 1e-12) * scale)
    m2 = p[..., 0] ** 2 - np.sum(p[..., 1:] ** 2, axis=-1)
    np.testing.assert_allclose(m2, np.broadcast_to(np.asarray(masses) ** 2, m2.shape),
                               atol=tol(dtype, 1e-5, 1e-12) * scale**2)


# ---- two-body decay -------------------------------------------------------------------------

@pytest.mark.parametrize("parent", [(1000.0, 0.0, 0.0, 0.0), BOOSTED])
def test_two_body_weight_is_phi2(dtype, parent):
    cond = _decay_cond(dtype, parent, masses=(173.0, 173.0) if parent[1] == 0 else (173.0, 10.0))
    r = _r(dtype, N_DECAY)
    p, lw = jax.vmap(fwd(DECAY, cond))(r)
    assert p.dtype == dtype and lw.dtype == dtype
    w = np.exp(np.asarray(lw, np.float64))
    m_sq = parent[0] ** 2 - sum(x * x for x in parent[1:])
    m1, m2 = np.asarray(cond["masses"], np.float64)
    truth = math.sqrt((m_sq - m1**2 - m2**2) ** 2 - 4 * m1**2 * m2**2) / (8 * math.pi * m_sq)
    if parent[1] == 0:
        assert truth == pytest.approx(PHI2_TTBAR, rel=1e-9)
    np.testing.assert_allclose(w, truth, rtol=tol(dtype, 2e-5, 1e-12))
    _assert_physical(p, np.asarray(parent), cond["masses"], dtype)


def test_two_body_round_trip_and_chart(dtype):
    cond = _decay_cond(dtype, BOOSTED, masses=(173.0, 10.0))
    r = _r(dtype, N_DECAY)  # the shape of test_two_body_weight_is_phi2: no recompilation
    checks.assert_round_trip(fwd(DECAY, cond), inv(DECAY, cond), r,
                             atol=tol(dtype, 3e-5, 1e-10))
    m = math.sqrt(BOOSTED[0] ** 2 - sum(x * x for x in BOOSTED[1:]))
    m1, m2 = 173.0, 10.0
    k = math.sqrt((m * m - m1**2 - m2**2) ** 2 - 4 * m1**2 * m2**2) / (2 * m)
    log_density = math.log(k / (16 * math.pi**2 * m))  # dPhi_2 / dcos(theta) dphi

    @jax.jit
    def chart(x):
        p, lw = call(DECAY, "forward", x, cond)
        q = kin.boost_to_rest_frame(p[0], cond["parent"])
        return jnp.stack([q[3] / kin.momentum(q), kin.azimuth(q)]), lw - log_density

    if dtype == jnp.float64:  # the Jacobian identity is asserted at float64 precision
        checks.assert_logdet_matches_jacobian(chart, r[:64], rtol=1e-10)


def test_two_body_sqrt_s_key_and_batch():
    dtype = jnp.float32  # dtype-independent logic: run once, in the 32-bit process
    r = _r(dtype, 4)
    checks.assert_batch_equals_loop(fwd(DECAY, _decay_cond(dtype, BOOSTED)), (r,),
                                    rtol=tol(dtype, 1e-6, 1e-13), atol=tol(dtype, 1e-3, 1e-10))
    cond = {"sqrt_s": jnp.asarray(1000.0, dtype), "masses": jnp.asarray([173.0, 173.0], dtype)}
    p, lw = call(DECAY, "forward", r[0], cond)
    assert float(lw) == pytest.approx(math.log(PHI2_TTBAR), abs=tol(dtype, 1e-5, 1e-9))


def test_two_body_below_threshold():
    dtype = jnp.float32  # dtype-independent logic: run once, in the 32-bit process
    r = jnp.asarray([0.3, 0.8], dtype)
    for parent, masses in [((300.0, 0.0, 0.0, 0.0), (173.0, 173.0)),
                           ((100.0, 0.0, 0.0, 200.0), (1.0, 1.0)),  # space-like parent
                           ((1000.0, 0.0, 0.0, 0.0), (-1.0, 5.0))]:
        cond = _decay_cond(dtype, parent, masses)
        p, lw = call(DECAY, "forward", r, cond)
        assert lw == -np.inf and np.all(np.isfinite(p)), (parent, masses)
        g = jax.grad(lambda c: jnp.sum(call(DECAY, "forward", r, c)[0]))(cond)
        assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(g))
        assert call(DECAY, "inverse", p, cond)[1] == -np.inf


@pytest.mark.x64
def test_two_body_gradients_match_finite_differences():
    base = _decay_cond(jnp.float64, BOOSTED, masses=(173.0, 10.0))
    r = jnp.array([0.3, 0.8])
    weights = jnp.arange(1.0, 9.0).reshape(2, 4)  # a generic linear functional of the momenta

    x0 = jnp.concatenate([r, base["parent"], base["masses"]])

    def scalar(z):  # relative perturbations of (r, parent, masses)
        x = x0 * z
        p, lw = call(DECAY, "forward", x[:2], {"parent": x[2:6], "masses": x[6:]})
        return jnp.sum(weights * p) + 100.0 * lw

    # atol: the round-off of the differences, eps |f| / h ~ 1e-5 for |f| ~ 1e4.
    checks.assert_grad_matches_fd(jax.jit(scalar), jnp.ones(8), h=1e-6, rtol=1e-6, atol=1e-5)


# ---- 2 -> 2 with a t-channel map -------------------------------------------------------------

def _u_range(sqrt_s, m1, m2):
    s = sqrt_s**2
    e1 = (s + m1**2 - m2**2) / (2 * sqrt_s)
    k1 = math.sqrt((s - m1**2 - m2**2) ** 2 - 4 * m1**2 * m2**2) / (2 * sqrt_s)
    ea = sqrt_s / 2
    return 2 * ea * (e1 - k1) - m1**2, 2 * ea * (e1 + k1) - m1**2


def test_t_channel_mean_is_phi2_and_t_weighted_integrals(dtype):
    cond = _tchan_cond(dtype)
    r = _r(dtype, N_T, seed=1)
    p, lw = jax.vmap(fwd(TCHAN, cond))(r)
    w = np.exp(np.asarray(lw, np.float64))
    checks.assert_mc_mean(w, PHI2_TTBAR)
    # The map samples 1/u (u = -t) exactly: w / u is the constant 2pi/(16 pi^2 s) log(u_max/u_min).
    pa = np.asarray(cond["incoming"][0], np.float64)
    p1 = np.asarray(p[:, 0], np.float64)
    diff = pa - p1
    u = -(diff[:, 0] ** 2 - np.sum(diff[:, 1:] ** 2, axis=1))
    u_min, u_max = _u_range(1000.0, 173.0, 173.0)
    assert u.min() >= u_min * (1 - 1e-4) and u.max() <= u_max * (1 + 1e-4)
    norm = 2 * math.pi / (16 * math.pi**2 * 1000.0**2)
    np.testing.assert_allclose(w / u, norm * math.log(u_max / u_min), rtol=tol(dtype, 3e-3, 1e-9))
    # A quantity the map does not flatten: integral of dPhi_2 / t^2.
    checks.assert_mc_mean(w / u**2, norm * (1 / u_min - 1 / u_max))
    _assert_physical(p, np.array([1000.0, 0.0, 0.0, 0.0]), (173.0, 173.0), dtype)
    # float32: angles from boosted momenta carry ~1e-7 E / |p| of rounding.
    checks.assert_round_trip(fwd(TCHAN, cond), inv(TCHAN, cond), r, atol=tol(dtype, 2e-3, 1e-10))


@pytest.mark.x64
@pytest.mark.parametrize("nu", [0.0, 0.6, 1.0, 1.8])
def test_t_channel_round_trip_any_frame(nu):
    inc = _massless_incoming()
    cond = _tchan_cond(jnp.float64, masses=(173.0, 10.0), nu=nu, incoming=inc)
    r = _r(jnp.float64, N_T, seed=2)
    checks.assert_round_trip(fwd(TCHAN, cond), inv(TCHAN, cond), r, atol=1e-10)
    p, lw = jax.vmap(fwd(TCHAN, cond))(r)
    assert np.all(np.isfinite(np.asarray(lw)))
    _assert_physical(p, inc.sum(axis=0), (173.0, 10.0), jnp.float64)
    # Exact density 1/u^nu: w / u^nu is constant.
    diff = np.asarray(inc[0]) - np.asarray(p[:, 0])
    u = -(diff[:, 0] ** 2 - np.sum(diff[:, 1:] ** 2, axis=1))
    c = np.exp(np.asarray(lw)) / u**nu
    np.testing.assert_allclose(c, c[0], rtol=1e-9)


@pytest.mark.x64
def test_t_channel_chart_jacobian():
    dtype = jnp.float64
    cond = _tchan_cond(dtype, masses=(173.0, 10.0), nu=0.7)
    r = _r(dtype, 64, seed=3)
    log_density = -math.log(16 * math.pi**2 * 1000.0**2)  # dPhi_2 / dt dphi, massless beams
    pa = cond["incoming"][0]

    @jax.jit
    def chart(x):
        p, lw = call(TCHAN, "forward", x, cond)
        return jnp.stack([kin.mass_squared(pa - p[0]), kin.azimuth(p[0])]), lw - log_density

    checks.assert_logdet_matches_jacobian(chart, r, rtol=1e-9)


def test_t_channel_batch_equals_loop():
    dtype = jnp.float32  # dtype-independent logic: run once, in the 32-bit process
    cond = _tchan_cond(dtype, masses=(173.0, 10.0), nu=0.7)
    checks.assert_batch_equals_loop(fwd(TCHAN, cond), (_r(dtype, 4, seed=3),), rtol=1e-6,
                                    atol=1e-3)


def test_t_channel_invalid_traced_input():
    dtype = jnp.float32  # dtype-independent logic: run once, in the 32-bit process
    r = jnp.asarray([0.3, 0.8], dtype)
    for cond in [_tchan_cond(dtype, sqrt_s=300.0),  # below threshold
                 _tchan_cond(dtype, masses=(0.0, 0.0), nu=1.0)]:  # 1/|t| not integrable
        p, lw = call(TCHAN, "forward", r, cond)
        assert lw == -np.inf and np.all(np.isfinite(p))
        g = jax.grad(lambda x, c=cond: jnp.sum(call(TCHAN, "forward", x, c)[0]))(r)
        assert np.all(np.isfinite(g))
    # Massless final state with nu < 1 is fine: u_min = 0.
    p, lw = call(TCHAN, "forward", r, _tchan_cond(dtype, masses=(0.0, 0.0), nu=0.5))
    assert np.isfinite(lw)


@pytest.mark.x64
def test_t_channel_gradients_match_finite_differences():
    r = jnp.array([0.3, 0.8])
    weights = jnp.arange(1.0, 9.0).reshape(2, 4)

    def scalar(z):  # relative perturbations of (r, sqrt_s, m1, m2, nu)
        x = x0 * z
        cond = {"incoming": beams(x[2]), "masses": x[3:5], "nu": x[5]}
        p, lw = call(TCHAN, "forward", x[:2], cond)
        return jnp.sum(weights * p) + 100.0 * lw

    x0 = jnp.concatenate([r, jnp.array([1000.0, 173.0, 10.0, 0.8])])
    # atol: the round-off of the differences, eps |f| / h ~ 1e-5 for |f| ~ 1e4.
    checks.assert_grad_matches_fd(jax.jit(scalar), jnp.ones(6), h=1e-6, rtol=1e-6, atol=1e-5)


def test_t_channel_with_uniform_t_map(dtype):
    m = TChannelMap(UniformMap())
    cond = _tchan_cond(dtype)
    r = _r(dtype, 64, seed=4)
    _, lw = jax.vmap(fwd(m, cond))(r)
    # Uniform in t: the weight is constant and equals Phi_2.
    np.testing.assert_allclose(np.exp(np.asarray(lw, np.float64)), PHI2_TTBAR,
                               rtol=tol(dtype, 1e-5, 1e-9))


def test_static_errors():
    cond = _decay_cond(jnp.float32)
    with pytest.raises(ValueError, match=r"\(2,\).*\(3,\)"):
        DECAY.forward(jnp.zeros(3), cond)
    with pytest.raises(ValueError, match=r"masses.*\(2,\).*\(3,\)"):
        DECAY.forward(jnp.zeros(2), {**cond, "masses": jnp.zeros(3)})
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(3, 4\)"):
        DECAY.inverse(jnp.zeros((3, 4)), cond)
    with pytest.raises(ValueError, match=r"'parent'\] or cond\['sqrt_s'\]"):
        DECAY.forward(jnp.zeros(2), {"masses": jnp.zeros(2)})
    with pytest.raises(ValueError, match="t_map"):
        TChannelMap(t_map=DECAY)
    with pytest.raises(ValueError, match="incoming"):
        TCHAN.forward(jnp.zeros(2), {"masses": jnp.zeros(2), "nu": 1.0})
