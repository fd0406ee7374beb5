"""Test configuration.

The suite runs twice (see the Makefile): once in the default 32-bit JAX mode, and once
with ``JAX_ENABLE_X64=1 pytest -m x64``. Tests that need float64 carry the ``x64`` mark
(the ``dtype`` fixture adds it to its float64 case); they are deselected in the 32-bit run
and are the only tests selected in the 64-bit run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

X64 = bool(jax.config.read("jax_enable_x64"))


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
