"""Tests of jaxnis.estimators: estimates, combination, unweighting, compaction.

Synthetic weights: lognormal ``w = exp(s z)``, ``z ~ N(0, 1)``, with mean ``exp(s^2/2)`` and
variance ``(exp(s^2) - 1) exp(s^2)``; and ``w = 3 x^2`` for ``x`` uniform (target density
``p(x) = 3 x^2``, ``I = 1``, ``max w = 3``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxnis import estimators as est
from tests.conftest import tol

SIGMA_LN = 0.5
LN_MEAN = np.exp(SIGMA_LN**2 / 2)
LN_VAR = (np.exp(SIGMA_LN**2) - 1) * np.exp(SIGMA_LN**2)


def lognormal(key, shape, dtype):
    return jnp.exp(SIGMA_LN * jax.random.normal(key, shape, dtype=dtype))


@functools.partial(jax.jit, static_argnames=("n_seeds", "n_iter", "n_events"))
def _iterations(key, dtype_probe, *, n_seeds, n_iter, n_events):
    """Per-iteration estimates [n_seeds, n_iter] of lognormal weights."""
    w = lognormal(key, (n_seeds, n_iter, n_events), dtype_probe.dtype)
    return jax.vmap(jax.vmap(est.estimate))(w)


def test_estimate_within_3_sigma_and_error_matches_spread(dtype):
    it = _iterations(jax.random.key(0), jnp.zeros((), dtype), n_seeds=400, n_iter=8,
                     n_events=1000)
    assert it.value.dtype == dtype and it.error.dtype == dtype
    first = it.value[0, 0], it.error[0, 0]
    assert abs(float(first[0]) - LN_MEAN) < 3 * float(first[1])
    values = np.asarray(it.value, np.float64).ravel()
    errors = np.asarray(it.error, np.float64).ravel()
    # 3200 estimates: the spread of the values matches the reported errors to ~1.3%
    # (1 sigma of a sample standard deviation from 3200 draws); allow 5%.
    assert abs(values.std(ddof=1) / errors.mean() - 1) < 0.05
    assert abs(values.std(ddof=1) / np.sqrt(LN_VAR / 1000) - 1) < 0.05
    assert abs(values.mean() - LN_MEAN) < 3 * values.std(ddof=1) / np.sqrt(values.size)
    variances = np.asarray(it.variance, np.float64).ravel()
    assert abs(variances.mean() - LN_VAR) < 3 * variances.std(ddof=1) / np.sqrt(variances.size)
    assert np.all(np.asarray(it.n) == 1000) and np.all(np.asarray(it.n_nonfinite) == 0)

    # Combination over the 8 iterations of each of 400 seeds: pulls are standard normal.
    comb = jax.vmap(est.combine)(it.value, it.error)
    pull = (np.asarray(comb.value, np.float64) - LN_MEAN) / np.asarray(comb.error, np.float64)
    assert abs(pull.mean()) < 0.2, pull.mean()
    assert 0.8 < pull.std(ddof=1) < 1.2, pull.std(ddof=1)
    # chi2/dof of consistent iterations averages 1 (sd of the mean over 400 seeds: 0.027).
    chi2_dof = np.asarray(comb.chi2_dof, np.float64)
    assert abs(chi2_dof.mean() - 1) < 0.1, chi2_dof.mean()
    assert np.all(np.asarray(comb.dof) == 7) and np.all(np.asarray(comb.n_used) == 8)

    # Inconsistent iterations: half of them shifted by 10 errors.
    shifted = it.value.at[:, ::2].add(10 * it.error[:, ::2])
    bad = jax.vmap(est.combine)(shifted, it.error)
    assert np.min(np.asarray(bad.chi2_dof)) > 10

    # The lax.scan accumulator gives the same result as the stacked combination.
    def scan_one(values, errors):
        state, _ = jax.lax.scan(
            lambda s, ve: (est.combine_update(s, *ve), None), est.combine_init(dtype),
            (values, errors))
        return est.combine_result(state)

    acc = jax.jit(jax.vmap(scan_one))(it.value, it.error)
    r = tol(dtype, 1e-5, 1e-12)
    for field in ("value", "error", "chi2_dof"):
        np.testing.assert_allclose(getattr(acc, field), getattr(comb, field), rtol=r,
                                   atol=r if field == "chi2_dof" else 0)
    assert acc.value.dtype == dtype


COMBINE_CASES = [
    # values, errors, mask -> value, error, chi2, n_used, n_zero_error
    ([1.0, 2.0, 3.0], [0.0, 1.0, 1.0], None, 2.5, 1 / np.sqrt(2), 0.5, 2, 1),
    ([1.0, 4.0], [1.0, 2.0], None, (1 + 1) / (1 + 0.25), 1 / np.sqrt(1.25), 1.8, 2, 0),
    ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], None, 0.0, 0.0, 0.0, 3, 3),
    ([1.0, 2.0], [0.0, 0.0], None, 1.5, 0.0, np.inf, 2, 2),
    ([np.nan, 2.0, 5.0], [1.0, 1.0, np.inf], None, 2.0, 1.0, 0.0, 1, 0),
    ([7.0, 2.0, 4.0], [1.0, 1.0, 1.0], [False, True, True], 3.0, 1 / np.sqrt(2), 2.0, 2, 0),
    ([7.0, 2.0], [1.0, 1.0], [False, False], 0.0, 0.0, 0.0, 0, 0),
]


def test_average_of_iterations_of_one_sampler():
    """Plain mean, error sqrt(sum s^2) / K, chi2 against that mean; non-finite iterations
    left out; the mean of K pooled batches equals the pooled estimate."""
    res = est.average(jnp.asarray([1.0, 1.2, jnp.nan]), jnp.asarray([0.1, 0.2, 0.1]))
    np.testing.assert_allclose([res.value, res.error, res.chi2],
                               [1.1, np.sqrt(0.05) / 2, 1.0 + 0.25], rtol=1e-6)
    assert int(res.n_used) == 2 and int(res.dof) == 1
    np.testing.assert_allclose(float(res.chi2_dof), 1.25, rtol=1e-6)
    w = jax.random.lognormal(jax.random.key(0), 1.0, (4, 1000))
    parts = [est.estimate(row) for row in w]
    pooled = est.estimate(w.reshape(-1))
    avg = est.average(jnp.stack([p.value for p in parts]), jnp.stack([p.error for p in parts]))
    np.testing.assert_allclose(float(avg.value), float(pooled.value), rtol=1e-5)
    np.testing.assert_allclose(float(avg.error), float(pooled.error), rtol=0.05)
    empty = est.average(jnp.asarray([jnp.nan]), jnp.asarray([1.0]))
    assert float(empty.value) == 0.0 and float(empty.error) == 0.0 and int(empty.n_used) == 0


@pytest.mark.parametrize("case", COMBINE_CASES)
def test_combine_edge_cases(case):
    """Zero-error iterations are excluded unless all are zero; invalid ones ignored. The
    stacked function and the scan accumulator agree."""
    values, errors, mask, value, error, chi2, n_used, n_zero = case
    values = jnp.asarray(values, jnp.float32)
    errors = jnp.asarray(errors, jnp.float32)
    got = est.combine(values, errors, mask)
    state = est.combine_init(jnp.float32)
    for k in range(values.shape[0]):
        state = est.combine_update(state, values[k], errors[k],
                                   True if mask is None else mask[k])
    for res in (got, est.combine_result(state)):
        np.testing.assert_allclose(
            [res.value, res.error, res.chi2], [value, error, chi2], rtol=1e-6, atol=1e-7)
        assert int(res.n_used) == n_used and int(res.n_zero_error) == n_zero
        assert int(res.dof) == max(n_used - 1, 0)


@jax.jit
def _all_zero_outputs(w):
    e = est.estimate(w)
    g = jax.grad(lambda x: est.estimate(x).error + est.estimate(x).value)(w)
    log_e = est.estimate_log(jnp.log(w))
    ch = est.estimate_channels(w, jnp.arange(w.shape[0]) % 4, 4)
    return e, g, log_e, est.effective_sample_size(w), ch


def test_all_zero_weights_flagged_without_nan(dtype):
    e, g, log_e, ess, ch = _all_zero_outputs(jnp.zeros(128, dtype))
    assert e.value == 0 and e.error == 0 and e.variance == 0 and bool(e.all_zero)
    assert e.value.dtype == dtype
    assert np.all(np.isfinite(g))
    assert log_e.value == 0 and log_e.error == 0 and bool(log_e.all_zero)
    assert ess == 0
    assert ch.total.value == 0 and ch.total.error == 0 and bool(ch.total.all_zero)
    assert np.all(np.asarray(ch.error) == 0)


def test_nonfinite_weights_counted_and_masked():
    w = jnp.array([1.0, jnp.nan, 3.0, jnp.inf, 2.0, -jnp.inf])
    e = est.estimate(w)
    ref = np.array([1.0, 0.0, 3.0, 0.0, 2.0, 0.0])
    assert int(e.n_nonfinite) == 3 and int(e.n) == 6 and int(e.n_nonzero) == 3
    np.testing.assert_allclose(e.value, ref.mean(), rtol=1e-6)
    np.testing.assert_allclose(e.error, ref.std(ddof=1) / np.sqrt(6), rtol=1e-6)
    g = jax.grad(lambda x: est.estimate(x).value)(w)
    np.testing.assert_allclose(g, np.where(np.isfinite(np.asarray(w)), 1 / 6, 0.0))


def test_estimate_log_matches_and_survives_overflow(dtype):
    key = jax.random.key(1)
    z = jax.random.normal(key, (1000,), dtype)
    sign = jnp.where(jnp.arange(1000) % 5 == 0, -1.0, 1.0).astype(dtype)
    direct = est.estimate(sign * jnp.exp(z))
    via_log = jax.jit(est.estimate_log)(z.at[7].set(jnp.nan), sign)
    w_ref = np.array(sign * jnp.exp(z), np.float64)
    w_ref[7] = 0.0
    np.testing.assert_allclose(via_log.value, w_ref.mean(), rtol=tol(dtype, 1e-5, 1e-12))
    np.testing.assert_allclose(via_log.error, w_ref.std(ddof=1) / np.sqrt(1000),
                               rtol=tol(dtype, 1e-5, 1e-12))
    assert int(via_log.n_nonfinite) == 1
    assert abs(float(direct.value) - w_ref.mean()) < 1e-2  # sanity of the reference
    # log w ~ 60 + z: exp(log w) overflows float32 weights' squares but the result fits.
    big = est.estimate_log(z + 60.0)
    w64 = np.exp(np.asarray(z, np.float64))
    np.testing.assert_allclose(float(big.value) / np.exp(60.0), w64.mean(),
                               rtol=tol(dtype, 1e-5, 1e-12))
    np.testing.assert_allclose(float(big.error) / np.exp(60.0),
                               w64.std(ddof=1) / np.sqrt(1000), rtol=tol(dtype, 1e-5, 1e-12))


def test_estimate_channels_stratified_and_mixture(dtype):
    """Stratified: 300 events U(0, 2) in channel 0 (I_0 = 1), 700 Exp(3) in channel 1
    (I_1 = 3). Per-channel values/errors equal numpy's; the total is within 3 sigma of 4."""
    k0, k1, k2 = jax.random.split(jax.random.key(2), 3)
    w = jnp.concatenate([jax.random.uniform(k0, (300,), dtype, 0.0, 2.0),
                         3.0 * jax.random.exponential(k1, (700,), dtype)])
    ids = jnp.concatenate([jnp.zeros(300, jnp.int32), jnp.ones(700, jnp.int32)])
    perm = jax.random.permutation(k2, 1000)
    w, ids = w[perm], ids[perm]
    fn = jax.jit(est.estimate_channels, static_argnames=("num_channels", "stratified"))
    res = fn(w, ids, num_channels=2)
    wn, idn = np.asarray(w, np.float64), np.asarray(ids)
    parts = [wn[idn == c] for c in range(2)]
    r = tol(dtype, 1e-5, 1e-12)
    np.testing.assert_allclose(res.value, [p.mean() for p in parts], rtol=r)
    np.testing.assert_allclose(res.error, [p.std(ddof=1) / np.sqrt(p.size) for p in parts],
                               rtol=r)
    assert res.n.tolist() == [300, 700]
    np.testing.assert_allclose(res.total.error, np.sqrt(np.sum(np.asarray(res.error) ** 2)),
                               rtol=r)
    assert abs(float(res.total.value) - 4.0) < 3 * float(res.total.error)

    mix = fn(w, ids, num_channels=2, stratified=False)
    np.testing.assert_allclose(mix.total.value, wn.mean(), rtol=r)
    np.testing.assert_allclose(jnp.sum(mix.value), mix.total.value, rtol=r)
    for c in range(2):
        wc = np.where(idn == c, wn, 0.0)
        np.testing.assert_allclose(mix.value[c], wc.mean(), rtol=r)
        np.testing.assert_allclose(mix.error[c], wc.std(ddof=1) / np.sqrt(1000), rtol=r)


