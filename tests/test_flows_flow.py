"""Flow assembly: scanned layers, training step, contexts, parameter validation."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnis.flows import (
    MLP,
    RationalQuadraticSpline,
    binary_masks,
    channel_embedding,
    make_flow,
    rqs_params_from_knots,
)
from jaxnis.flows.coupling import mlp_rows
from tests.conftest import tol


def test_depth_does_not_grow_the_traced_program():
    """Layers are stacked and scanned: the conditioner is traced once whatever the depth."""
    calls = []

    def counting_relu(x):
        calls.append(1)  # runs at trace time only
        return jax.nn.relu(x)

    sizes = {}
    for n_layers in (4, 16):
        flow = make_flow(4, n_layers=n_layers, hidden=(8, 8), activation=counting_relu)
        params = jax.eval_shape(flow.init, jax.random.key(0))
        assert jax.tree.leaves(params)[0].shape[0] == n_layers  # stacked along layers
        flow.check_params(params)  # (traces init once for the expected shapes)
        calls.clear()
        jaxpr = jax.make_jaxpr(flow.forward_and_log_det)(
            params, jnp.full(4, 0.5))
        sizes[n_layers] = (len(calls), str(jaxpr).count("\n"))  # traced operations
    assert sizes[4][0] == sizes[16][0] == 2  # two hidden activations, traced once
    assert sizes[4][1] == sizes[16][1]  # same program; only the scanned arrays are longer


def test_training_step_traces_once_and_reduces_the_variance():
    """Variance of w = f(x) / q(x) under Adam: the jitted step traces once for any key and
    parameters, and training lowers the variance of a peaked integrand."""
    flow = make_flow(2, hidden=(16, 16), n_bins=6)
    opt = optax.adam(3e-2)
    traces = []

    def log_f(x):  # normalised-ish Gaussian bump at (0.3, 0.7), width 0.1
        return -jnp.sum((x - jnp.array([0.3, 0.7])) ** 2) / (2 * 0.1**2)

    def loss(params, key):
        x, log_q = flow.sample(key, params, 512)
        w = jnp.exp(jax.vmap(log_f)(x) - log_q)
        return jnp.var(w)

    @jax.jit
    def step(params, state, key):
        traces.append(1)
        value, grads = jax.value_and_grad(loss)(params, key)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    params = flow.init(jax.random.key(1))
    state = opt.init(params)
    values = []
    for i in range(60):
        params, state, value = step(params, state, jax.random.key(100 + i))
        values.append(float(value))
    assert len(traces) == 1
    assert np.all(np.isfinite(values))
    # Identity flow: Var(f) of the bump on the square; after training at least 3x smaller.
    assert np.mean(values[-10:]) < np.mean(values[:3]) / 3, (values[:3], values[-10:])


def test_defaults_for_small_dimensions():
    assert make_flow(1).n_layers == 1
    assert make_flow(2).n_layers == 2
    assert make_flow(5).n_layers == 6
    np.testing.assert_array_equal(np.array(make_flow(5).masks), binary_masks(5))
    assert make_flow(3, masks="checkerboard", n_layers=5).n_layers == 5


FLOW = make_flow(3, hidden=(8,), n_bins=4, context_dim=2)  # layers transform 1 or 2 dims


@functools.cache
def compiled(dtype):
    """The shared flow's jitted functions, reused by every test below."""
    return dict(
        init=jax.jit(FLOW.init, static_argnums=1),
        sample=jax.jit(FLOW.sample, static_argnums=2),
        forward=jax.jit(jax.vmap(FLOW.forward_and_log_det, (None, 0, 0))),
        log_prob=jax.jit(jax.vmap(FLOW.log_prob, (None, 0, 0))),
        grad_masked=jax.jit(jax.grad(lambda p, x, c: jnp.sum(jnp.where(
            jnp.isfinite(lp := jax.vmap(FLOW.log_prob, (None, 0, 0))(p, x, c)), lp, 0.0)))),
    )


def _params(dtype, scale=0.2):
    params = compiled(dtype)["init"](jax.random.key(0), dtype)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    return jax.tree.unflatten(tree, [p + scale * jax.random.normal(k, p.shape, p.dtype)
                                     for p, k in zip(leaves, keys, strict=True)])


