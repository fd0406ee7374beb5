"""Chunked batch evaluation: the same numbers as one call for any batch size and pytree;
one trace per chunk shape; clear errors for bad configuration.

XLA compiles a different program for each shape, and the programs for ``N`` and for
``chunk`` events may round an elementwise ``sin`` differently in the last bit for some
positions (seen for float32 at N = 9 vs 8). So a generic function is checked bit for bit
against its chunk-shaped program applied window by window, and to a few ulp against the
single call; RAMBO on diet, the map the evaluator is for, is checked bit for bit against
the single call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnis.batching import DEFAULT_CHUNK, BatchEvaluator, map_in_chunks
from jaxnis.phasespace.rambo import RamboOnDiet, make_cond

CHUNK = 8
SIZES = (9, 16, 29)  # a tail of 1, an exact multiple, four chunks with a tail of 5

jit_o0 = {"compiler_options": {"xla_backend_optimization_level": 0}}


def event_fn(x, params):
    """One event ``x [3]`` -> a nested output with leaves of several shapes and dtypes."""
    y = jnp.sin(x) * params["scale"] + jnp.log1p(x * x)
    return {"y": y, "stats": (jnp.sum(y), jnp.outer(x, x)), "count": jnp.sum(x > 0.5)}


def make_counted(fn):
    """``fn`` and a list that grows by one entry each time ``fn`` is traced."""
    traces = []

    def counted(*args):
        traces.append(jax.tree.map(np.shape, args))
        return fn(*args)

    return counted, traces


def inputs(n, dtype, seed=0):
    x = jax.random.uniform(jax.random.key(seed), (n, 3), dtype=dtype)
    return x, {"scale": jnp.asarray([1.0, -2.0, 0.5], dtype=dtype)}


def assert_same(got, want, ulp: float = 0.0):
    """Same structure, shapes and dtypes; values equal (or within ``ulp`` units of eps)."""
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        if ulp and jnp.issubdtype(w.dtype, jnp.floating):
            eps = float(jnp.finfo(w.dtype).eps)
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=ulp * eps,
                                       atol=ulp * eps)
        else:
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def windowed(fn, x, params, chunk):
    """Reference: ``fn`` on windows of ``chunk`` events, the last window ending at the end."""
    n = x.shape[0]
    parts = []
    for start in range(0, n, chunk):
        begin = min(start, n - chunk)
        out = fn(x[begin:begin + chunk], params)
        parts.append(jax.tree.map(lambda a, s=start, b=begin: np.asarray(a)[s - b:], out))
    return jax.tree.map(lambda *a: np.concatenate(a), *parts)


@pytest.fixture(scope="module")
def evaluator():
    """One evaluator (and its trace log) shared by the tests: compiled once per process."""
    counted, traces = make_counted(jax.vmap(event_fn, in_axes=(0, None)))
    return BatchEvaluator(counted, chunk=CHUNK, in_axes=(0, None)), traces


def test_equals_one_call_for_ragged_sizes(evaluator, dtype):
    ev, _ = evaluator
    single = jax.jit(jax.vmap(event_fn, in_axes=(0, None)))
    for n in SIZES:
        x, params = inputs(n, dtype, seed=n)
        got = ev(x, params)
        assert_same(got, windowed(single, x, params, CHUNK))
        assert_same(got, single(x, params), ulp=4)
        # NumPy inputs (sliced on the host) give the same as JAX arrays.
        assert_same(ev(np.asarray(x), params), got)


def test_traces_once_per_chunk_shape(evaluator, dtype):
    ev, traces = evaluator
    before = len(traces)
    for n in (*SIZES, 1000):
        x, params = inputs(n, dtype)
        # New parameter values are traced values: no new trace either.
        params = jax.tree.map(lambda p, k=n: p * (k + 1.0), params)
        jax.block_until_ready(ev(x, params))
    chunk_traces = [t for t in traces if t[0] == (CHUNK, 3)]
    assert len(chunk_traces) == 1  # whatever the batch size, in this test or another
    assert len(traces) - before <= 1
    # A batch smaller than a chunk is one call at its own shape: one more trace, once.
    for seed in range(3):
        jax.block_until_ready(ev(*inputs(5, dtype, seed)))
    assert [t[0] for t in traces].count((5, 3)) == 1


def test_pytree_inputs_and_every_argument_mapped(dtype):
    def fn(batch):
        return batch["a"] * batch["b"][:, :1], -batch["a"]

    ev = BatchEvaluator(fn, chunk=4)
    a = jnp.arange(11 * 2, dtype=dtype).reshape(11, 2)
    batch = {"a": a, "b": jnp.ones((11, 5), dtype=dtype) * 3}
    assert_same(ev(batch), jax.jit(fn)(batch))
    assert ev.batch_size(batch) == 11


@pytest.mark.parametrize("massive", [False, True])
def test_phase_space_map_equals_single_call(massive, dtype):
    """RAMBO on diet through the evaluator equals one jit(vmap) call exactly."""
    ps = RamboOnDiet(3, massive=massive)
    cond = make_cond(1000.0, [173.0, 173.0, 0.0] if massive else None, dtype=dtype)
    r = jax.random.uniform(jax.random.key(1), (301, ps.n_random), dtype=dtype)
    batched = jax.vmap(ps.forward, in_axes=(0, None))
    ev = BatchEvaluator(batched, chunk=64, in_axes=(0, None), **jit_o0)
    got = ev(r, cond)
    assert_same(got, ev.jitted(r, cond))
    assert got[0].shape == (301, 3, 4) and bool(jnp.all(jnp.isfinite(got[1])))


def test_chunk_none_and_map_in_chunks(dtype):
    x, params = inputs(20, dtype)
    batched = jax.vmap(event_fn, in_axes=(0, None))
    want = jax.jit(batched)(x, params)
    assert_same(BatchEvaluator(batched, chunk=None, in_axes=(0, None))(x, params), want)
    assert_same(map_in_chunks(batched, x, params, chunk=6, in_axes=(0, None)), want)


def test_lower_compiles_the_chunk_shape(dtype):
    counted, traces = make_counted(jax.vmap(event_fn, in_axes=(0, None)))
    ev = BatchEvaluator(counted, chunk=CHUNK, in_axes=(0, None))
    x, params = inputs(50, dtype)
    ev.lower(x, params).compile()
    assert [t[0] for t in traces] == [(CHUNK, 3)]
    jax.block_until_ready(ev(x, params))
    assert len(traces) == 1  # the call reuses the ahead-of-time compilation


@pytest.mark.parametrize("chunk", [0, -16, 2.5, True, "16"])
def test_bad_chunk_raises(chunk):
    with pytest.raises(ValueError, match="chunk must be a positive integer or None"):
        BatchEvaluator(jnp.sin, chunk=chunk)
    with pytest.raises(ValueError, match="chunk"):
        map_in_chunks(jnp.sin, jnp.ones(4), chunk=chunk)


@pytest.mark.parametrize("in_axes", [1, -1, (0, 1), "0", (True,)])
def test_bad_in_axes_raises(in_axes):
    with pytest.raises(ValueError, match="in_axes must be 0, None"):
        BatchEvaluator(jnp.sin, in_axes=in_axes)


def test_bad_call_raises():
    ev = BatchEvaluator(lambda a, b: a + b, chunk=4, in_axes=(0, 0))
    with pytest.raises(ValueError, match="different leading dimensions"):
        ev(jnp.ones(10), jnp.ones(11))
    with pytest.raises(ValueError, match="2 entries for 1 arguments"):
        ev(jnp.ones(10))
    with pytest.raises(ValueError, match="is a scalar"):
        ev(jnp.ones(10), jnp.float32(1.0))
    reduce = BatchEvaluator(jnp.sum, chunk=4)
    with pytest.raises(ValueError, match="expected a leading batch axis of 4"):
        reduce(jnp.ones(10))
    with pytest.raises(ValueError, match="fn must be callable"):
        BatchEvaluator(3)


def test_default_chunk_is_a_power_of_two():
    assert DEFAULT_CHUNK >= 1024 and DEFAULT_CHUNK & (DEFAULT_CHUNK - 1) == 0
    assert BatchEvaluator(jnp.sin).chunk == DEFAULT_CHUNK