@pytest.mark.parametrize("scale", [1e25, 1e-25])
def test_estimates_and_combinations_hold_at_any_weight_scale(scale):
    """float32 weights of order 1e25 (squares beyond float32) or 1e-25 (squares below it):
    values and errors are the scaled ones of unit weights, also per channel and after
    combining iterations, stacked or one by one (they gave an infinite error and,
    combined, the value 0)."""
    w = lognormal(jax.random.key(5), (1000,), jnp.float32)
    ids = (jnp.arange(1000) % 3).astype(jnp.int32)
    base, big = est.estimate(w), est.estimate(w * scale)
    np.testing.assert_allclose(float(big.value) / scale, float(base.value), rtol=1e-5)
    np.testing.assert_allclose(float(big.error) / scale, float(base.error), rtol=1e-5)
    for stratified in (True, False):
        a = est.estimate_channels(w, ids, 3, stratified=stratified)
        b = est.estimate_channels(w * scale, ids, 3, stratified=stratified)
        np.testing.assert_allclose(np.asarray(b.error) / scale, a.error, rtol=1e-5)
        np.testing.assert_allclose(float(b.total.error) / scale, float(a.total.error),
                                   rtol=1e-5)
    values = jnp.array([1.0, 1.1, 0.95], jnp.float32)
    errors = jnp.array([0.05, 0.1, 0.04], jnp.float32)
    def scanned(values, errors):
        state = est.combine_init(jnp.float32)
        for v, e in zip(values, errors, strict=True):
            state = est.combine_update(state, v, e)
        return est.combine_result(state)

    for fn in (est.combine, est.average, scanned):
        a, b = fn(values, errors), fn(values * scale, errors * scale)
        assert int(b.n_used) == 3
        np.testing.assert_allclose(float(b.value) / scale, float(a.value), rtol=1e-5)
        np.testing.assert_allclose(float(b.error) / scale, float(a.error), rtol=1e-5)
        np.testing.assert_allclose(float(b.chi2), float(a.chi2), rtol=1e-4)


