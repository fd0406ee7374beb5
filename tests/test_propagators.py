import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnis.phasespace.propagators import BreitWignerMap, PowerLawMap, UniformMap
from tests import checks
from tests.checks import call, fwd, inv
from tests.conftest import tol

MZ, GZ = 91.188, 2.441404
BW_INTEGRAL = 3.1148257  # pi/2 + arctan(m/Gamma), REFERENCES.md

MAPS = {"uniform": UniformMap(), "breit_wigner": BreitWignerMap(), "power": PowerLawMap()}
KEYS = ("s_min", "s_max", "mass", "width", "nu")


def _cond(dtype, **kw):
    base = {"s_min": 10.0, "s_max": 1.0e6, "mass": MZ, "width": GZ, "nu": 1.0}
    base.update(kw)
    return {k: jnp.asarray(base[k], dtype=dtype) for k in KEYS}


def _r(dtype, n=256, seed=0):
    # Keep away from the exact ends, where s = 0 or s = inf are legitimate but not invertible.
    return jax.random.uniform(jax.random.key(seed), (n, 1), dtype=dtype, minval=1e-6,
                              maxval=1.0 - 1e-6)


def _bw_density(s, m, g):
    return m * g / ((s - m * m) ** 2 + m * m * g * g)


def test_breit_wigner_reference_integral(dtype):
    """Jacobian x normalised Breit-Wigner = pi/2 + arctan(m/Gamma) for every r (s in (0, inf))."""
    cond = _cond(dtype, s_min=0.0, s_max=jnp.inf)
    r = jnp.linspace(0.0, 1.0, 258, dtype=dtype)[1:-1, None]
    s, log_jac = jax.vmap(fwd(MAPS["breit_wigner"], cond))(r)
    assert s.dtype == dtype and log_jac.dtype == dtype
    integral = np.exp(np.asarray(log_jac, np.float64)) * _bw_density(
        np.asarray(s, np.float64), MZ, GZ)
    # float32: s near the peak carries ~eps * m^2 absolute error, i.e. ~1e-5 relative in BW(s).
    np.testing.assert_allclose(integral, BW_INTEGRAL, rtol=tol(dtype, 1e-4, 1e-7))
    assert math.pi / 2 + math.atan(MZ / GZ) == pytest.approx(BW_INTEGRAL, rel=1e-7)
    # A finite range gives arctan differences.
    cond = _cond(dtype, s_min=80.0**2, s_max=100.0**2)
    s, log_jac = jax.vmap(fwd(MAPS["breit_wigner"], cond))(r)
    want = math.atan((100.0**2 - MZ**2) / (MZ * GZ)) - math.atan((80.0**2 - MZ**2) / (MZ * GZ))
    got = np.exp(np.asarray(log_jac, np.float64)) * _bw_density(np.asarray(s, np.float64),
                                                                MZ, GZ)
    np.testing.assert_allclose(got, want, rtol=tol(dtype, 1e-4, 1e-10))


@pytest.mark.parametrize("nu", [0.0, 0.5, 1.0, 1.7, -0.5])
def test_power_law_normalisation(dtype, nu):
    """ds/dr * s^-nu is the constant integral of s^-nu over the range."""
    s_min, s_max = 10.0, 1.0e6
    cond = _cond(dtype, s_min=s_min, s_max=s_max, nu=nu)
    s, log_jac = jax.vmap(fwd(MAPS["power"], cond))(_r(dtype))
    a = 1.0 - nu
    want = math.log(s_max / s_min) if a == 0 else (s_max**a - s_min**a) / a
    got = np.exp(np.asarray(log_jac, np.float64) - nu * np.log(np.asarray(s, np.float64)))
    np.testing.assert_allclose(got, want, rtol=tol(dtype, 2e-5, 1e-12))
    assert np.all((np.asarray(s) >= s_min * (1 - 1e-6)) & (np.asarray(s) <= s_max * (1 + 1e-6)))


ROUND_TRIP_CASES = [
    ("uniform", {}),
    ("breit_wigner", {}),
    ("breit_wigner", {"s_min": 0.0, "s_max": np.inf}),
    ("power", {"nu": 0.0}),
    ("power", {"nu": 0.5, "s_min": 0.0}),
    ("power", {"nu": 1.0}),
    ("power", {"nu": 1.0 - 1e-7}),
    ("power", {"nu": 1.0 + 1e-7}),
    ("power", {"nu": 1.0 + 3e-3}),
    ("power", {"nu": 2.0}),
    ("power", {"nu": -0.5}),
]


def test_round_trip_and_jacobian(dtype):
    r = _r(dtype)
    for name, extra in ROUND_TRIP_CASES:
        m, cond = MAPS[name], _cond(dtype, **extra)
        # float32: eps = 1.2e-7 amplified by the map's condition number (s spans 5 decades).
        checks.assert_round_trip(fwd(m, cond), inv(m, cond), r, atol=tol(dtype, 2e-5, 1e-10))
        s, lw_f = jax.vmap(fwd(m, cond))(r)
        _, lw_i = jax.vmap(inv(m, cond))(s)
        np.testing.assert_allclose(lw_f + lw_i, 0.0,
                                   atol=tol(dtype, 1e-5, 1e-12) * (1 + np.abs(lw_f).max()))
        if dtype == jnp.float64:  # the Jacobian identity is asserted at float64 precision
            checks.assert_logdet_matches_jacobian(fwd(m, cond), r, rtol=1e-9, atol=1e-10)


