"""Element-wise transforms and masks: parametrisation, limits, closed forms, validation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnis.flows import (
    OddsAffine,
    Permutation,
    PiecewiseLinear,
    PiecewiseQuadratic,
    RationalQuadraticSpline,
    binary_masks,
    checkerboard_masks,
    conditions_all,
    linear_params_from_heights,
    make_masks,
    make_transform,
    random_masks,
    rqs_params_from_knots,
)
from jaxnis.flows.masks import validate_masks
from jaxnis.flows.splines import _rqs_apply
from tests.conftest import tol


def test_zero_raw_parameters_are_exactly_unit_slopes_and_equal_bins(dtype):
    spline = RationalQuadraticSpline(n_bins=7, min_derivative=0.2)
    xk, yk, dk = spline.knots(jnp.zeros((2, spline.n_params), dtype))
    assert dk.dtype == dtype
    np.testing.assert_array_equal(dk, 1.0)  # exactly 1: the identity needs s = d = 1
    np.testing.assert_array_equal(xk, yk)  # identical bins, so s_k = h_k / w_k = 1 exactly
    np.testing.assert_array_equal(xk[:, [0, -1]], [[0.0, 1.0]] * 2)
    np.testing.assert_allclose(np.diff(xk), 1 / 7, rtol=tol(dtype, 1e-6, 1e-14))


def test_slopes_train_from_the_identity(dtype):
    """At zero raw parameters (every flow's start) the knot slopes have their true derivative
    ``(1 - min_d) sigmoid(0) / log 2`` and the log-density a non-zero gradient in them."""
    spline = RationalQuadraticSpline(n_bins=4, min_derivative=0.2)

    def slope(r):
        return spline.knots(jnp.zeros(spline.n_params, dtype).at[8:].set(r))[2]

    jac = jax.jacfwd(slope)(jnp.zeros(5, dtype))
    np.testing.assert_allclose(jnp.diag(jac), 0.8 * 0.5 / np.log(2), rtol=tol(dtype, 1e-6, 1e-14))

    def log_det(raw):
        return spline.forward_and_log_det(raw[None], jnp.full((1,), 0.3, dtype))[1].sum()

    g = jax.grad(log_det)(jnp.zeros(spline.n_params, dtype))
    # x = 0.3 lies in bin 1 (knots 0.25, 0.5): its two slopes, d_1 and d_2, move the density
    assert abs(float(g[8 + 1])) > 0.1 and abs(float(g[8 + 2])) > 0.1


def test_rqs_params_from_knots_inverts_the_normalisation(dtype):
    spline = RationalQuadraticSpline(n_bins=6, min_bin_width=1e-3, min_bin_height=1e-2,
                                     min_derivative=1e-2)
    rng = np.random.default_rng(0)
    widths = rng.uniform(0.05, 1.0, (4, 6))
    heights = rng.uniform(0.05, 1.0, (4, 6))
    derivs = rng.uniform(0.05, 30.0, (4, 7))
    raw = spline.params_from_knots(jnp.asarray(widths, dtype), jnp.asarray(heights, dtype),
                                   jnp.asarray(derivs, dtype))
    assert raw.shape == (4, spline.n_params) and raw.dtype == dtype
    xk, yk, dk = spline.knots(raw)
    rtol = tol(dtype, 2e-5, 1e-12)
    np.testing.assert_allclose(np.diff(xk), widths / widths.sum(-1, keepdims=True), rtol=rtol)
    np.testing.assert_allclose(np.diff(yk), heights / heights.sum(-1, keepdims=True), rtol=rtol)
    np.testing.assert_allclose(dk, derivs, rtol=rtol)
    # The module-level function is the same map.
    np.testing.assert_array_equal(
        raw, rqs_params_from_knots(widths, heights, derivs, min_bin_width=1e-3,
                                   min_bin_height=1e-2, min_derivative=1e-2).astype(dtype))
    # Values below the limits are raised to (just above) them rather than producing -inf.
    raw = spline.params_from_knots(np.array([1.0, 0, 0, 0, 0, 0]), np.ones(6), np.zeros(7))
    xk, _, dk = spline.knots(raw)
    assert np.all(np.isfinite(raw)) and np.all(np.diff(xk) >= 1e-3) and np.all(dk >= 1e-2)


def test_rqs_from_a_vegas_grid_passes_through_its_knots(dtype):
    """Widths 1/K (uniform input bins), heights = grid increments, slopes from neighbouring
    h/w: the spline maps k/K exactly to the grid's cumulative increments, like VEGAS."""
    k = 5
    inc = np.array([0.1, 0.4, 0.2, 0.05, 0.25])
    slopes = inc * k
    derivs = np.concatenate([[slopes[0]], 0.5 * (slopes[1:] + slopes[:-1]), [slopes[-1]]])
    spline = RationalQuadraticSpline(n_bins=k)
    raw = spline.params_from_knots(jnp.full(k, 1 / k, dtype), jnp.asarray(inc, dtype),
                                   jnp.asarray(derivs, dtype))
    u = jnp.arange(k + 1, dtype=dtype) / k
    x, ld = spline.forward_elementwise(raw, u)
    np.testing.assert_allclose(x, np.concatenate([[0.0], np.cumsum(inc)]),
                               atol=tol(dtype, 2e-6, 1e-12))
    # ... and its slopes at the knots are the requested ones.
    np.testing.assert_allclose(np.exp(ld), derivs, rtol=tol(dtype, 1e-4, 1e-10))


def test_piecewise_linear_is_the_vegas_map(dtype):
    inc = np.array([0.1, 0.4, 0.2, 0.05, 0.25])
    lin = PiecewiseLinear(n_bins=5, min_bin_height=1e-3)
    raw = linear_params_from_heights(jnp.asarray(inc, dtype), min_bin_height=1e-3)
    u = jnp.asarray([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.5], dtype)
    x, ld = lin.forward_elementwise(raw, u)
    want = np.concatenate([[0.0], np.cumsum(inc), [0.1 + 0.4 + 0.1]])
    np.testing.assert_allclose(x, want, atol=tol(dtype, 1e-6, 1e-13))
    # Density of the VEGAS map in bin k is 1 / (K h_k).
    np.testing.assert_allclose(np.exp(-ld[:5]), 1 / (5 * inc), rtol=tol(dtype, 1e-5, 1e-12))


def test_odds_affine_closed_form(dtype):
    affine = OddsAffine(min_derivative=1e-3)
    raw = jnp.asarray([[0.7], [-2.0], [0.0]], dtype)
    x = jnp.asarray([0.3, 0.9, 0.42], dtype)
    y, ld = affine.forward_elementwise(raw, x)
    bound = -np.log(1e-3)
    a = bound * np.tanh(np.asarray(raw[:, 0], np.float64) / bound)
    logit = lambda v: np.log(v) - np.log1p(-v)  # noqa: E731
    np.testing.assert_allclose(logit(np.asarray(y, np.float64)), logit(np.asarray(x)) + a,
                               rtol=tol(dtype, 1e-5, 1e-12), atol=tol(dtype, 1e-5, 1e-12))
    assert y[2] == x[2] and ld[2] == 0  # a = 0 is exactly the identity


@pytest.mark.parametrize("transform", [RationalQuadraticSpline(n_bins=4),
                                       PiecewiseQuadratic(n_bins=4)],
                         ids=["rqs", "quadratic"])
def test_derivative_is_continuous_across_knots(transform):
    raw = jax.random.normal(jax.random.key(1), (transform.n_params,))
    if isinstance(transform, RationalQuadraticSpline):
        knots = transform.knots(raw)[0][1:-1]
    else:  # x-knots of the quadratic spline: cumulative normalised widths
        w = 1e-3 + (1 - 4e-3) * jax.nn.softmax(raw[:4])
        knots = jnp.cumsum(w)[:-1]
    eps = 1e-4
    x = jnp.concatenate([knots - eps, knots + eps])
    _, ld = transform.forward_elementwise(jnp.broadcast_to(raw, (x.size, raw.size)), x)
    np.testing.assert_allclose(ld[:3], ld[3:], atol=2e-2)  # O(eps) change in log f'


@pytest.mark.parametrize("transform", [RationalQuadraticSpline(n_bins=4, min_derivative=1e-2),
                                       PiecewiseLinear(n_bins=4, min_bin_height=1e-2),
                                       PiecewiseQuadratic(n_bins=4, min_bin_height=1e-2),
                                       OddsAffine(min_derivative=1e-2)],
                         ids=["rqs", "linear", "quadratic", "affine"])
def test_extreme_raw_parameters_respect_the_limits(transform):
    """Huge raw parameters saturate at the minimum bin sizes and slopes: finite everywhere."""
    raw = 80.0 * jnp.sign(jax.random.normal(jax.random.key(2), (64, transform.n_params)))
    x = jnp.concatenate([jnp.linspace(0.0, 1.0, 32), jnp.array([0.0, 1.0] * 16)])
    y, ld = transform.forward_elementwise(raw, x)
    x_back, ld_i = transform.inverse_elementwise(raw, y)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(ld)) and np.all(np.isfinite(ld_i))
    assert np.all((y >= 0) & (y <= 1))
    # Slope limits that hold exactly: linear K min_h, quadratic min_h (its vertex
    # densities), affine min_d. (An RQS bin can be flatter than its limits: only finite.)
    lower = {"PiecewiseLinear": np.log(4e-2), "PiecewiseQuadratic": np.log(1e-2),
             "OddsAffine": np.log(1e-2)}.get(type(transform).__name__, -np.inf)
    # 1e-2: a bin of minimal mass near 1 is a difference of float32 knots close to 1,
    # exact only to ulp(1) / mass ~ 0.5 % here.
    assert np.all(ld >= lower - 1e-2)
    np.testing.assert_array_equal(y[x == 0], 0.0)
    np.testing.assert_array_equal(y[x == 1], 1.0)


