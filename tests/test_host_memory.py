"""reuse_freed_memory: a large CPU temporary stops faulting its pages in on every call."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from jaxnis import host_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# A program whose scan stacks ten 8 MB rows: an 80 MB temporary, above every glibc mmap
# threshold. Faults are counted per call: the median over seven calls after five.
_SCRIPT = """
import json, resource, statistics, sys
applied = None
import jax, jax.numpy as jnp
if sys.argv[1] == "reuse":
    from jaxnis.host_memory import reuse_freed_memory
    options = reuse_freed_memory()
    for name, value in options.items():
        jax.config.update(name, value)
    applied = options == {"jax_cpu_enable_async_dispatch": False}
n = 2_000_000
def body(c, i):
    return c + 1.0, jnp.sin(c + i)
@jax.jit
def f(x):
    _, rows = jax.lax.scan(body, x, jnp.arange(10.0))
    return jnp.sum(rows * rows[::-1])
x = jnp.linspace(0.0, 1.0, n, dtype=jnp.float32)
faults = []
for _ in range(12):
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
print(json.dumps({"applied": applied, "faults": statistics.median(faults[5:]),
                  "pages": 10 * n * 4 / 4096,
                  "async": jax.config.read("jax_cpu_enable_async_dispatch")}))
"""


def _faults(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], check=True,
                         capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc settings only")
def test_large_temporaries_stop_faulting_pages_in():
    plain, reused = _faults("plain"), _faults("reuse")
    assert (reused["applied"], reused["async"], plain["async"]) == (True, False, True)
    if plain["faults"] < 0.5 * plain["pages"]:
        pytest.skip(f"this allocator already reuses the buffer ({plain['faults']:.0f} faults "
                    f"per call for {plain['pages']:.0f} pages); nothing to compare")
    # Without the setting every page of the temporary is faulted in on every call; with it
    # the heap keeps the buffer (a few stray faults from other allocations are allowed).
    assert reused["faults"] < 0.02 * plain["pages"], (plain, reused)


def test_refuses_once_jax_has_started():
    import jax
    import jax.numpy as jnp

    float(jnp.ones(2).sum())  # this process's backend is up
    before = jax.config.read("jax_cpu_enable_async_dispatch")
    if GLIBC:
        with pytest.warns(RuntimeWarning, match="before JAX's first computation"):
            assert host_memory.reuse_freed_memory() == {}
    else:
        assert host_memory.reuse_freed_memory() == {}
    assert jax.config.read("jax_cpu_enable_async_dispatch") == before


def test_changes_nothing_without_glibc(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    called = []
    monkeypatch.setattr(host_memory.ctypes, "CDLL", lambda *a: called.append(a))
    assert host_memory.reuse_freed_memory() == {}
    assert called == []
