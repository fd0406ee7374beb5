"""Per-program XLA options (:mod:`jaxnis.compiler`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnis import compiler
from jaxnis.flows import make_flow


def test_options_are_for_the_cpu_only():
    assert compiler.compiler_options("cpu") == compiler.CPU_OPTIONS
    assert compiler.compiler_options("gpu") == {} == compiler.compiler_options("tpu")
    options = compiler.compiler_options("cpu")
    options["extra"] = 1  # a copy: the module's options are not changed
    assert "extra" not in compiler.CPU_OPTIONS


@pytest.mark.optimized
def test_jit_takes_the_options_and_computes_the_same_numbers():
    """A flow's log-density compiled both ways: the same values (to float32 rounding), and
    the options reach the compiler (on the CPU: no YNNPACK fusion in the program)."""
    flow = make_flow(8, n_bins=10, hidden=(32, 32))
    params = jax.tree.map(lambda a: a + 0.05, flow.init(jax.random.key(0)))
    x = jax.random.uniform(jax.random.key(1), (512, 8))

    def log_prob(p, x):
        return jax.vmap(flow.log_prob, (None, 0))(p, x)

    plain = jax.jit(log_prob)
    tuned = compiler.jit(log_prob)
    # log q sums 64 float32 log-derivatives (8 layers x 8 dimensions) and reaches |12|:
    # differently fused programs round it differently by up to ~64 eps |log q| = 1e-4.
    a, b = np.asarray(tuned(params, x)), np.asarray(plain(params, x))
    tol = 64 * np.finfo(np.float32).eps * np.abs(b).max()
    assert np.abs(a - b).max() < tol, (np.abs(a - b).max(), tol)
    if jax.default_backend() == "cpu":
        assert "ynn" not in tuned.lower(params, x).compile().as_text()
    # keyword arguments of jax.jit pass through; explicit options are accepted
    scaled = compiler.jit(lambda x, k: k * jnp.sum(x), static_argnums=1,
                          compiler_options={"xla_cpu_experimental_ynn_fusion_type": ""})
    assert float(scaled(jnp.ones(3), 2)) == 6.0