def test_rqs_inverse_gradient_is_finite_where_the_discriminant_rounds_to_zero():
    """A flat bin between steep knots: in float32 ``s^2`` is lost against ``d_lo d_hi`` and
    the inverse's discriminant rounds to exactly 0 at mid-height. The value is the analytic
    one and the gradient stays finite (sqrt's infinite slope at 0 gave NaN in every
    parameter)."""
    spline = RationalQuadraticSpline(n_bins=2)
    # equal widths, bin 0 of minimal height, all three knot slopes about 7200
    raw = jnp.array([[0.0, 0.0, -30.0, 0.0, 5000.0, 5000.0, 5000.0]], jnp.float32)
    xk, yk, d = spline.knots(raw)
    s = (yk[0, 1] - yk[0, 0]) / (xk[0, 1] - xk[0, 0])
    lin, r = d[0, 0], 0.5
    disc = lin * lin + 4.0 * r * (1.0 - r) * (s * s - d[0, 0] * d[0, 1])
    assert float(disc) == 0.0  # the case this test is about
    y = 0.5 * yk[:, 1]

    def log_det(raw, y):
        return jnp.sum(spline.inverse_elementwise(raw, y)[1])

    x, ld = spline.inverse_elementwise(raw, y)
    # The bin is nearly flat in the middle (slope ~ s^2 / d): float32 y does not resolve
    # its pre-image there, so only the bin is asserted, and finite values.
    assert 0.0 <= float(x[0]) <= float(xk[0, 1]) and np.isfinite(float(ld[0]))
    g_raw, g_y = jax.grad(log_det, argnums=(0, 1))(raw, y)
    assert np.all(np.isfinite(g_raw)) and np.all(np.isfinite(g_y))
    g_raw = jax.jit(jax.grad(log_det))(raw, y)
    assert np.all(np.isfinite(g_raw))