def test_stratified_pull_over_seeds():
    """The stratified total is unbiased with correct errors: pulls over 300 seeds."""
    def one(key):
        k0, k1 = jax.random.split(key)
        w = jnp.concatenate([jax.random.uniform(k0, (200,), minval=0.0, maxval=2.0),
                             3.0 * jax.random.exponential(k1, (300,))])
        ids = jnp.concatenate([jnp.zeros(200, jnp.int32), jnp.ones(300, jnp.int32)])
        return est.estimate_channels(w, ids, 2).total

    tot = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(3), 300))
    pull = (np.asarray(tot.value, np.float64) - 4.0) / np.asarray(tot.error, np.float64)
    assert abs(pull.mean()) < 0.2 and 0.8 < pull.std(ddof=1) < 1.2, (pull.mean(), pull.std())


def test_blocked_segment_sum_accuracy():
    """Blocked sums match float64 bincount far better than a plain scatter-add."""
    k1, k2 = jax.random.split(jax.random.key(4))
    x = jax.random.exponential(k1, (200_000,))
    seg = jax.random.randint(k2, (200_000,), -1, 6)  # id -1 and 5 are out of range for C=5
    got = jax.jit(est.blocked_segment_sum, static_argnames="num_segments")(x, seg,
                                                                           num_segments=5)
    sn = np.asarray(seg)
    ref = np.bincount(sn[(sn >= 0) & (sn < 5)],
                      np.asarray(x, np.float64)[(sn >= 0) & (sn < 5)], minlength=5)
    np.testing.assert_allclose(got, ref, rtol=5e-7)
    two_d = est.blocked_segment_sum(jnp.stack([x, 2 * x], axis=1), seg, 5)
    np.testing.assert_allclose(two_d[:, 1], 2 * np.asarray(got), rtol=1e-6)


