"""One property suite over every flow bijector (flowjax style).

Each registry entry builds a bijector on ``[0, 1]^d`` with *random* (not identity)
parameters, in the dtype under test, and the same checks run on all of them: round trip,
log-dets summing to zero, log-det against ``slogdet(jax.jacfwd)``, identity at zero
parameters, monotonicity, range and finite gradients on the boundary, second-order
gradients against finite differences (float64), batch against loop, and normalisation of
the density. Jitted functions are built once per (entry, dtype) and reused by every check.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from jaxnis.flows import (
    CouplingLayer,
    OddsAffine,
    PiecewiseLinear,
    PiecewiseQuadratic,
    RationalQuadraticSpline,
    make_flow,
)
from tests.checks import (
    assert_batch_equals_loop,
    assert_logdet_matches_jacobian,
    assert_mc_mean,
    assert_round_trip,
)
from tests.conftest import tol

HIDDEN = (8,)  # one hidden layer: the structure under test, at half the compile time


class Case(NamedTuple):
    """A bijector with bound parameters, acting on one event ``[dim]``."""

    dim: int
    forward: Any  # x -> (y, logdet), jitted
    inverse: Any  # y -> (x, logdet), jitted
    forward_p: Any  # (params, x) -> (y, logdet), not jitted (for check_grads)
    params: Any
    zero_params: Any
    elementwise: bool  # every output coordinate depends on its own input only


def _perturb(params, key, scale):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, max(len(leaves), 1))
    return jax.tree.unflatten(tree, [p + scale * jax.random.normal(k, p.shape, p.dtype)
                                     for p, k in zip(leaves, keys, strict=True)])


def _elementwise(transform, dim):
    def build(dtype):
        key = jax.random.key(11)
        params = 0.7 * jax.random.normal(key, (dim, transform.n_params), dtype)
        return transform.forward_and_log_det, transform.inverse_and_log_det, params, \
            transform.identity_params(dim, dtype), True
    return dim, build


def _coupling(mask, transform, context=None):
    layer = CouplingLayer(mask, transform, hidden=HIDDEN,
                          context_dim=0 if context is None else len(context))

    def build(dtype):
        zero = layer.init(jax.random.key(3), dtype)
        ctx = None if context is None else jnp.asarray(context, dtype)
        fwd = lambda p, x: layer.forward_and_log_det(p, x, ctx)  # noqa: E731
        inv = lambda p, y: layer.inverse_and_log_det(p, y, ctx)  # noqa: E731
        return fwd, inv, _perturb(zero, jax.random.key(4), 0.3), zero, False
    return len(mask), build


def _flow(dim, context=None, **kwargs):
    flow = make_flow(dim, hidden=HIDDEN, n_bins=kwargs.pop("n_bins", 6),
                     context_dim=0 if context is None else len(context), **kwargs)

    def build(dtype):
        zero = flow.init(jax.random.key(5), dtype)
        ctx = None if context is None else jnp.asarray(context, dtype)
        fwd = lambda p, x: flow.forward_and_log_det(p, x, ctx)  # noqa: E731
        inv = lambda p, y: flow.inverse_and_log_det(p, y, ctx)  # noqa: E731
        return fwd, inv, _perturb(zero, jax.random.key(6), 0.15), zero, dim == 1
    return dim, build


REGISTRY = {
    "rqs": _elementwise(RationalQuadraticSpline(n_bins=5), 3),
    "linear": _elementwise(PiecewiseLinear(n_bins=5), 3),
    "quadratic": _elementwise(PiecewiseQuadratic(n_bins=5), 3),
    "affine": _elementwise(OddsAffine(), 3),
    "coupling-rqs": _coupling((True, False, False), RationalQuadraticSpline(n_bins=5)),
    "flow-binary-rqs-d5": _flow(5),  # layers transform 2 or 3 dimensions: padding
    # d = 1: an element-wise layer conditioned on the context only.
    "flow-d1-affine-context": _flow(1, transform="affine", n_layers=2, context=(0.3, -1.0)),
    "flow-random-quadratic-context-d3": _flow(3, masks="random", transform="quadratic",
                                              context=(1.0, 0.0, 0.0)),
}
NAMES = list(REGISTRY)
FLOWS = [n for n in NAMES if n.startswith("flow-")]
N_RANDOM = 48  # random interior points; followed by 16 points on edges and corners


def edge_points(dim, dtype, n=16):
    """Coordinates drawn from {0, 1, largest float below 1, 1/2}: faces, edges, corners."""
    below_one = np.nextafter(np.array(1, dtype), np.array(0, dtype))
    vals = np.array([0.0, 1.0, below_one, 0.5])
    idx = np.random.default_rng(dim).integers(0, 4, size=(n, dim))
    idx[0], idx[1] = 0, 1  # the two corners 0 and 1
    return jnp.asarray(vals[idx], dtype)


def sample_points(dim, dtype):
    x = jax.random.uniform(jax.random.key(dim), (N_RANDOM, dim), dtype)
    return jnp.concatenate([x, edge_points(dim, dtype)])


N_GRID = 129  # points per coordinate for the monotonicity scan
N_DENSITY = 20000  # uniform points for the normalisation of the density


def grid_points(dim, dtype):
    """For each coordinate i, N_GRID points scanning x_i over [0, 1], the others fixed."""
    grid = jnp.linspace(0.0, 1.0, N_GRID, dtype=dtype)
    base = jax.random.uniform(jax.random.key(3), (dim,), dtype)
    return jnp.concatenate([jnp.tile(base, (N_GRID, 1)).at[:, i].set(grid)
                            for i in range(dim)])


@functools.cache
def built(name: str, dtype):
    dim, build = REGISTRY[name]
    fwd_p, inv_p, params, zero, elementwise = build(dtype)

    def analyse(params, x, x_grid, u):
        """Everything the checks need, in one compiled function per (entry, dtype); each
        direction is traced as few times as possible to keep compilation cheap."""
        n, n_grid = x.shape[0], x_grid.shape[0]

        def loss(p, z):
            yz, ldz = jax.vmap(fwd_p, (None, 0))(p, z)
            weights = jnp.arange(1, dim + 1, dtype=z.dtype)
            return jnp.sum(yz[:n] * weights) + jnp.sum(ldz[:n]), (yz, ldz)

        (_, (y_all, ld_all)), (g_params, g_x) = jax.value_and_grad(
            loss, argnums=(0, 1), has_aux=True)(params, jnp.concatenate([x, x_grid]))
        y, ld_f = y_all[:n], ld_all[:n]
        x_all, ld_i_all = jax.vmap(inv_p, (None, 0))(params, jnp.concatenate([y, u]))
        y_loop, ld_loop = jax.lax.map(lambda xi: fwd_p(params, xi), x)  # one event at a time

        def jac_logdet(fn, z):
            return jnp.linalg.slogdet(jax.jacfwd(lambda v: fn(params, v)[0])(z))[1]

        return dict(y=y, ld_f=ld_f, x_back=x_all[:n], ld_i=ld_i_all[:n], y_loop=y_loop,
                    ld_loop=ld_loop, jac_f=jax.vmap(lambda z: jac_logdet(fwd_p, z))(x),
                    g_params=g_params,
                    g_x=g_x[:n], y_grid=y_all[n:n + n_grid], ld_density=ld_i_all[n:])

    analyse = jax.jit(analyse)
    u = jax.random.uniform(jax.random.key(6), (N_DENSITY, dim), dtype)

    def run(params, x):
        return jax.tree.map(np.asarray, analyse(params, x, grid_points(dim, dtype), u))

    return dim, fwd_p, params, zero, elementwise, run


@functools.cache
def single(name: str, dtype):
    """Jitted single-event forward and inverse with the random parameters bound (the shared
    checks vmap and differentiate them: one compilation each, not one per operation)."""
    _, build = REGISTRY[name]
    fwd_p, inv_p, params, *_ = build(dtype)
    return jax.jit(lambda x: fwd_p(params, x)), jax.jit(lambda y: inv_p(params, y))


@functools.cache
def results(name: str, dtype, zero: bool = False):
    dim, _, params, zero_params, _, run = built(name, dtype)
    return run(zero_params if zero else params, sample_points(dim, dtype))


def _atol(dtype):
    return tol(dtype, 1e-5, 1e-10)


# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_and_logdets_cancel(name, dtype):
    dim = REGISTRY[name][0]
    r = results(name, dtype)
    x = np.asarray(sample_points(dim, dtype))
    assert r["y"].dtype == dtype and r["ld_f"].dtype == dtype
    np.testing.assert_allclose(r["x_back"], x, atol=_atol(dtype))
    # A sum over layers and dimensions of O(1) log terms: a few ulp each. On the edge points
    # (coordinates one ulp below 1) the inverse can only find the input to an ulp of the
    # output, i.e. theta to ulp / bin width, and the log-slope moves by that times its
    # derivative in theta: hence the looser edge tolerance.
    ld_sum = r["ld_f"] + r["ld_i"]
    np.testing.assert_allclose(ld_sum[:N_RANDOM], 0.0, atol=tol(dtype, 2e-5, 1e-11))
    np.testing.assert_allclose(ld_sum[N_RANDOM:], 0.0, atol=tol(dtype, 5e-4, 1e-9))


@pytest.mark.parametrize("name", ["rqs", "coupling-rqs"])
def test_shared_checks(name, dtype):
    """The shared property checks on a few entries; every entry, flows included, gets the
    same checks inside its one compiled analysis (below), which keeps compilation cheap."""
    fwd, inv = single(name, dtype)
    x = sample_points(REGISTRY[name][0], dtype)[::6]
    assert_round_trip(fwd, inv, x, atol=_atol(dtype))
    assert_logdet_matches_jacobian(fwd, x, rtol=tol(dtype, 1e-4, 1e-10),
                                   atol=tol(dtype, 1e-4, 1e-10))
    # float32: a batched matmul sums in another order than a matrix-vector product, which
    # moves the conditioner outputs, and so the log-dets, by a few ulp.
    assert_batch_equals_loop(fwd, (x,), rtol=tol(dtype, 1e-5, 1e-12),
                             atol=tol(dtype, 1e-5, 1e-13))


@pytest.mark.parametrize("name", NAMES)
def test_logdet_matches_jacobian(name, dtype):
    """Forward log-det against slogdet(jacfwd); the inverse's follows from the round trip
    and the cancellation of the two log-dets (tested above)."""
    r = results(name, dtype)
    np.testing.assert_allclose(r["ld_f"], r["jac_f"], rtol=tol(dtype, 1e-4, 1e-10),
                               atol=tol(dtype, 1e-4, 1e-10))


@pytest.mark.parametrize("name", NAMES)
def test_zero_params_give_identity(name, dtype):
    dim = REGISTRY[name][0]
    x = np.asarray(sample_points(dim, dtype))
    r0 = results(name, dtype, zero=True)
    # Identity up to rounding of the normalised bins (a few ulp per layer).
    for key, ld in (("y", "ld_f"), ("x_back", "ld_i")):
        np.testing.assert_allclose(r0[key], x, atol=tol(dtype, 2e-6, 1e-14))
        np.testing.assert_allclose(r0[ld], 0.0, atol=tol(dtype, 1e-5, 1e-13))
    # ... and the random parameters are not the identity (the other checks test something).
    assert np.max(np.abs(results(name, dtype)["y"] - x)) > 1e-2


@pytest.mark.parametrize("name", [n for n in NAMES if not n.startswith("flow-")])
def test_monotone_in_each_transformed_coordinate(name, dtype):
    """Splines and single coupling layers: each output coordinate is non-decreasing in its
    own input with the others fixed, and element-wise maps hit 0 and 1 exactly."""
    dim, *_ = built(name, dtype)
    elementwise = built(name, dtype)[4]
    y = results(name, dtype)["y_grid"].reshape(dim, N_GRID, dim)
    for i in range(dim):
        assert np.all(np.diff(y[i, :, i].astype(np.float64)) >= 0), i
        if elementwise:
            assert y[i, 0, i] == 0 and y[i, -1, i] == 1


@pytest.mark.parametrize("name", NAMES)
def test_boundary_in_range_and_finite_gradients(name, dtype):
    dim = REGISTRY[name][0]
    r = results(name, dtype)
    for key in ("y", "x_back"):
        assert np.all((r[key] >= 0) & (r[key] <= 1))
    for key in ("ld_f", "ld_i", "g_x"):
        assert np.all(np.isfinite(r[key])), key
    for g in jax.tree.leaves(r["g_params"]):
        assert np.all(np.isfinite(g))
    if built(name, dtype)[4]:  # element-wise: exact images of 0 and 1
        x = np.asarray(sample_points(dim, dtype))
        corner = (x == 0) | (x == 1)
        np.testing.assert_array_equal(r["y"][corner], x[corner])


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_loop(name, dtype):
    r = results(name, dtype)
    # float32: batched and single-event matmuls sum in different orders (a few ulp).
    np.testing.assert_allclose(r["y"], r["y_loop"], rtol=tol(dtype, 1e-5, 1e-12),
                               atol=tol(dtype, 1e-6, 1e-13))
    np.testing.assert_allclose(r["ld_f"], r["ld_loop"], rtol=tol(dtype, 1e-5, 1e-12),
                               atol=tol(dtype, 1e-5, 1e-12))


@pytest.mark.parametrize("name", NAMES)
def test_density_is_normalised(name, dtype):
    """q(y) = exp(logdet of the inverse at y) integrates to 1 over the cube."""
    ld = results(name, dtype)["ld_density"]
    assert_mc_mean(np.exp(ld.astype(np.float64)), 1.0, n_sigma=5.0)


# Second order through a conditioner network compiles slowly; one coupling layer stands for
# the flows (which are a scan of the same layer).
GRAD_NAMES = ["rqs", "linear", "quadratic", "affine", "coupling-rqs"]


@pytest.mark.x64
@pytest.mark.parametrize("name", GRAD_NAMES)
def test_second_order_gradients_match_finite_differences(name):
    dim, fwd_p, params, *_ = built(name, jnp.float64)
    x = jax.random.uniform(jax.random.key(4), (dim,), jnp.float64)
    fwd_p = jax.jit(fwd_p)  # compiled once per derivative order, not op by op
    # Random points are not on a bin edge, where the maps are smooth. eps = 1e-5 (not the
    # default 1e-4): second derivatives in the raw parameters reach O(1e3), and the O(eps^2)
    # truncation error of the nested differences would otherwise exceed 1e-5.
    # Reverse mode (first and second order) against finite differences; forward mode is
    # what jax.jacfwd uses, checked against the analytic log-dets above.
    check_grads(fwd_p, (params, x), order=2, modes=("rev",), atol=1e-5, rtol=1e-5, eps=1e-5)


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
@pytest.mark.parametrize("name", ["rqs", "quadratic", "flow-binary-rqs-d5"])
def test_hypothesis_inputs(name, dtype, data):
    """Arbitrary inputs in [0, 1], edges included: finite, in range, round trip."""
    dim, _, params, _, _, run = built(name, dtype)
    width = 32 if dtype == jnp.float32 else 64
    coords = st.floats(0.0, 1.0, width=width, allow_subnormal=False)
    rows = data.draw(st.lists(st.lists(coords, min_size=dim, max_size=dim), min_size=1,
                              max_size=4))
    x = np.array(sample_points(dim, dtype))
    x[:len(rows)] = np.asarray(rows, x.dtype)  # reuse the compiled analysis
    r = run(params, jnp.asarray(x))
    n = len(rows)
    assert np.all((r["y"][:n] >= 0) & (r["y"][:n] <= 1))
    assert np.all(np.isfinite(r["ld_f"][:n])) and np.all(np.isfinite(r["g_x"][:n]))
    # Where the map is steep (|log-det| large) inputs closer than its resolution merge:
    # the round trip is then only good to the output ulp times the inverse slope.
    slack = np.maximum(1.0, np.exp(np.abs(r["ld_f"][:n])))[:, None]
    assert np.all(np.abs(r["x_back"][:n] - x[:n]) <= _atol(dtype) * slack)
    np.testing.assert_allclose(r["ld_f"][:n] + r["ld_i"][:n], 0.0, atol=tol(dtype, 2e-5, 1e-11))