def test_invalid_static_configuration_raises():
    with pytest.raises(ValueError, match="n_bins"):
        RationalQuadraticSpline(n_bins=1)
    with pytest.raises(ValueError, match="n_bins"):
        PiecewiseLinear(n_bins=1)
    with pytest.raises(ValueError, match="min_bin_width"):
        RationalQuadraticSpline(n_bins=10, min_bin_width=0.1)
    with pytest.raises(ValueError, match="min_bin_height"):
        PiecewiseQuadratic(n_bins=4, min_bin_height=0.0)
    with pytest.raises(ValueError, match="min_derivative"):
        OddsAffine(min_derivative=1.0)
    with pytest.raises(ValueError, match="'bogus'"):
        make_transform("bogus")
    spline = RationalQuadraticSpline(n_bins=3)
    with pytest.raises(ValueError, match=r"\[d, 10\]"):
        spline.forward_and_log_det(jnp.zeros((2, 9)), jnp.zeros(2))
    with pytest.raises(ValueError, match="K \\+ 1"):
        rqs_params_from_knots(np.ones(3), np.ones(3), np.ones(3))


@pytest.mark.x64
def test_output_dtype_follows_the_input():
    spline = RationalQuadraticSpline(n_bins=3)
    raw64 = jnp.zeros((2, spline.n_params), jnp.float64)
    y, ld = spline.forward_and_log_det(raw64, jnp.array([0.2, 0.7], jnp.float32))
    assert y.dtype == jnp.float32 and ld.dtype == jnp.float32


# ----------------------------------------------------------------------------------------
# masks


@pytest.mark.parametrize("dim", [1, 2, 3, 4, 5, 7, 8, 9, 16])
def test_binary_masks_condition_every_dimension_on_every_other(dim):
    masks = binary_masks(dim)
    n_expected = 1 if dim == 1 else 2 * int(np.ceil(np.log2(dim)))
    assert masks.shape == (n_expected, dim) and masks.dtype == bool
    assert conditions_all(masks)
    assert np.all((~masks).any(axis=1))  # every layer transforms something
    if dim > 1:
        np.testing.assert_array_equal(masks[0::2], ~masks[1::2])  # complementary pairs
    else:
        assert not masks.any()  # d = 1: no conditioning