def test_effective_sample_size():
    assert float(est.effective_sample_size(jnp.full(50, 3.0))) == pytest.approx(50.0)
    assert float(est.effective_sample_size(jnp.zeros(50).at[3].set(7.0))) == pytest.approx(1.0)
    w = lognormal(jax.random.key(5), (1000,), jnp.float32)
    wn = np.asarray(w, np.float64)
    np.testing.assert_allclose(est.effective_sample_size(w), wn.sum() ** 2 / (wn**2).sum(),
                               rtol=1e-5)
    huge = est.effective_sample_size(w * 1e30)  # w^2 would overflow float32
    np.testing.assert_allclose(huge, wn.sum() ** 2 / (wn**2).sum(), rtol=1e-5)


# ---- unweighting ------------------------------------------------------------------------


N_UNW = 200_000


@functools.partial(jax.jit, static_argnames="capacity")
def _unweight_run(key, quantile, *, capacity):
    kx, ku = jax.random.split(key)
    x = jax.random.uniform(kx, (N_UNW,))
    w = 3.0 * x**2
    w_max = jnp.where(quantile < 1.0, est.max_weight_quantile(w, quantile), 3.0)
    out = est.unweight(ku, w, w_max)
    info = est.unweighting_metrics(w, w_max)
    buf = est.compact(out.accepted, {"x": x, "weight": out.weight}, capacity)
    return out, info, buf, w_max


