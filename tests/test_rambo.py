"""RAMBO and RAMBO on diet: volumes, conservation, round trips, Jacobians, gradients.

Reference values from ``REFERENCES.md``. The float32 bounds asserted here (relative to
``sqrt_s`` and ``s``) are above what was measured over 10^6 events per configuration:
momentum conservation <= 3.6e-7, on-shell <= 2.5e-7, round trip <= 4.6e-5 (99.9 % of events
below 1e-6).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnis import kinematics as kin
from jaxnis.numerics import kallen
from jaxnis.phasespace.rambo import Rambo, RamboOnDiet, log_massless_volume, make_cond
from tests import checks
from tests.conftest import tol

VOLUMES = {  # massless Phi_n at sqrt_s = 1000 and 91.188 GeV (REFERENCES.md)
    (2, 1000.0): 0.039788735772973836,
    (3, 1000.0): 125.98255637968553,
    (4, 1000.0): 132965.64302788844,
    (5, 1000.0): 70167897.57994904,
    (6, 1000.0): 22217170114.04614,
    (2, 91.188): 0.039788735772973836,
    (3, 91.188): 1.047576621256736,
    (4, 91.188): 9.19369729551355,
}
TTBAR = 0.0373311651  # Phi_2 at sqrt_s = 1000, m = 173
TTG = 74.856206  # Phi_3 at sqrt_s = 1000, masses (173, 173, 0)

# float32 bounds, relative to sqrt_s (conservation) and s (on-shell); see module docstring.
F32_CONSERVATION = 1e-6
F32_ON_SHELL = 1e-6
F32_ROUND_TRIP = 1e-4

MASSIVE = [
    (2, (173.0, 173.0)),
    (3, (173.0, 173.0, 0.0)),
    (5, (173.0, 80.4, 4.7, 0.0, 0.0)),  # exercises the Newton solve for k = 3
]


# XLA's CPU compile time grows with the number of fusions (~30-80 per map), and LLVM's
# optimisation of each dominates it. Tests compile without backend optimisation: about half
# the compile time, the same IEEE arithmetic (no fast-math at any level), slower but small runs.
jit_o0 = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


@functools.cache
def batched_forward(ps):
    return jit_o0(jax.vmap(ps.forward, in_axes=(0, None)))


@functools.cache
def batched_inverse(ps):
    return jit_o0(jax.vmap(ps.inverse, in_axes=(0, None)))


def uniform(ps, n_events, dtype, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n_events, ps.n_random), dtype=dtype)


def cond_for(ps, sqrt_s, masses, dtype):
    return make_cond(sqrt_s, masses, n=ps.n if masses is not None else None, dtype=dtype)


# One batch per (map, dtype, sqrt_s), shared by the tests so that each map compiles once per
# process. Many float32 events: the textbook float32 RAMBO breaks 1e-6 momentum conservation
# within ~1e4 events for n = 2 (0.17 over 10^6), so the float32 bounds are tested where they
# bite; float64 needs fewer.
N_EVENTS = {jnp.dtype(jnp.float32): 32_768, jnp.dtype(jnp.float64): 4096}


@functools.cache
def sample(ps, masses, dtype, sqrt_s=1000.0):
    """``(r, p, logw, r_back, logw_inverse)`` as float64 numpy arrays (inverse: diet only)."""
    dtype = jnp.dtype(dtype)
    r = uniform(ps, N_EVENTS[dtype], dtype, seed=ps.n + 10 * ps.massive)
    cond = cond_for(ps, sqrt_s, masses, dtype)
    p, logw = batched_forward(ps)(r, cond)
    assert p.dtype == dtype and logw.dtype == dtype
    out = [r, p, logw]
    if isinstance(ps, RamboOnDiet):
        r_back, logw_inv = batched_inverse(ps)(p, cond)
        assert r_back.dtype == dtype
        out += [r_back, logw_inv]
    return tuple(np.asarray(a, dtype=np.float64) for a in out)


def maps_for(dtype):
    """The (map, masses) pairs whose full output is tested in a process (compilation time
    limits them): every RAMBO-on-diet n in float64, and the cases where float32 is fragile
    (n = 2 RAMBO, the Newton solves of k >= 3, the xi-rescaling)."""
    if jnp.dtype(dtype) == jnp.float64:
        massless = [(Rambo(2), None)] + [(RamboOnDiet(n), None) for n in range(2, 7)]
        massive = [(cls(n, massive=True), m) for n, m in MASSIVE[:2]
                   for cls in (Rambo, RamboOnDiet)]
        massive.append((RamboOnDiet(5, massive=True), MASSIVE[2][1]))
    else:
        massless = [(Rambo(2), None), (Rambo(5), None), (RamboOnDiet(4), None),
                    (RamboOnDiet(6), None)]
        massive = [(Rambo(3, massive=True), MASSIVE[1][1]),
                   (RamboOnDiet(3, massive=True), MASSIVE[1][1]),
                   (RamboOnDiet(5, massive=True), MASSIVE[2][1])]
    return massless + massive


# --------------------------------------------------------------------------------------------
# Volumes
# --------------------------------------------------------------------------------------------


@pytest.mark.x64
def test_log_massless_volume_matches_table():
    for (n, sqrt_s), volume in VOLUMES.items():
        got = float(jnp.exp(log_massless_volume(n, jnp.float64(sqrt_s))))
        assert got == pytest.approx(volume, rel=1e-13), (n, sqrt_s)


@functools.cache
def batched_log_weight(ps):
    # Only the log weight: XLA drops the momenta, so this compiles in a fraction of the time.
    return jit_o0(jax.vmap(lambda r, c: ps.forward(r, c)[1], in_axes=(0, None)))


def test_massless_weight_is_constant_volume(dtype):
    # exp of a float32 log weight of size ~24 (n = 6) is good to ~24 eps = 3e-6.
    rtol = tol(dtype, 1e-5, 1e-12)
    for (n, sqrt_s), volume in VOLUMES.items():
        if dtype != jnp.float64:
            break  # float32: the full maps below only
        for ps in (Rambo(n), RamboOnDiet(n)):
            logw = batched_log_weight(ps)(uniform(ps, 1024, dtype, seed=n),
                                          cond_for(ps, sqrt_s, None, dtype))
            assert logw.dtype == dtype
            w = np.exp(np.asarray(logw, np.float64))
            np.testing.assert_allclose(w, volume, rtol=rtol, err_msg=f"{ps} {sqrt_s}")
    # The same from the full maps.
    for ps, masses in maps_for(dtype):
        if masses is None:
            w = np.exp(sample(ps, None, dtype)[2])
            np.testing.assert_allclose(w, VOLUMES[ps.n, 1000.0], rtol=rtol, err_msg=str(ps))


def test_massive_two_body_weight_is_constant_volume(dtype):
    for ps, masses in maps_for(dtype):
        if ps.n == 2 and masses is not None:
            w = np.exp(sample(ps, masses, dtype)[2])
            # The reference has 9 significant digits.
            np.testing.assert_allclose(w, TTBAR, rtol=tol(dtype, 1e-5, 2e-9), err_msg=str(ps))


@pytest.mark.parametrize("cls", [Rambo, RamboOnDiet])
def test_massive_three_body_mc_volume(cls, dtype):
    ps, masses = cls(3, massive=True), MASSIVE[1][1]
    cond = cond_for(ps, 1000.0, masses, dtype)
    n_chunk = N_EVENTS[jnp.dtype(dtype)]
    chunks = [np.exp(sample(ps, masses, dtype)[2])]
    while sum(c.size for c in chunks) < 90_000:  # same batch shape: no new compilation
        r = uniform(ps, n_chunk, dtype, seed=100 + len(chunks))
        chunks.append(np.exp(np.asarray(batched_forward(ps)(r, cond)[1], np.float64)))
    w = np.concatenate(chunks)
    checks.assert_mc_mean(w, TTG, n_sigma=3.0)
    # The xi-rescaling weight is bounded: max/mean measured 1.39 (the mass shift gives 14).
    assert w.max() / w.mean() < 1.45


# --------------------------------------------------------------------------------------------
# Kinematics: conservation, on-shell, float32 bounds
# --------------------------------------------------------------------------------------------


@pytest.mark.optimized
def test_conservation_and_on_shell(dtype):
    sqrt_s = 1000.0
    for ps, masses in maps_for(dtype):
        _, p, logw = sample(ps, masses, dtype)[:3]
        assert p.shape == (N_EVENTS[jnp.dtype(dtype)], ps.n, 4)
        assert np.all(np.isfinite(logw)), ps
        m = np.zeros(ps.n) if masses is None else np.asarray(masses)
        conservation = np.abs(p.sum(axis=1) - [sqrt_s, 0, 0, 0]).max() / sqrt_s
        on_shell = np.abs(p[..., 0] ** 2 - (p[..., 1:] ** 2).sum(-1) - m**2).max() / sqrt_s**2
        assert conservation <= tol(dtype, F32_CONSERVATION, 1e-10), (ps, conservation)
        assert on_shell <= tol(dtype, F32_ON_SHELL, 1e-9), (ps, on_shell)
        assert np.all(p[..., 0] >= m - 1e-6 * sqrt_s), ps


# --------------------------------------------------------------------------------------------
# RAMBO on diet: inverse and chart Jacobian
# --------------------------------------------------------------------------------------------


@pytest.mark.optimized
def test_diet_round_trip(dtype):
    for ps, masses in maps_for(dtype):
        if not isinstance(ps, RamboOnDiet):
            continue
        r, _, lw_f, r_back, lw_i = sample(ps, masses, dtype)
        err = np.abs(r_back - r).max()
        assert err <= tol(dtype, F32_ROUND_TRIP, 1e-10), (ps, err)
        lsum = np.abs(lw_f + lw_i).max()
        assert lsum <= tol(dtype, 1e-4, 1e-10), (ps, lsum)
    # The shared check, on single-event functions.
    ps, masses = RamboOnDiet(3, massive=True), MASSIVE[1][1]
    cond = cond_for(ps, 1000.0, masses, dtype)
    fwd, inv = jit_o0(ps.forward), jit_o0(ps.inverse)
    checks.assert_round_trip(lambda x: fwd(x, cond), lambda y: inv(y, cond),
                             uniform(ps, 256, dtype), atol=tol(dtype, F32_ROUND_TRIP, 1e-10))


def chart(p: jax.Array, n: int) -> jax.Array:
    """Chart of n-body phase space: ``M_1^2 .. M_{n-2}^2`` of ``Q_i = p_i + ... + p_{n-1}``,
    then ``(cos th_i, phi_i)`` of ``p_i`` in the rest frame of ``Q_i``, ``i = 0 .. n-2``."""
    q = jnp.cumsum(p[::-1], axis=0)[::-1]
    m2 = kin.mass_squared(q[1 : n - 1])
    rest = kin.boost_to_rest_frame(p[: n - 1], q[: n - 1])
    cos = rest[:, 3] / kin.momentum(rest)
    return jnp.concatenate([m2, jnp.stack([cos, kin.azimuth(rest)], axis=-1).ravel()])


def log_chart_density(y: jax.Array, sqrt_s, masses, n: int) -> jax.Array:
    """log of dPhi_n / d(chart) from the recursive factorisation

    dPhi_n = prod_{i=1}^{n-2} dM_i^2 / (2 pi)
             prod_{i=0}^{n-2} sqrt(lambda(M_i^2, M_{i+1}^2, m_i^2)) / (8 pi M_i^2)
                              dcos th_i dphi_i / (4 pi),
    with M_0 = sqrt_s and M_{n-1} = m_{n-1}."""
    m2 = jnp.concatenate([jnp.array([sqrt_s**2]), y[: n - 2], jnp.array([masses[-1] ** 2])])
    lam = kallen(m2[:-1], m2[1:], masses[:-1] ** 2)
    return (-(n - 2) * math.log(2 * math.pi) - (n - 1) * math.log(4 * math.pi)
            + jnp.sum(0.5 * jnp.log(lam) - jnp.log(8 * math.pi * m2[:-1])))


@pytest.mark.x64
def test_diet_weight_is_chart_jacobian():
    # Massive n = 4: mass variables with k = 2 and 1, and the xi-rescaling. (The Newton
    # solves for k >= 3 are checked against the polynomial and their implicit gradients
    # against finite differences below; a chart test at n = 5 costs twice the compile time.)
    ps, masses = RamboOnDiet(4, massive=True), (173.0, 0.0, 4.7, 80.4)
    n = ps.n
    m = np.asarray(masses)
    cond = cond_for(ps, 1000.0, masses, jnp.float64)

    @jit_o0
    def fn(r):
        p, logw = ps.forward(r, cond)
        y = chart(p, n)
        return y, logw - log_chart_density(y, 1000.0, jnp.asarray(m), n)

    # Interior points (phi away from the +-pi branch cut of the chart).
    r = jax.random.uniform(jax.random.key(7), (32, ps.n_random), jnp.float64, 0.02, 0.98)
    r = r.at[:, n - 1 :: 2].set(jnp.clip(r[:, n - 1 :: 2], 0.0, 0.45))
    checks.assert_logdet_matches_jacobian(fn, r, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------------------------
# Batching, tracing, gradients
# --------------------------------------------------------------------------------------------


def test_batch_equals_loop(dtype):
    ps, masses = RamboOnDiet(3, massive=True), MASSIVE[1][1]
    cond = cond_for(ps, 1000.0, masses, dtype)
    fwd, inv = jit_o0(ps.forward), jit_o0(ps.inverse)
    rtol = tol(dtype, 1e-5, 1e-12)
    r = jnp.asarray(sample(ps, masses, dtype)[0][:4], dtype)
    # Components of size up to sqrt_s / 2 = 500 GeV, some near zero.
    checks.assert_batch_equals_loop(lambda x: fwd(x, cond), (r,), rtol=rtol,
                                    atol=tol(dtype, 1e-3, 1e-9))
    # The shared batch (vmap over 4096 or 32768 events) against single events.
    for name, fn, arg, out in [("forward", fwd, 0, 1), ("inverse", inv, 1, 3)]:
        batch = sample(ps, masses, dtype)
        for i in range(3):
            single = fn(jnp.asarray(batch[arg][i], dtype), cond)[0]
            np.testing.assert_allclose(single, batch[out][i], rtol=rtol,
                                       atol=tol(dtype, 1e-3, 1e-9), err_msg=name)


def test_jit_traces_once_for_any_energy_and_masses():
    ps = RamboOnDiet(3, massive=True)
    traces = {"forward": 0, "inverse": 0}

    def forward(r, cond):
        traces["forward"] += 1
        return ps.forward(r, cond)

    def inverse(p, cond):
        traces["inverse"] += 1
        return ps.inverse(p, cond)

    fwd = jit_o0(jax.vmap(forward, in_axes=(0, None)))
    inv = jit_o0(jax.vmap(inverse, in_axes=(0, None)))
    r = uniform(ps, 8, jnp.float32)
    for sqrt_s, masses in [(1000.0, (173.0, 173.0, 0.0)), (500.0, (0.0, 4.7, 4.7)),
                           (91.188, (1.0, 2.0, 3.0))]:
        cond = ps.make_cond(sqrt_s, masses, dtype=jnp.float32)
        p, logw = fwd(r, cond)
        r_back, _ = inv(p, cond)
        np.testing.assert_allclose(np.asarray(p).sum(1)[:, 0], sqrt_s, rtol=1e-5)
        np.testing.assert_allclose(r_back, r, atol=1e-4)
    assert traces == {"forward": 1, "inverse": 1}


@pytest.mark.x64
@pytest.mark.parametrize("ps,masses", [
    (RamboOnDiet(5, massive=True), (173.0, 80.4, 4.7, 0.5, 0.0)),
    (Rambo(2, massive=True), (173.0, 10.0)),
], ids=["diet5m", "rambo2m"])
def test_grad_matches_finite_differences(ps, masses):
    """jax.grad through the root solves (mass variables, xi) w.r.t. r, masses and sqrt_s."""
    n = ps.n
    coeff = jax.random.normal(jax.random.key(1), (n, 4), jnp.float64)
    r0 = jax.random.uniform(jax.random.key(2), (ps.n_random,), jnp.float64, 0.1, 0.9)
    m0 = jnp.asarray(masses, jnp.float64)

    def objective(r, sqrt_s, m):
        p, logw = ps.forward(r, {"sqrt_s": sqrt_s, "masses": m})
        return jnp.sum(coeff * p) / sqrt_s + logw

    # One flat vector (r, sqrt_s / 1000, massive masses / 100): one compiled gradient, and
    # one finite-difference step h = 1e-6 suits every component.
    idx = np.flatnonzero(np.asarray(masses) > 0) if ps.massive else np.zeros(0, int)
    d = ps.n_random

    @jax.jit  # jax.grad in the check traces it: no top-level compiler options here
    def flat(x):
        return objective(x[:d], 1000.0 * x[d], m0.at[idx].set(100.0 * x[d + 1:]))

    x0 = jnp.concatenate([r0, jnp.ones(1), m0[idx] / 100.0])
    checks.assert_grad_matches_fd(flat, x0, h=1e-6, rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------------------------
# The mass variables r = (k+1) u^k - k u^(k+1)
# --------------------------------------------------------------------------------------------


def _tail(w, k):
    """1 - (1-w)^k (1+kw) in float64 as a sum of positive binomial terms."""
    return sum(math.comb(k + 1, j) * w**j * (1 - w) ** (k + 1 - j) for j in range(2, k + 2))


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_mass_fraction_solves_the_polynomial(k, dtype):
    from jaxnis.phasespace.rambo import _mass_fraction

    finfo = np.finfo(dtype)
    # From 1e6 * tiny: XLA on CPU flushes denormals to zero, and u ~ r / (k + 1) for k = 1.
    small = np.geomspace(1e6 * float(finfo.tiny), 0.5, 400)
    near_one = 1.0 - np.geomspace(float(finfo.eps), 0.5, 400)
    r = np.concatenate([small, np.linspace(0.0, 1.0, 401), near_one]).astype(dtype)
    u, w = jit_o0(jax.vmap(lambda x: _mass_fraction(x, k)))(jnp.asarray(r))
    r, u, w = (np.asarray(a, np.float64) for a in (r, u, w))
    assert np.all((u >= 0) & (u <= 1) & (w >= 0) & (w <= 1))
    assert np.all(np.diff(u[400:801]) >= 0)  # monotone on the uniform grid
    np.testing.assert_allclose(u + w, 1.0, atol=2 * finfo.eps)
    low, high = (r > 0) & (r <= 0.5), (r > 0.5) & (r < 1)
    res_low = np.abs(u[low] ** k * (1 + k * w[low]) - r[low]) / r[low]
    res_high = np.abs(_tail(w[high], k) - (1 - r[high])) / (1 - r[high])
    # Relative residual in the smaller of r, 1 - r (so also 1 - u to relative precision):
    # the conditioning is ~ k |log u| eps for tiny r (1.5e-13 at r = 1e-300).
    bound = tol(dtype, 5e-5, 1e-12)
    assert res_low.max() <= bound and res_high.max() <= bound, (res_low.max(), res_high.max())


@pytest.mark.x64
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_mass_fraction_gradient_is_implicit(k):
    from jaxnis.phasespace.rambo import _mass_fraction

    # d/dr of u + 0.3 (1 - u) checks both outputs' tangents (du and dw = -du).
    f = jax.jit(lambda x: jnp.sum(jax.vmap(lambda y: _mass_fraction(y, k))(x)[0]
                                   + 0.3 * jax.vmap(lambda y: _mass_fraction(y, k))(x)[1]))
    r0 = jnp.asarray([1e-3, 0.3, 0.5, 0.7, 0.999], jnp.float64)
    checks.assert_grad_matches_fd(f, r0, h=1e-7, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_static_errors_name_the_value():
    for bad in (1, 0, -3, 2.5, True, "4"):
        for cls in (Rambo, RamboOnDiet):
            with pytest.raises(ValueError, match="n="):
                cls(bad)
    with pytest.raises(ValueError, match="massive"):
        RamboOnDiet(3, massive="yes")
    ps = RamboOnDiet(3, massive=True)
    cond = ps.make_cond(1000.0, (1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match=r"\(5,\)"):
        ps.forward(jnp.zeros(6), cond)
    with pytest.raises(ValueError, match=r"\(12,\)"):
        Rambo(3).forward(jnp.zeros(5), {"sqrt_s": 1000.0})
    with pytest.raises(ValueError, match=r"\(3,\)"):
        ps.forward(jnp.zeros(5), {"sqrt_s": 1000.0, "masses": jnp.zeros(4)})
    with pytest.raises(ValueError, match="masses"):
        ps.forward(jnp.zeros(5), {"sqrt_s": 1000.0})
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        ps.inverse(jnp.zeros((4, 4)), cond)
    with pytest.raises(ValueError, match="expected 3 masses, got 2"):
        ps.make_cond(1000.0, (1.0, 2.0))
    with pytest.raises(ValueError, match="-1.0"):
        make_cond(1000.0, (1.0, -1.0))
    with pytest.raises(ValueError, match="1200.0"):
        make_cond(1000.0, (600.0, 600.0))
    with pytest.raises(ValueError, match="sqrt_s=-5.0"):
        make_cond(-5.0)
    with pytest.raises(ValueError, match="nan"):
        make_cond(float("nan"))


@pytest.mark.parametrize("ps", [Rambo(3, massive=True), RamboOnDiet(3, massive=True)],
                         ids=["Rambo", "RamboOnDiet"])
def test_traced_bad_values_give_minus_inf_and_finite_momenta(ps):
    # Not dtype specific; run in the float32 process only (compilation time).
    dtype = jnp.float32
    n, d = ps.n, ps.n_random
    r_ok = uniform(ps, 1, dtype, seed=4)[0]
    cases = [  # (r, sqrt_s, masses, valid)
        (r_ok, 1000.0, [100.0, 50.0, 0.0, 0.0], True),
        (r_ok, 1000.0, [600.0, 500.0, 0.0, 0.0], False),  # sum of masses > sqrt_s
        (r_ok, 1000.0, [-1.0, 50.0, 0.0, 0.0], False),  # negative mass
        (r_ok, -10.0, [0.0, 0.0, 0.0, 0.0], False),
        (r_ok.at[0].set(1.5), 1000.0, [1.0, 1.0, 1.0, 1.0], False),
        (r_ok.at[1].set(-0.1), 1000.0, [1.0, 1.0, 1.0, 1.0], False),
        (r_ok.at[2].set(jnp.nan), 1000.0, [1.0, 1.0, 1.0, 1.0], False),
        (jnp.zeros((d,), dtype), 1000.0, [1.0, 1.0, 1.0, 1.0], True),  # cube corners
        (jnp.ones((d,), dtype), 1000.0, [1.0, 1.0, 1.0, 1.0], True),
    ]
    r = jnp.stack([c[0] for c in cases])
    sqrt_s = jnp.asarray([c[1] for c in cases], dtype)
    masses = jnp.asarray([c[2][:n] for c in cases], dtype)
    valid = np.array([c[3] for c in cases])

    def objective(r, sqrt_s, masses):
        p, logw = ps.forward(r, {"sqrt_s": sqrt_s, "masses": masses})
        return jnp.sum(p) / 1000.0 + jnp.where(jnp.isfinite(logw), logw, 0.0), (p, logw)

    grad = jit_o0(jax.vmap(jax.grad(objective, argnums=(0, 1, 2), has_aux=True)))
    grads, (p, logw) = grad(r, sqrt_s, masses)
    logw = np.asarray(logw)
    assert np.all(np.isneginf(logw[~valid])), logw
    assert np.isfinite(logw[0])
    assert np.all(np.isfinite(np.asarray(p)))
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))
    if isinstance(ps, RamboOnDiet):
        r_back, lw_inv = jit_o0(jax.vmap(ps.inverse))(p, {"sqrt_s": sqrt_s, "masses": masses})
        assert np.all(np.isfinite(np.asarray(r_back)))
        # The inverse sees the condition only: cases 1-3 have an invalid one.
        assert np.all(np.isneginf(np.asarray(lw_inv)[1:4]))