def test_sample_shapes_dtypes_and_contexts(dtype):
    fns, params = compiled(dtype), _params(dtype)
    ctx = channel_embedding(jnp.repeat(jnp.arange(2), 32), 2, dtype)  # channel 0, then 1
    x, log_q = fns["sample"](jax.random.key(3), params, 64, ctx)
    assert x.shape == (64, 3) and log_q.shape == (64,)
    assert x.dtype == dtype and log_q.dtype == dtype
    np.testing.assert_allclose(fns["log_prob"](params, x, ctx), log_q,
                               atol=tol(dtype, 2e-5, 1e-11))
    # A context shared by all samples is the same as repeating it per sample.
    x0, log_q0 = fns["sample"](jax.random.key(3), params, 64, ctx[0])
    np.testing.assert_allclose(x0[:32], x[:32], rtol=tol(dtype, 1e-6, 1e-13))
    np.testing.assert_allclose(log_q0[:32], log_q[:32], atol=tol(dtype, 1e-6, 1e-13))
    assert np.max(np.abs(np.asarray(x0[32:] - x[32:]))) > 1e-3  # another channel, another map


def test_log_prob_outside_the_cube_is_minus_infinity_with_finite_gradient():
    fns, params = compiled(jnp.float32), _params(jnp.float32)
    x = jnp.array([[1.5, 0.5, 0.5], [-0.1, 0.2, 0.5], [jnp.nan, 0.3, 0.5], [0.2, jnp.inf, 0.5],
                   [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.5], [0.3, 0.3, 0.3]])
    ctx = jnp.tile(jnp.array([1.0, 0.0]), (8, 1))
    lp = np.asarray(fns["log_prob"](params, x, ctx))
    np.testing.assert_array_equal(lp[:4], -np.inf)
    assert np.all(np.isfinite(lp[4:]))  # the closed cube, corners included
    # A loss masking the -inf entries has a finite gradient.
    grads = fns["grad_masked"](params, x, ctx)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_elementwise_initialisation_from_given_splines(dtype):
    """A fresh flow set to per-dimension splines is exactly that element-wise map (the VEGAS
    start), whatever the context; layers transform 1 or 2 dimensions here (padding)."""
    fns = compiled(dtype)
    spline = FLOW.transform
    assert isinstance(spline, RationalQuadraticSpline)
    rng = np.random.default_rng(5)
    raw = rqs_params_from_knots(rng.uniform(0.1, 1, (3, 4)), rng.uniform(0.1, 1, (3, 4)),
                                rng.uniform(0.2, 3, (3, 5))).astype(dtype)
    params = FLOW.set_elementwise_params(fns["init"](jax.random.key(6), dtype), raw)
    u = jax.random.uniform(jax.random.key(7), (32, 3), dtype)
    ctx = jax.random.normal(jax.random.key(8), (32, 2), dtype)
    x, ld = fns["forward"](params, u, ctx)
    x_ref, ld_ref = jax.vmap(spline.forward_and_log_det, (None, 0))(raw, u)
    np.testing.assert_allclose(x, x_ref, atol=tol(dtype, 1e-6, 1e-14))
    np.testing.assert_allclose(ld, ld_ref, atol=tol(dtype, 1e-5, 1e-12))
    with pytest.raises(ValueError, match=r"\(3, 13\)"):
        FLOW.set_elementwise_params(params, raw[:2])


def test_invalid_configuration_raises_at_construction():
    with pytest.raises(ValueError, match="dim"):
        make_flow(0)
    with pytest.raises(ValueError, match="n_bins"):
        make_flow(3, n_bins=1)
    with pytest.raises(ValueError, match=r"\[n_layers >= 1, 3\]"):
        make_flow(3, masks=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="n_layers=4"):
        make_flow(2, masks=[[True, False], [False, True]], n_layers=4)
    with pytest.raises(ValueError, match="transform no dimension"):
        make_flow(2, masks=[[True, True]])
    with pytest.raises(ValueError, match="context_dim"):
        make_flow(3, context_dim=-1)
    with pytest.raises(ValueError, match="'tanhh'"):
        make_flow(3, activation="tanhh")
    with pytest.raises(ValueError, match="hidden"):
        make_flow(3, hidden=(8, 0))
    with pytest.raises(ValueError, match="'spline'"):
        make_flow(3, transform="spline")
    with pytest.raises(ValueError, match="channel_flows needs context_dim"):
        make_flow(3, channel_flows=True)