def test_batch_equals_loop():
    dtype = jnp.float32  # dtype-independent logic: run once, in the 32-bit process
    r = _r(dtype, 6)
    for m in MAPS.values():
        checks.assert_batch_equals_loop(fwd(m, _cond(dtype, nu=0.8)), (r,),
                                        rtol=tol(dtype, 1e-6, 1e-13))


@pytest.mark.x64
def test_power_law_continuous_through_nu_one():
    """The series branch near nu = 1 joins the direct formula smoothly (value and d/dnu)."""
    m = MAPS["power"]
    r = jnp.array([0.3])

    def out(nu):
        return call(m, "forward", r, _cond(jnp.float64, nu=nu))

    thr = float(jnp.finfo(jnp.float64).eps) ** 0.2 / math.log(1e5)  # branch switch in |1-nu|
    for nu in [1.0, 1.0 + 0.5 * thr, 1.0 + 2 * thr, 1.0 - 0.5 * thr, 1.0 - 2 * thr, 1.1]:
        a = 1.0 - nu
        # expm1/log1p reference, accurate for any a != 0.
        s_ref = 10.0 * np.exp(np.log1p(0.3 * np.expm1(a * math.log(1e5))) / a) if a else \
            10.0 * 1e5**0.3
        assert float(out(nu)[0]) == pytest.approx(s_ref, rel=1e-13)
        # One gradient of a combination checks d/dnu of both outputs (one compilation).
        checks.assert_grad_matches_fd(lambda x: out(x)[0] / 1e3 + out(x)[1], jnp.asarray(nu),
                                      h=1e-5, rtol=1e-7)


@pytest.mark.x64
@pytest.mark.parametrize("name", sorted(MAPS))
def test_gradients_match_finite_differences(name):
    """d/d(r, s_min, s_max, mass, width, nu) of s / s0 + log(ds/dr) vs central differences."""
    m = MAPS[name]
    base = _cond(jnp.float64, nu=1.4)
    x0 = jnp.array([0.42] + [float(base[k]) for k in KEYS])
    s0 = float(call(m, "forward", x0[:1], base)[0])

    def f(z):  # relative perturbations: every input scaled by (1 + h)
        x = x0 * z
        s, log_jac = call(m, "forward", x[:1], dict(zip(KEYS, x[1:], strict=True)))
        return s / s0 + log_jac

    checks.assert_grad_matches_fd(jax.jit(f), jnp.ones(6), h=1e-6, rtol=1e-6, atol=1e-8)


def test_invalid_traced_input_gives_minus_inf_and_finite():
    dtype = jnp.float32  # dtype-independent logic: run once, in the 32-bit process
    cases = [
        ("breit_wigner", {"width": 0.0}),
        ("breit_wigner", {"mass": -1.0}),
        ("breit_wigner", {"s_min": 2e6}),
        ("uniform", {"s_max": 1.0}),
        ("power", {"s_min": 0.0, "nu": 1.5}),
        ("power", {"s_min": 0.0, "nu": 1.0}),
        ("power", {"s_min": -1.0, "nu": 0.5}),
    ]
    r = jnp.array([0.3], dtype=dtype)
    for name, extra in cases:
        m, cond = MAPS[name], _cond(dtype, **extra)
        s, lw = call(m, "forward", r, cond)
        assert np.isfinite(s) and lw == -np.inf, (name, extra)
        g = jax.grad(lambda c, m=m: call(m, "forward", r, c)[0])(cond)
        assert all(np.isfinite(v) for v in jax.tree.leaves(g)), (name, extra)
        assert call(m, "inverse", s, cond)[1] == -np.inf, (name, extra)


def test_edges_have_finite_gradients():
    dtype = jnp.float32  # dtype-independent logic: run once, in the 32-bit process
    """r = 0 and r = 1 exactly (which uniform float generators can return)."""
    edges = jnp.array([[0.0], [1.0]], dtype=dtype)
    for m in MAPS.values():
        jac = jax.vmap(jax.jacfwd(fwd(m, _cond(dtype, s_min=0.0, nu=0.5))))(edges)
        assert all(np.all(np.isfinite(j)) for j in jac), m


def test_static_errors():
    cond = _cond(jnp.float32)
    with pytest.raises(ValueError, match=r"shape \(1,\).*\(2,\)"):
        MAPS["power"].forward(jnp.zeros(2), cond)
    with pytest.raises(ValueError, match="mass_key"):
        BreitWignerMap(mass_key="")
    with pytest.raises(ValueError, match="nu_key.*3"):
        PowerLawMap(nu_key=3)
    with pytest.raises(ValueError, match="'nu_z'"):
        PowerLawMap(nu_key="nu_z").forward(jnp.zeros(1), cond)
    with pytest.raises(ValueError, match="'s_max'"):
        UniformMap().forward(jnp.zeros(1), {"s_min": 0.0})
