import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnis import kinematics as kin
from jaxnis.phasespace.luminosity import LuminosityMap, parton_momenta
from jaxnis.phasespace.propagators import BreitWignerMap, PowerLawMap
from tests import checks
from tests.checks import call, fwd, inv
from tests.conftest import tol

SQRT_S, TAU_MIN, M_ZP, G_ZP = 13000.0, 1e-3, 3000.0, 150.0
MAPS = {
    "uniform": LuminosityMap(),
    "power": LuminosityMap(PowerLawMap()),
    "breit_wigner": LuminosityMap(BreitWignerMap()),
}
KEYS = ("sqrt_s", "tau_min", "mass", "width", "nu")


def _cond(dtype, **kw):
    base = {"sqrt_s": SQRT_S, "tau_min": TAU_MIN, "mass": M_ZP, "width": G_ZP, "nu": 1.0}
    base.update(kw)
    return {k: jnp.asarray(base[k], dtype) for k in KEYS}


def _r(dtype, n, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, 2), dtype=dtype, minval=1e-6,
                              maxval=1.0 - 1e-6)


def _tau_integral(tau_min):
    """Integral of dx1 dx2 over x1 x2 >= tau_min = integral of -log(tau) dtau."""
    return 1.0 - tau_min + tau_min * math.log(tau_min)


N = 20_000  # one batch shape for every vmapped call: each map compiles once per process


def test_weights_flatten_their_density_and_mc_mean(dtype):
    n = N
    cond = _cond(dtype)
    s = SQRT_S**2
    y_bw = math.atan((s - M_ZP**2) / (M_ZP * G_ZP)) - math.atan((TAU_MIN * s - M_ZP**2)
                                                                / (M_ZP * G_ZP))
    constants = {  # w / density = integral of the density over tau
        "uniform": 1.0 - TAU_MIN,
        "power": math.log(1.0 / TAU_MIN),
        "breit_wigner": y_bw / (M_ZP * G_ZP),
    }
    r = _r(dtype, n)
    for name, m in MAPS.items():
        x, lw = jax.vmap(fwd(m, cond))(r)
        assert x.dtype == dtype and lw.dtype == dtype
        x64, w = np.asarray(x, np.float64), np.exp(np.asarray(lw, np.float64))
        tau = x64[:, 0] * x64[:, 1]
        assert np.all(tau >= TAU_MIN * (1 - 1e-5)) and np.all((x64 > 0) & (x64 <= 1 + 1e-6))
        s_hat = tau * s
        # The tau density each map flattens, divided by the y range -log(tau).
        density = 1.0 / -np.log(tau) * {"uniform": 1.0, "power": 1.0 / tau,
                                  "breit_wigner": s / ((s_hat - M_ZP**2) ** 2
                                                       + (M_ZP * G_ZP) ** 2)}[name]
        # float32: x1 x2 carries ~1e-7 relative rounding, amplified by 1/|log tau| near tau=1.
        np.testing.assert_allclose(w * density, constants[name], rtol=tol(dtype, 2e-3, 1e-9))
        checks.assert_mc_mean(w, _tau_integral(TAU_MIN))


def test_round_trip_and_jacobian(dtype):
    r = _r(dtype, N, seed=1)
    for m in MAPS.values():
        cond = _cond(dtype)
        # float32: r1 = log x2 / log tau loses ~eps / |log tau| near tau = 1.
        checks.assert_round_trip(fwd(m, cond), inv(m, cond), r, atol=tol(dtype, 2e-4, 1e-10))
        _, lw_f = jax.vmap(fwd(m, cond))(r)
        _, lw_i = jax.vmap(inv(m, cond))(jax.vmap(fwd(m, cond))(r)[0])
        # log(-log tau) amplifies the rounding of tau by 1 / |log tau| as tau -> 1.
        np.testing.assert_allclose(lw_f + lw_i, 0.0, atol=tol(dtype, 1e-4, 1e-10))
        if dtype == jnp.float64:  # the Jacobian identity is asserted at float64 precision
            checks.assert_logdet_matches_jacobian(fwd(m, cond), r[:64], rtol=1e-9)