@pytest.mark.parametrize(("dim", "hidden"), [(4, (8, 8)), (1, ())])
def test_channel_flows_are_independent_flows(dim, hidden):
    """With ``channel_flows`` the flow of channel ``c`` is exactly a plain flow (same masks,
    no context) with channel ``c``'s slice of every parameter; d = 1 conditions on nothing
    (a constant input per channel), here with a linear conditioner (no hidden layer)."""
    n_ch = 3
    flow = make_flow(dim, n_bins=5, hidden=hidden, context_dim=n_ch, channel_flows=True)
    plain = make_flow(dim, n_bins=5, hidden=hidden)
    params = flow.init(jax.random.key(0))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(k, p.shape)
                                       for p, k in zip(leaves, keys, strict=True)])
    u = jax.random.uniform(jax.random.key(2), (32, dim))
    net = params["layers"]["params"]
    names = sorted(n for n in net if n != "output") + ["output"]
    plain_names = sorted(n for n in plain.init(jax.random.key(0))["layers"]["params"]
                         if n != "output") + ["output"]

    @jax.jit
    def run(params, u):
        out = []
        for c in range(n_ch):
            sliced = {"layers": {"params": {
                pn: jax.tree.map(lambda a, c=c: a[:, c], net[n])
                for n, pn in zip(names, plain_names, strict=True)}}}
            out.append((jax.vmap(flow.forward_and_log_det, (None, 0, None))(
                params, u, jax.nn.one_hot(c, n_ch)),
                jax.vmap(plain.forward_and_log_det, (None, 0))(sliced, u)))
        # A channel's flow does not see the other channels' parameters (zero gradient).
        grad = jax.grad(lambda p: jnp.sum(jax.vmap(flow.forward_and_log_det, (None, 0, None))(
            p, u, jax.nn.one_hot(1, n_ch))[1]))(params)
        return out, grad

    out, grad = run(params, u)
    for got, want in out:
        np.testing.assert_allclose(got[0], want[0], atol=2e-6)
        np.testing.assert_allclose(got[1], want[1], atol=2e-5)
    # different maps per channel
    assert float(jnp.max(jnp.abs(out[0][0][0] - out[1][0][0]))) > 1e-2
    for g in jax.tree.leaves(grad):
        assert float(jnp.max(jnp.abs(g[:, 0]))) == 0.0
        assert float(jnp.max(jnp.abs(g[:, 2]))) == 0.0


def test_wrong_context_or_parameters_raise_clear_errors():
    flow = FLOW
    params = jax.eval_shape(flow.init, jax.random.key(0))  # shapes suffice: errors are static
    x = jnp.full(3, 0.5)
    fwd = jax.jit(flow.forward_and_log_det)
    with pytest.raises(ValueError, match="context_dim=2"):
        fwd(params, x, jnp.ones(3))
    with pytest.raises(ValueError, match="needs a context"):
        fwd(params, x)
    plain = make_flow(3, hidden=(8,))
    with pytest.raises(ValueError, match="context_dim=0"):
        jax.eval_shape(plain.forward_and_log_det, jax.eval_shape(plain.init, jax.random.key(0)),
                       x, jnp.ones(2))
    with pytest.raises(ValueError, match="event of shape"):
        fwd(params, jnp.full((4, 3), 0.5), jnp.ones(2))
    # Parameters of another configuration: named leaf and shapes, at trace time.
    other = jax.eval_shape(make_flow(3, hidden=(8,), n_bins=5, context_dim=2).init,
                           jax.random.key(0))
    with pytest.raises(ValueError, match=r"'output'.*shape"):
        fwd(other, x, jnp.ones(2))
    with pytest.raises(ValueError, match="structure"):
        fwd(jax.eval_shape(make_flow(3, hidden=(8, 8), context_dim=2).init,
                           jax.random.key(0)), x, jnp.ones(2))
    with pytest.raises(ValueError, match="n=5"):
        jax.eval_shape(lambda p: flow.sample(jax.random.key(0), p, 5, jnp.ones((4, 2))), params)


