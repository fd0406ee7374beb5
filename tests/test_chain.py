import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from jaxnis import kinematics as kin
from jaxnis.phasespace.chain import DecayTree, HadronicChannel, HadronicEvent
from jaxnis.phasespace.decays import TChannelMap
from jaxnis.phasespace.luminosity import LuminosityMap, parton_momenta
from jaxnis.phasespace.propagators import BreitWignerMap, PowerLawMap, UniformMap
from tests import checks
from tests.checks import call, fwd, inv
from tests.conftest import tol

PHI3_MASSLESS = 125.98255637968553  # sqrt(s) = 1000 (REFERENCES.md)
PHI3_TTG = 74.856206  # masses (173, 173, 0) at sqrt(s) = 1000
PHI4_MASSLESS = 132965.64302788844

# P -> (Z -> 0 1) 2 and the same with the resonance on a pair whose sibling is massive.
TREE_01 = DecayTree(((0, 1), 2), {(0, 1): BreitWignerMap()})
TREE_02 = DecayTree(((0, 2), 1), {(0, 2): BreitWignerMap()})
# Two resonances with their own keys; (2, 3) keeps the default uniform map.
TREE_4 = DecayTree(((0, 1), (2, 3)), {(0, 1): BreitWignerMap("mass_z", "width_z")})
ZPRIME = HadronicChannel(LuminosityMap(BreitWignerMap()), DecayTree((0, 1)))
TTBAR_T = HadronicChannel(LuminosityMap(PowerLawMap("nu_tau")), TChannelMap())


def _tree_cond(dtype, masses, sqrt_s=1000.0, mass=400.0, width=80.0):
    return {"sqrt_s": jnp.asarray(sqrt_s, dtype), "masses": jnp.asarray(masses, dtype),
            "mass": jnp.asarray(mass, dtype), "width": jnp.asarray(width, dtype)}


def _tree4_cond(dtype):
    return {"sqrt_s": jnp.asarray(1000.0, dtype), "masses": jnp.zeros(4, dtype),
            "mass_z": jnp.asarray(300.0, dtype), "width_z": jnp.asarray(60.0, dtype)}


def _zprime_cond(dtype, sqrt_s=13000.0, mass=3000.0, width=150.0):
    return {"sqrt_s": jnp.asarray(sqrt_s, dtype), "tau_min": jnp.asarray(1e-3, dtype),
            "mass": jnp.asarray(mass, dtype), "width": jnp.asarray(width, dtype),
            "masses": jnp.zeros(2, dtype)}


def _ttbar_cond(dtype):
    return {"sqrt_s": jnp.asarray(13000.0, dtype), "s_hat_min": jnp.asarray(400.0**2, dtype),
            "nu_tau": jnp.asarray(1.0, dtype), "nu": jnp.asarray(1.0, dtype),
            "masses": jnp.asarray([173.0, 173.0], dtype)}


N = 50_000  # one batch shape for every vmapped call: each map compiles once per process


def _r(dtype, n, d, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, d), dtype=dtype, minval=1e-7,
                              maxval=1.0 - 1e-7)


def _assert_physical(p, total, masses, dtype):
    p = np.asarray(p, np.float64)
    total = np.broadcast_to(np.asarray(total, np.float64), p.shape[:-2] + (4,))
    scale = np.abs(total[..., :1])
    np.testing.assert_allclose(p.sum(axis=-2) / scale, total / scale, rtol=0,
                               atol=tol(dtype, 1e-5, 1e-12))
    m2 = p[..., 0] ** 2 - np.sum(p[..., 1:] ** 2, axis=-1)
    np.testing.assert_allclose((m2 - np.asarray(masses, np.float64) ** 2) / scale**2, 0.0,
                               atol=tol(dtype, 1e-5, 1e-12))


def _assert_round_trip(m, cond, r, dtype):
    # float32: boosts of ~500 GeV momenta resolve angles to ~1e-7 * E / |p*|.
    checks.assert_round_trip(fwd(m, cond), inv(m, cond), r, atol=tol(dtype, 2e-3, 1e-10))


# ---- decay trees ------------------------------------------------------------------------------

@pytest.mark.parametrize("tree,masses,truth", [
    (TREE_01, (0.0, 0.0, 0.0), PHI3_MASSLESS),
    (TREE_01, (173.0, 173.0, 0.0), PHI3_TTG),
    (TREE_02, (173.0, 173.0, 0.0), PHI3_TTG),
], ids=["massless", "ttg", "ttg-pair02"])
def test_three_body_volume_with_breit_wigner(dtype, tree, masses, truth):
    """MC mean of the chained weight (BW propagator x two decays) = the 3-body volume."""
    cond = _tree_cond(dtype, masses)
    r = _r(dtype, N, tree.n_random, seed=11)
    p, lw = jax.vmap(fwd(tree, cond))(r)
    assert p.shape == (N, 3, 4) and p.dtype == dtype and lw.dtype == dtype
    checks.assert_mc_mean(np.exp(np.asarray(lw, np.float64)), truth)
    _assert_physical(p, [1000.0, 0, 0, 0], masses, dtype)
    _assert_round_trip(tree, cond, r, dtype)