def test_batch_equals_loop_and_s_hat_min_key():
    dtype = jnp.float32  # dtype-independent logic: run once, in the 32-bit process
    m = MAPS["breit_wigner"]
    r = _r(dtype, 4, seed=2)
    checks.assert_batch_equals_loop(fwd(m, _cond(dtype)), (r,), rtol=tol(dtype, 1e-6, 1e-13))
    by_tau = m.forward(r[0], _cond(dtype))
    cond = {k: v for k, v in _cond(dtype).items() if k != "tau_min"}
    cond["s_hat_min"] = jnp.asarray(TAU_MIN * SQRT_S**2, dtype)
    by_s = m.forward(r[0], cond)
    for a, b in zip(by_tau, by_s, strict=True):
        np.testing.assert_allclose(a, b, rtol=tol(dtype, 1e-6, 1e-14))


def test_parton_momenta(dtype):
    cond = _cond(dtype)
    x, _ = call(MAPS["breit_wigner"], "forward", jnp.asarray([0.4, 0.8], dtype), cond)
    p = parton_momenta(x[0], x[1], cond["sqrt_s"])
    assert p.shape == (2, 4) and p.dtype == dtype
    total = p[0] + p[1]
    s_hat = float(x[0] * x[1]) * SQRT_S**2
    assert float(kin.mass_squared(total)) == pytest.approx(s_hat, rel=tol(dtype, 1e-5, 1e-12))
    y = 0.5 * math.log(float(x[0]) / float(x[1]))
    assert float(kin.rapidity(total)) == pytest.approx(y, rel=tol(dtype, 1e-4, 1e-12))
    np.testing.assert_allclose(kin.mass_squared(p), 0.0, atol=0.0)
    batch = parton_momenta(jnp.full(3, x[0]), jnp.full(3, x[1]), cond["sqrt_s"])
    assert batch.shape == (3, 2, 4)


@pytest.mark.x64
@pytest.mark.parametrize("name", sorted(MAPS))
def test_gradients_match_finite_differences(name):
    """d/d(r, sqrt_s, tau_min, mass, width, nu) of x and the log weight vs central differences."""
    m = MAPS[name]
    base = _cond(jnp.float64)
    x0 = jnp.array([0.37, 0.71] + [float(base[k]) for k in KEYS])

    def f(z):  # relative perturbations: every input scaled by (1 + h)
        x = x0 * z
        xs, lw = call(m, "forward", x[:2], dict(zip(KEYS, x[2:], strict=True)))
        return 10.0 * xs[0] + 3.0 * xs[1] + lw

    checks.assert_grad_matches_fd(jax.jit(f), jnp.ones(7), h=1e-6, rtol=1e-6, atol=1e-8)


def test_invalid_traced_input():
    dtype = jnp.float32  # dtype-independent logic: run once, in the 32-bit process
    m = MAPS["uniform"]
    x, lw = call(m, "forward", jnp.asarray([0.3, 0.4], dtype), _cond(dtype, tau_min=1.5))
    assert lw == -np.inf and np.all(np.isfinite(x))
    for bad in ([0.0, 0.5], [1.2, 0.5], [-0.1, 0.5]):
        r, lw = call(m, "inverse", jnp.asarray(bad, dtype), _cond(dtype))
        assert lw == -np.inf and np.all(np.isfinite(r)), bad
    g = jax.grad(lambda c: call(m, "forward", jnp.asarray([0.3, 0.4], dtype), c)[0][0])(
        _cond(dtype, tau_min=1.5))
    assert all(np.isfinite(v) for v in jax.tree.leaves(g))


def test_static_errors():
    cond = _cond(jnp.float32)
    with pytest.raises(ValueError, match=r"\(2,\).*\(3,\)"):
        MAPS["uniform"].forward(jnp.zeros(3), cond)
    with pytest.raises(ValueError, match="exactly one of"):
        MAPS["uniform"].forward(jnp.zeros(2), {**cond, "s_hat_min": 1.0})
    with pytest.raises(ValueError, match="exactly one of"):
        MAPS["uniform"].forward(jnp.zeros(2), {"sqrt_s": 1.0})
    with pytest.raises(ValueError, match="sqrt_s"):
        MAPS["uniform"].forward(jnp.zeros(2), {"tau_min": 1.0})
    with pytest.raises(ValueError, match="s_hat_map"):
        LuminosityMap("power")