def test_unweighted_sample_matches_target_and_efficiency():
    """w_max = max w = 3: accepted events follow p(x) = 3x^2 (chi2 test, 20 bins) and the
    acceptance equals the efficiency <w>/w_max = 1/3 within 3 binomial sigma."""
    out, info, buf, _ = _unweight_run(jax.random.key(6), jnp.float32(1.0), capacity=N_UNW)
    n_acc = int(out.n_accepted)
    assert int(buf.count) == n_acc and int(buf.n_dropped) == 0
    x_acc = np.asarray(buf.data["x"][:n_acc], np.float64)
    assert np.all(np.asarray(buf.data["weight"][:n_acc]) == 1.0)  # no overweights
    edges = np.linspace(0, 1, 21)
    counts, _ = np.histogram(x_acc, edges)
    expected = n_acc * np.diff(edges**3)
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert stats.chi2.sf(chi2, df=19) > 1e-3, chi2
    p = 1.0 / 3.0
    sigma = np.sqrt(p * (1 - p) / N_UNW)
    assert abs(n_acc / N_UNW - p) < 3 * sigma
    assert abs(float(info.efficiency) - p) < 3 * sigma * 3  # <w> has sd 2/sqrt(5 N)
    np.testing.assert_allclose(info.acceptance, info.efficiency, rtol=1e-6)
    assert float(info.overweight_events) == 0.0 and float(info.excess_xs) == 0.0