@pytest.mark.optimized
def test_four_body_volume_two_intermediate_nodes(dtype):
    cond = _tree4_cond(dtype)
    assert TREE_4.n_random == 8
    r = _r(dtype, N, 8, seed=12)
    p, lw = jax.vmap(fwd(TREE_4, cond))(r)
    checks.assert_mc_mean(np.exp(np.asarray(lw, np.float64)), PHI4_MASSLESS)
    _assert_physical(p, [1000.0, 0, 0, 0], np.zeros(4), dtype)
    _assert_round_trip(TREE_4, cond, r, dtype)


def test_tree_batch_equals_loop():
    dtype = jnp.float32  # dtype-independent logic: run once, in the 32-bit process
    r = _r(dtype, 3, 5, seed=13)
    checks.assert_batch_equals_loop(fwd(TREE_01, _tree_cond(dtype, (173.0, 173.0, 0.0))), (r,),
                                    rtol=tol(dtype, 1e-6, 1e-12), atol=tol(dtype, 1e-3, 1e-9))


def test_changing_masses_widths_energy_does_not_recompile():
    r = _r(jnp.float32, 2, 4, seed=15)
    call(ZPRIME, "forward", r[0], _zprime_cond(jnp.float32))
    before = call._cache_size()
    for sqrt_s, mass, width in [(14000.0, 2000.0, 10.0), (7000.0, 500.0, 40.0)]:
        call(ZPRIME, "forward", r[1], _zprime_cond(jnp.float32, sqrt_s, mass, width))
    assert call._cache_size() == before


def test_tree_in_a_moving_frame(dtype):
    """cond['parent'] in any frame: outputs sum to it and the weight is unchanged."""
    parent = jnp.asarray([1500.0, 300.0, -400.0, 700.0], dtype)
    cond = _tree_cond(dtype, (173.0, 173.0, 0.0))
    moving = {k: v for k, v in cond.items() if k != "sqrt_s"}
    moving["parent"] = parent
    cond["sqrt_s"] = jnp.asarray(float(kin.mass(parent)), dtype)
    r = _r(dtype, N, 5, seed=14)
    p, lw = jax.vmap(fwd(TREE_01, moving))(r)
    _, lw_rest = jax.vmap(fwd(TREE_01, cond))(r)
    np.testing.assert_allclose(lw, lw_rest, rtol=tol(dtype, 1e-4, 1e-11))
    _assert_physical(p, parent, (173.0, 173.0, 0.0), dtype)
    _assert_round_trip(TREE_01, moving, r, dtype)


@pytest.mark.x64
def test_tree_gradients_match_finite_differences():
    r = jnp.array([0.3, 0.6, 0.2, 0.45, 0.8])
    weights = jnp.arange(1.0, 13.0).reshape(3, 4)

    def scalar(z):  # relative perturbations of (r, sqrt_s, mass, width, m_top)
        x = x0 * z
        cond = {"sqrt_s": x[5], "mass": x[6], "width": x[7],
                "masses": jnp.stack([x[8], x[8], jnp.zeros_like(x[8])])}
        p, lw = call(TREE_01, "forward", x[:5], cond)
        return jnp.sum(weights * p) + 100.0 * lw

    x0 = jnp.concatenate([r, jnp.array([1000.0, 400.0, 80.0, 173.0])])
    # atol: the round-off of the differences, eps |f| / h ~ 1e-5 for |f| ~ 1e4.
    checks.assert_grad_matches_fd(jax.jit(scalar), jnp.ones(9), h=1e-6, rtol=1e-6, atol=1e-5)


def test_tree_below_threshold():
    dtype = jnp.float32  # dtype-independent logic: run once, in the 32-bit process
    cond = _tree_cond(dtype, (173.0, 173.0, 0.0), sqrt_s=300.0)
    r = jnp.full(5, 0.4, dtype)
    p, lw = call(TREE_01, "forward", r, cond)
    assert lw == -np.inf and np.all(np.isfinite(p))
    g = jax.grad(lambda x: jnp.sum(call(TREE_01, "forward", x, cond)[0]))(r)
    assert np.all(np.isfinite(g))


# ---- hadronic channels ------------------------------------------------------------------------