DETACHED_CASES = {
    # name: (flow, context of 24 events or None)
    "binary-rqs-d5": (make_flow(5, hidden=(8,), n_bins=4), None),
    "shared-context": (FLOW, (0.4, -0.8)),
    "per-event-context": (FLOW, "per-event"),
    "channel-flows": (make_flow(4, hidden=(8,), n_bins=4, context_dim=3, channel_flows=True),
                      "one-hot"),
    "checkerboard-quadratic-d4": (make_flow(4, hidden=(8,), n_bins=4, masks="checkerboard",
                                            transform="quadratic"), None),
    "random-linear-d3": (make_flow(3, hidden=(8,), n_bins=4, masks="random",
                                   transform="linear"), None),
    "d1-affine-context": (make_flow(1, hidden=(8,), n_layers=2, transform="affine",
                                    context_dim=2), (0.3, -1.0)),
}


def _case(name, n, dtype):
    """A flow of DETACHED_CASES, its context for ``n`` events and the context's vmap axis."""
    flow, context = DETACHED_CASES[name]
    if context == "per-event":
        context = jax.random.normal(jax.random.key(3), (n, 2), dtype)
    elif context == "one-hot":
        context = channel_embedding(jnp.arange(n) % 3, 3, dtype)
    elif context is not None:
        context = jnp.asarray(context, dtype)
    return flow, context, 0 if context is not None and context.ndim == 2 else None


@pytest.mark.parametrize("name", list(DETACHED_CASES))
def test_sample_detached_equals_sample_then_log_prob_at_fixed_points(name, dtype):
    """One pass, no inverse: the same x and log q as sample, and the gradient of a loss of
    log q (parameters and context) equal to that of log_prob at the stopped samples."""
    n, key = 24, jax.random.key(7)
    flow, context, ctx_axis = _case(name, n, dtype)
    params = flow.init(jax.random.key(0), dtype)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.2 * jax.random.normal(k, p.shape, p.dtype)
                                       for p, k in zip(leaves, keys, strict=True)])

    def loss(x, log_q):  # weights of a bump: a variance-like loss, nonlinear in log q
        log_f = -jnp.sum((x - 0.4) ** 2, axis=-1) / 0.1
        return jnp.mean(jnp.exp(2.0 * (log_f - log_q)) * (1.0 + jnp.sin(3.0 * x[:, 0])))

    def one_pass(p, c):
        x, log_q = flow.sample_detached(key, p, n, c)
        return loss(x, log_q), (x, log_q)

    def two_passes(p, c):
        x, _ = flow.sample(key, jax.lax.stop_gradient(p), n, c)
        x = jax.lax.stop_gradient(x)
        log_q = jax.vmap(flow.log_prob, (None, 0, ctx_axis))(p, x, c)
        return loss(x, log_q), (x, log_q)

    argnums = 0 if context is None else (0, 1)
    results = [jax.jit(jax.value_and_grad(f, argnums, has_aux=True))(params, context)
               for f in (one_pass, two_passes)]
    (value, (x, log_q)), grads = results[0]
    (value2, (x2, log_q2)), grads2 = results[1]
    np.testing.assert_allclose(x, x2, atol=tol(dtype, 1e-6, 1e-14))
    np.testing.assert_allclose(log_q, log_q2, atol=tol(dtype, 2e-5, 1e-11))
    np.testing.assert_allclose(value, value2, rtol=tol(dtype, 1e-4, 1e-10))
    leaves, leaves2 = jax.tree.leaves(grads), jax.tree.leaves(grads2)
    assert len(leaves) == len(leaves2) == len(jax.tree.leaves(params)) + (context is not None)
    for g, g2 in zip(leaves, leaves2, strict=True):
        scale = float(jnp.max(jnp.abs(g2)))
        assert scale > 0.0
        np.testing.assert_allclose(g, g2, atol=tol(dtype, 1e-4, 1e-10) * scale)