def test_unweighting_with_overweights_is_unbiased():
    """w_max = 0.9 quantile: 10% of the events are overweight and keep w/w_max; the
    unweighted sample still estimates I = 1, and the acceptance matches its prediction."""
    out, info, buf, w_max = _unweight_run(jax.random.key(7), jnp.float32(0.9), capacity=4096)
    w_max = float(w_max)
    # F(w) = sqrt(w/3) for w = 3x^2, x uniform: F^-1(0.9) = 3 * 0.81, density there
    # 1 / (2 sqrt(3 * 2.43)); sd of the sample quantile sqrt(0.9 * 0.1 / N) / density.
    q_sd = np.sqrt(0.09 / N_UNW) * 2 * np.sqrt(3 * 2.43)
    assert abs(w_max - 2.43) < 3 * q_sd
    np.testing.assert_allclose(info.overweight_events, 0.1, atol=3 * np.sqrt(0.09 / N_UNW))
    z = w_max * np.asarray(out.weight, np.float64)
    assert abs(z.mean() - 1.0) < 3 * z.std(ddof=1) / np.sqrt(N_UNW)
    acc = int(out.n_accepted) / N_UNW
    a = float(info.acceptance)
    assert abs(acc - a) < 3 * np.sqrt(a * (1 - a) / N_UNW)
    assert float(info.acceptance) < float(info.efficiency)
    over = np.asarray(out.weight) > 1
    np.testing.assert_allclose(np.mean(over), info.overweight_events, rtol=1e-6)
    # The fixed-capacity buffer keeps the first 4096 accepted events in order.
    acc_idx = np.flatnonzero(np.asarray(out.accepted))
    assert int(buf.count) == 4096 and int(buf.n_dropped) == acc_idx.size - 4096
    kx, _ = jax.random.split(jax.random.key(7))
    x = np.asarray(jax.random.uniform(kx, (N_UNW,)))
    np.testing.assert_array_equal(np.asarray(buf.data["x"]), x[acc_idx[:4096]])


def test_unweight_degenerate_inputs():
    key = jax.random.key(8)
    w = jnp.array([0.0, 1.0, jnp.nan, -2.0, 5.0])
    none = est.unweight(key, w, 0.0)
    assert int(none.n_accepted) == 0 and np.all(np.asarray(none.weight) == 0)
    out = est.unweight(key, w, 1.0)
    acc = np.asarray(out.accepted)
    assert acc.tolist() == [False, True, False, True, True]  # |w| >= w_max always accepted
    np.testing.assert_allclose(out.weight, [0.0, 1.0, 0.0, -2.0, 5.0])
    info = est.unweighting_metrics(jnp.zeros(10), 0.0)
    assert all(np.isfinite(v) and v == 0 for v in info)


def test_max_weight_estimators():
    w = jax.random.uniform(jax.random.key(9), (10_000,))
    quantile = jax.jit(est.max_weight_quantile)
    xs_fraction = jax.jit(est.max_weight_xs_fraction)
    np.testing.assert_allclose(quantile(w, 0.99), np.quantile(np.asarray(w), 0.99), rtol=1e-6)
    # Cross-section fraction: check against brute force, including minimality.
    for frac in (1e-3, 1e-2, 0.2):
        w_max = float(xs_fraction(w, frac))
        a = np.asarray(w, np.float64)
        tail = a[a > w_max].sum() / a.sum()
        below = a[a < w_max].max()
        assert tail <= frac < a[a > below].sum() / a.sum()
    ties = jnp.array([1.0, 1.0, 1.0, 1.0, 5.0, 5.0])  # sum 14, the fives carry 10/14
    assert float(xs_fraction(ties, 0.5)) == 5.0
    assert float(xs_fraction(ties, 0.75)) == 1.0
    assert float(xs_fraction(jnp.zeros(6), 0.1)) == 0.0
    # Bootstrap: the median of maxima of m = 100 uniforms is 2^(-1/100) = 0.99309; the
    # median of 64 such maxima has sd ~ 0.0015.
    boot = jax.jit(est.max_weight_bootstrap, static_argnames=("n_subsamples",
                                                              "subsample_size"))
    b = float(boot(jax.random.key(10), w, n_subsamples=64, subsample_size=100))
    assert abs(b - 2 ** (-1 / 100)) < 0.006, b
    # One huge outlier sets the plain maximum but none of the robust estimates.
    wo = w.at[17].set(1e6)
    assert float(boot(jax.random.key(10), wo, n_subsamples=64, subsample_size=100)) < 1.0
    assert float(quantile(wo, 1 - 1e-3)) < 1.0
    assert float(boot(jax.random.key(11), wo)) < 1.0  # default sub-sample size N // 10


