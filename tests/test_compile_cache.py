"""The persistent compilation cache: programs land on disk and a second process loads them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jaxnis.compile_cache import cache_options, default_cache_dir

# One process compiles a jitted function into the cache; the next one loads it. JAX reports
# a persistent-cache hit through jax.monitoring, counted here.
_SCRIPT = """
import sys
import jax, jax.numpy as jnp
import jaxnis
hits = []
jax.monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if "cache_hits" in name else None)
for name, value in jaxnis.compile_cache.cache_options(sys.argv[1],
                                                      min_compile_seconds=0.0).items():
    jax.config.update(name, value)
f = jax.jit(lambda x: jnp.sin(x) * jnp.cos(x) + jnp.exp(-x * x))
print(float(f(jnp.arange(8.0)).sum()), len(hits))
"""


def _run(cache: Path) -> tuple[float, int]:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(cache)], check=True,
                         capture_output=True, text=True, timeout=300)
    value, hits = out.stdout.split()
    return float(value), int(hits)


def test_second_process_loads_the_compiled_program(tmp_path):
    cache = tmp_path / "xla"
    first, hits_first = _run(cache)
    entries = [p for p in cache.rglob("*") if p.is_file()]
    assert entries, "nothing was written to the cache"
    second, hits_second = _run(cache)
    assert hits_first == 0 and hits_second >= 1
    assert second == first


def test_default_location_and_bad_input(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXNIS_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    assert cache_options() == {"jax_compilation_cache_dir": str(tmp_path / "mine"),
                               "jax_persistent_cache_min_compile_time_secs": 1.0}
    assert (tmp_path / "mine").is_dir()
    monkeypatch.delenv("JAXNIS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "jaxnis" / "xla"
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ValueError, match="not a directory"):
        cache_options(a_file)
    with pytest.raises(ValueError, match="min_compile_seconds"):
        cache_options(tmp_path, min_compile_seconds=-1.0)