# float32 for every case; float64, whose tolerances would show a slip in the row order or a
# missed term, for one case of each context form and of the other transform families
BATCH_CASES = [pytest.param(name, jnp.float32, id=f"f32-{name}") for name in DETACHED_CASES] + [
    pytest.param(name, jnp.float64, marks=pytest.mark.x64, id=f"f64-{name}")
    for name in ("per-event-context", "channel-flows", "checkerboard-quadratic-d4",
                 "random-linear-d3")]


@pytest.mark.parametrize(("name", "dtype"), BATCH_CASES)
def test_batch_methods_are_the_per_event_maps_on_rows_of_events(name, dtype):
    """sample and the batch methods run the layers on rows of events (conditioner_rows, the
    transforms' parameters leading): the same points and densities as the per-event maps
    under vmap, and the same gradients (through the samples, and of the inverse pass)."""
    n, key = 24, jax.random.key(5)
    flow, context, ctx_axis = _case(name, n, dtype)
    params = jax.tree.map(lambda p: p + 0.3 * jnp.sin(jnp.arange(p.size).reshape(p.shape)),
                          flow.init(jax.random.key(0), dtype))

    def rows(p):
        x, log_q = flow.sample(key, p, n, context)
        return jnp.sum(jnp.sin(4.0 * x)) + jnp.mean(log_q), (x, log_q)

    def per_event(p):
        u = jax.random.uniform(key, (n, flow.dim), dtype)
        x, logdet = jax.vmap(flow.forward_and_log_det, (None, 0, ctx_axis))(p, u, context)
        return jnp.sum(jnp.sin(4.0 * x)) + jnp.mean(-logdet), (x, -logdet)

    def close_grads(g1, g2):
        for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
            scale = float(jnp.max(jnp.abs(b)))
            np.testing.assert_allclose(a, b, atol=tol(dtype, 1e-4, 1e-10) * max(scale, 1e-3))

    (v1, (x1, lq1)), g1 = jax.jit(jax.value_and_grad(rows, has_aux=True))(params)
    (v2, (x2, lq2)), g2 = jax.jit(jax.value_and_grad(per_event, has_aux=True))(params)
    np.testing.assert_allclose(x1, x2, atol=tol(dtype, 1e-6, 1e-14))
    np.testing.assert_allclose(lq1, lq2, atol=tol(dtype, 2e-5, 1e-11))
    assert np.ptp(np.asarray(lq1)) > 0.1  # a map that is not the identity
    close_grads(g1, g2)

    # The density direction and log_prob on a batch, two events outside the cube.
    x = x1.at[:2, 0].set(jnp.asarray([-0.1, 1.5], dtype))

    def batched(p):
        u, ld = flow.inverse_batch(p, x, context)
        lp = flow.log_prob_batch(p, x, context)
        return jnp.sum(jnp.cos(3.0 * u[2:])) + jnp.mean(ld[2:]) + jnp.mean(lp[2:]), (u, ld, lp)

    def vmapped(p):
        u, ld = jax.vmap(flow.inverse_and_log_det, (None, 0, ctx_axis))(p, x, context)
        lp = jax.vmap(flow.log_prob, (None, 0, ctx_axis))(p, x, context)
        return jnp.sum(jnp.cos(3.0 * u[2:])) + jnp.mean(ld[2:]) + jnp.mean(lp[2:]), (u, ld, lp)

    (_, (u1, ld1, lp1)), g1 = jax.jit(jax.value_and_grad(batched, has_aux=True))(params)
    (_, (u2, ld2, lp2)), g2 = jax.jit(jax.value_and_grad(vmapped, has_aux=True))(params)
    np.testing.assert_allclose(u1[2:], u2[2:], atol=tol(dtype, 2e-6, 1e-13))
    np.testing.assert_allclose(ld1[2:], ld2[2:], atol=tol(dtype, 2e-5, 1e-11))
    np.testing.assert_array_equal(lp1[:2], -np.inf)
    np.testing.assert_allclose(lp1[2:], lp2[2:], atol=tol(dtype, 2e-5, 1e-11))
    np.testing.assert_allclose(lp1[2:], lq1[2:], atol=tol(dtype, 2e-5, 1e-11))  # sampled
    close_grads(g1, g2)