def test_compact_into_scan_keeps_order_and_counts():
    """Appending three batches into one fixed buffer inside lax.scan equals boolean
    indexing + concatenation, truncated at the capacity, with the overflow counted."""
    keys = jax.random.split(jax.random.key(12), 3)
    sel = jax.vmap(lambda k: jax.random.bernoulli(k, 0.3, (100,)))(keys)
    data = jnp.arange(300).reshape(3, 100)
    capacity = 64

    def body(carry, inp):
        buf, count = carry
        s, d = inp
        out = est.compact_into(buf, count, s, d)
        return (out.data, out.count), out.n_dropped

    (buf, count), dropped = jax.jit(lambda s, d: jax.lax.scan(
        body, (jnp.full(capacity, -1), jnp.int32(0)), (s, d)))(sel, data)
    flat = np.asarray(data).ravel()[np.asarray(sel).ravel()]
    assert int(count) == min(flat.size, capacity)
    assert int(dropped[-1]) == flat.size - capacity
    np.testing.assert_array_equal(np.asarray(buf)[: int(count)], flat[:capacity])
    # A roomy buffer leaves the unused slots untouched (zeros for `compact`).
    roomy = est.compact(sel[0], data[0], 128)
    n = int(sel[0].sum())
    np.testing.assert_array_equal(np.asarray(roomy.data)[:n], np.asarray(data[0])[sel[0]])
    assert np.all(np.asarray(roomy.data)[n:] == 0) and int(roomy.n_dropped) == 0


def test_static_validation():
    with pytest.raises(ValueError, match="at least 2"):
        est.estimate(jnp.ones(1))
    with pytest.raises(ValueError, match="1-D"):
        est.estimate(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="num_channels"):
        est.estimate_channels(jnp.ones(4), jnp.zeros(4, jnp.int32), 0)
    with pytest.raises(ValueError, match="capacity"):
        est.compact(jnp.ones(4, bool), jnp.ones(4), 0)
    with pytest.raises(ValueError, match="n_subsamples"):
        est.max_weight_bootstrap(jax.random.key(0), jnp.ones(4), n_subsamples=0)
    with pytest.raises(ValueError, match="equal shape"):
        est.combine(jnp.ones(3), jnp.ones(2))
    for combination in (est.combine, est.average):
        with pytest.raises(ValueError, match="no iterations to combine"):
            combination(jnp.zeros(0), jnp.zeros(0))
    with pytest.raises(ValueError, match=r"fraction must be a number in \[0, 1\], got 1.5"):
        est.max_weight_xs_fraction(jnp.ones(4), 1.5)
    with pytest.raises(ValueError, match=r"quantile must be a number in \[0, 1\], got -0.1"):
        est.max_weight_quantile(jnp.ones(4), -0.1)
    # Traced fractions are not checked (and not refused).
    w = jnp.arange(1.0, 5.0)
    assert jax.jit(est.max_weight_xs_fraction)(w, 0.5) == est.max_weight_xs_fraction(w, 0.5)