def test_zprime_channel_volume_round_trip_and_frame(dtype):
    """q qbar -> Z' -> l+ l-: BW on s_hat, decay in the partonic frame, boost_z to the lab."""
    n = N
    cond = _zprime_cond(dtype)
    assert ZPRIME.n_random == 4
    r = _r(dtype, n, 4, seed=21)
    event, lw = jax.vmap(fwd(ZPRIME, cond))(r)
    assert isinstance(event, HadronicEvent) and event.momenta.shape == (n, 2, 4)
    assert event.momenta.dtype == dtype and lw.dtype == dtype
    # Massless Phi_2 = 1/(8 pi) for every s_hat: the mean is Phi_2 times the x1 x2 area.
    tau_min = 1e-3
    truth = (1.0 - tau_min + tau_min * math.log(tau_min)) / (8.0 * math.pi)
    checks.assert_mc_mean(np.exp(np.asarray(lw, np.float64)), truth)
    incoming = parton_momenta(event.x1, event.x2, cond["sqrt_s"])
    _assert_physical(event.momenta, np.asarray(incoming, np.float64).sum(axis=1),
                     np.zeros(2), dtype)
    _assert_round_trip(ZPRIME, cond, r, dtype)


def test_zprime_batch_equals_loop():
    dtype = jnp.float32  # dtype-independent logic: run once, in the 32-bit process
    r = _r(dtype, 3, 4, seed=22)
    checks.assert_batch_equals_loop(fwd(ZPRIME, _zprime_cond(dtype)), (r,),
                                    rtol=tol(dtype, 1e-5, 1e-12), atol=tol(dtype, 1e-2, 1e-8))


@pytest.mark.x64
def test_zprime_gradients_match_finite_differences():
    r = jnp.array([0.45, 0.3, 0.6, 0.25])
    weights = jnp.arange(1.0, 9.0).reshape(2, 4) / 1000.0

    def scalar(z):  # relative perturbations of (r, sqrt_s, mass, width)
        x = x0 * z
        event, lw = call(ZPRIME, "forward", x[:4], _zprime_cond(jnp.float64, *x[4:]))
        return jnp.sum(weights * event.momenta) + 10.0 * event.x1 + 10.0 * lw

    x0 = jnp.concatenate([r, jnp.array([13000.0, 3000.0, 150.0])])
    checks.assert_grad_matches_fd(jax.jit(scalar), jnp.ones(7), h=1e-6, rtol=1e-6, atol=1e-6)


@pytest.mark.x64
def test_ttbar_t_channel_hadronic_volume():
    """Luminosity (1/s_hat map) x t-channel 2 -> 2: mean = integral of Phi_2(tau S) dx1 dx2."""
    cond = _ttbar_cond(jnp.float64)
    r = _r(jnp.float64, N, 4, seed=23)
    event, lw = jax.vmap(fwd(TTBAR_T, cond))(r)
    big_s, m = 13000.0**2, 173.0
    tau_min = 400.0**2 / big_s

    def integrand(log_tau):
        tau = math.exp(log_tau)
        return tau * -log_tau * math.sqrt(1.0 - 4.0 * m * m / (tau * big_s)) / (8.0 * math.pi)

    truth, _ = integrate.quad(integrand, math.log(tau_min), 0.0, epsabs=0, epsrel=1e-12)
    checks.assert_mc_mean(np.exp(np.asarray(lw)), truth)
    incoming = parton_momenta(event.x1, event.x2, cond["sqrt_s"])
    _assert_physical(event.momenta, np.asarray(incoming).sum(axis=1), (m, m), jnp.float64)
    _assert_round_trip(TTBAR_T, cond, r, jnp.float64)


# ---- static validation ------------------------------------------------------------------------

def test_static_errors():
    with pytest.raises(ValueError, match=r"exactly once.*\(0, 1, 1\)"):
        DecayTree(((0, 1), 1))
    with pytest.raises(ValueError, match=r"exactly two children"):
        DecayTree((0, 1, 2))
    with pytest.raises(ValueError, match="must be a pair"):
        DecayTree(0)
    with pytest.raises(ValueError, match=r"\(0, 2\) is not an intermediate node"):
        DecayTree(((0, 1), 2), {(0, 2): UniformMap()})
    with pytest.raises(ValueError, match=r"not an intermediate node"):
        DecayTree(((0, 1), 2), {((0, 1), 2): UniformMap()})  # the root has no propagator
    with pytest.raises(ValueError, match="must be a propagator map"):
        DecayTree(((0, 1), 2), {(0, 1): "bw"})
    cond = _tree_cond(jnp.float32, (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match=r"\(5,\).*\(4,\)"):
        TREE_01.forward(jnp.zeros(4), cond)
    with pytest.raises(ValueError, match=r"masses.*\(3,\).*\(4,\)"):
        TREE_01.forward(jnp.zeros(5), {**cond, "masses": jnp.zeros(4)})
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(2, 4\)"):
        TREE_01.inverse(jnp.zeros((2, 4)), cond)
    with pytest.raises(ValueError, match="LuminosityMap"):
        HadronicChannel(DecayTree((0, 1)), DecayTree((0, 1)))
    with pytest.raises(ValueError, match="forward_incoming"):
        HadronicChannel(LuminosityMap(), UniformMap())
    with pytest.raises(ValueError, match=r"\(4,\).*\(5,\)"):
        ZPRIME.forward(jnp.zeros(5), _zprime_cond(jnp.float32))
