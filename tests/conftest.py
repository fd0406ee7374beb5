"""Test configuration.

The suite runs twice (see the Makefile): once in the default 32-bit JAX mode, and once
with ``JAX_ENABLE_X64=1 pytest -m x64``. Tests that need float64 carry the ``x64`` mark
(the ``dtype`` fixture adds it to its float64 case); they are deselected in the 32-bit run
and are the only tests selected in the 64-bit run.

Programs are compiled with most of XLA's optimisations off
(``jax_disable_most_optimizations``): the suite's time is mostly compilation of small
programs run a few times, and switching the optimisations off cuts it by about 40 %. The
numbers the tests assert do not depend on it, except float32 rounding bounds, which are a
property of the optimised programs users run: tests asserting such a bound carry the
``optimized`` mark and compile with the optimisations on in the 32-bit run (the 64-bit
run's bounds hold either way, and compiling with the optimisations costs it time). So do
a few tests whose time goes into running rather than compiling (many seeds in one
program), which the optimised programs finish sooner.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

# XLA:CPU's newer fusion emitters take about twice as long to compile the suite's small
# unoptimised programs as the classic element-wise emitters (measured: a vmapped
# survey-and-refine program 3.2-3.7 s against 1.6-1.8 s, the quick demo 24 s against
# 17 s). Set before the backend starts, i.e. before any computation. jaxlib 0.11 (Python
# >= 3.12) no longer has the option, and XLA stops the process at an unknown flag.
JAXLIB = tuple(int(p) for p in importlib.metadata.version("jaxlib").split(".")[:2])
if JAXLIB < (0, 11):
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", ""), "--xla_cpu_use_fusion_emitters=false"]).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402

X64 = bool(jax.config.read("jax_enable_x64"))
jax.config.update("jax_disable_most_optimizations", True)

# Many tests compile the same programs (the same flow or integrator configuration built in
# several tests, and module-level programs in both xdist workers). JAX's persistent
# compilation cache, keyed by the program itself, lets them compile once per run. The
# directory is outside git (.gitignore); JAXNIS_TEST_JAX_CACHE="" switches the cache off.
_CACHE = os.environ.get("JAXNIS_TEST_JAX_CACHE",
                        str(Path(__file__).resolve().parents[1] / ".jax_test_cache"))
if _CACHE:
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(autouse=True)
def _xla_optimisations(request):
    """Compile with XLA's optimisations on for tests marked ``optimized`` (32-bit run)."""
    if X64 or request.node.get_closest_marker("optimized") is None:
        yield
        return
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", True)


def pytest_collection_modifyitems(config, items):
    if X64:
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("x64") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(params=[jnp.float32, pytest.param(jnp.float64, marks=pytest.mark.x64)],
                ids=["f32", "f64"])
def dtype(request):
    """Floating dtype under test: float32 in the 32-bit run, float64 in the x64 run."""
    return request.param


def tol(dtype, f32: float, f64: float) -> float:
    """Pick a tolerance by dtype."""
    return f64 if jnp.dtype(dtype) == jnp.float64 else f32