@pytest.mark.parametrize("blocks", [1, 3])
def test_mlp_rows_is_the_vmapped_network_transposed(blocks):
    """The conditioner of the batched passes: outputs as rows in a given order."""
    net = MLP((8, 5), 6, jax.nn.gelu, blocks)
    x = jax.random.normal(jax.random.key(1), (7, 4))
    if blocks > 1:  # the last inputs select the block
        x = jnp.concatenate([x, jax.nn.one_hot(jnp.arange(7) % blocks, blocks)], axis=1)
    variables = net.init(jax.random.key(0), x[0])
    variables = jax.tree.map(lambda p: p + 0.1 * jnp.cos(jnp.arange(p.size).reshape(p.shape)),
                             variables)
    order = np.array([3, 0, 5, 1, 4, 2])
    want = jax.vmap(net.apply, (None, 0))(variables, x)[:, order].T
    np.testing.assert_allclose(mlp_rows(net, variables, x, order), want, rtol=1e-5, atol=1e-6)


def test_batch_methods_check_their_arguments():
    flow = make_flow(3, hidden=(8,), n_bins=4, context_dim=2)
    params = flow.init(jax.random.key(0))
    x = jnp.full((5, 3), 0.5)
    with pytest.raises(ValueError, match=r"expected \[n, 3\]"):
        flow.forward_batch(params, x[0], jnp.ones(2))
    with pytest.raises(ValueError, match=r"expected \[n, 3\]"):
        flow.inverse_batch(params, x[:, :2], jnp.ones(2))
    with pytest.raises(ValueError, match="5 events"):
        flow.log_prob_batch(params, x, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="needs a context"):
        flow.forward_batch(params, x)
    with pytest.raises(ValueError, match="structure"):
        flow.inverse_batch(make_flow(3).init(jax.random.key(0)), x, jnp.ones(2))
    for draw in (flow.sample, flow.sample_detached):
        with pytest.raises(ValueError, match="number of samples must be an integer >= 0, got -1"):
            draw(jax.random.key(0), params, -1, jnp.ones(2))


def test_sample_detached_is_reverse_mode_only_and_checks_its_arguments():
    flow = make_flow(3, hidden=(8,), n_bins=4)
    params = flow.init(jax.random.key(0))

    def mean_log_q(p):
        return jnp.mean(flow.sample_detached(jax.random.key(1), p, 8)[1])

    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(mean_log_q, (params,), (params,))
    with pytest.raises(ValueError, match="needs a context"):
        FLOW.sample_detached(jax.random.key(0), _params(jnp.float32), 4)
    with pytest.raises(ValueError, match="n=5"):
        FLOW.sample_detached(jax.random.key(0), _params(jnp.float32), 5, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="structure"):
        flow.sample_detached(jax.random.key(0), make_flow(3, hidden=(8, 8)).init(
            jax.random.key(0)), 4)


def test_sample_detached_gradients_vmap_over_seeds():
    """Per-seed gradients under vmap equal those of single calls (the custom rule batches)."""
    flow = make_flow(3, hidden=(8,), n_bins=4)
    params = jax.tree.map(lambda p: p + 0.1, flow.init(jax.random.key(0)))

    def loss(p, key):
        x, log_q = flow.sample_detached(key, p, 16)
        return jnp.mean(jnp.exp(-2.0 * log_q) * x[:, 0])

    keys = jax.random.split(jax.random.key(1), 3)
    batched = jax.jit(jax.vmap(jax.grad(loss), (None, 0)))(params, keys)
    single = jax.jit(jax.grad(loss))
    for i, key in enumerate(keys):
        for g, g1 in zip(jax.tree.leaves(batched), jax.tree.leaves(single(params, key)),
                         strict=True):
            np.testing.assert_allclose(g[i], g1, rtol=1e-5, atol=1e-7)
    assert np.max(np.abs(np.asarray(jax.tree.leaves(batched)[-1][0]
                                    - jax.tree.leaves(batched)[-1][1]))) > 1e-4