def test_checkerboard_and_random_masks():
    cb = checkerboard_masks(5)
    np.testing.assert_array_equal(cb[:2], [[True, False, True, False, True],
                                           [False, True, False, True, False]])
    assert cb.shape == (6, 5)
    assert not conditions_all(cb)  # even dimensions never condition on each other
    assert checkerboard_masks(2, n_layers=3).shape == (3, 2)
    rm = random_masks(6, n_layers=4, seed=3)
    np.testing.assert_array_equal(rm, random_masks(6, n_layers=4, seed=3))  # static, seeded
    np.testing.assert_array_equal(rm[0], ~rm[1])
    assert np.all(rm.sum(axis=1) == 3)
    assert not conditions_all(np.array([[True, False, False], [False, True, True]]))
    np.testing.assert_array_equal(make_masks("binary", 4, n_layers=6)[4:], binary_masks(4)[:2])


def test_invalid_masks_raise():
    with pytest.raises(ValueError, match="dim"):
        binary_masks(0)
    with pytest.raises(ValueError, match=r"\[n_layers >= 1, 3\]"):
        validate_masks(np.ones((2, 4), bool), 3)
    with pytest.raises(ValueError, match=r"layer\(s\) \[1\]"):
        validate_masks([[True, False], [True, True]], 2)
    with pytest.raises(ValueError, match="n_layers=3"):
        make_masks(np.array([[True, False], [False, True]]), 2, n_layers=3)
    with pytest.raises(ValueError, match="'spiral'"):
        make_masks("spiral", 3)
    with pytest.raises(ValueError, match="n_layers"):
        binary_masks(3, n_layers=0)


def test_permutation_bijector():
    perm = Permutation((2, 0, 1))
    x = jnp.array([0.1, 0.2, 0.3])
    y, ld = perm.forward_and_log_det(perm.init(), x)
    np.testing.assert_array_equal(y, x[np.array([2, 0, 1])])
    x_back, ld_i = perm.inverse_and_log_det({}, y)
    np.testing.assert_array_equal(x_back, x)
    assert ld == 0 and ld_i == 0
    with pytest.raises(ValueError, match="permutation"):
        Permutation((0, 0, 1))
    with pytest.raises(ValueError, match="3 dims"):
        perm.forward_and_log_det({}, jnp.zeros(4))


@pytest.mark.x64
@pytest.mark.parametrize("lead", [False, True])
@pytest.mark.parametrize("inverse", [False, True])
def test_rqs_derivative_rule_equals_autodiff_of_the_same_composition(inverse, lead):
    """The spline's hand-written derivative rule (for speed) against plain autodiff of the
    same search -> geometry -> local map, in float64: first derivatives in both modes
    (parameters and input) and a second derivative, to 1e-6 relative. ``lead``: the rule
    in the layout of a flow's batched passes (parameters ``[P, ...]``, bins picked by
    masked sums), against autodiff of the per-event layout."""
    spline = RationalQuadraticSpline(n_bins=5, min_derivative=1e-2)
    rng = np.random.default_rng(3)
    raw = jnp.asarray(rng.normal(0.0, 1.5, (12, spline.n_params)), jnp.float64)
    v = jnp.asarray(np.concatenate([[0.0, 1.0, 1.0 - 1e-12], rng.uniform(0, 1, 9)]))

    def plain(p, u):
        return spline._local(inverse, spline._geometry(p, u, inverse)[3], u)

    def ruled(p, u):
        if lead:
            return _rqs_apply(spline, inverse, True, jnp.moveaxis(p, -1, 0), u)
        return spline._inverse(p, u) if inverse else spline._forward(p, u)

    def scalar(fn):
        def loss(p, u):
            out, ld = fn(p, u)
            return jnp.sum(jnp.sin(3.0 * out) + jnp.cos(ld) * out)
        return loss

    def close(a, b):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9)

    def second(fn):
        return jax.grad(lambda p, u: jnp.sum(jax.grad(scalar(fn))(p, u) ** 2), (0, 1))

    def everything(fn):  # one compiled program per side (eager dispatch is slow here)
        return jax.jit(lambda p, u: (fn(p, u), jax.grad(scalar(fn), (0, 1))(p, u),
                                     jax.jacfwd(fn, (0, 1))(p, u), second(fn)(p, u)))

    close(everything(ruled)(raw, v), everything(plain)(raw, v))
    if not inverse:  # the slopes of Flow.sample_detached, in both layouts
        close(spline._forward_slopes_lead(jnp.moveaxis(raw, -1, 0), v),
              spline._forward_slopes(raw, v))
