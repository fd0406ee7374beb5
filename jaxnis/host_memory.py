"""Reuse of freed host memory by large CPU programs (Linux with glibc).

XLA:CPU allocates a program's temporary buffers with ``malloc`` on every call and frees them
at its end. glibc serves a request above its ``mmap`` threshold (at most 32 MiB; any request
above 64 MiB made on a thread other than the main one) with a fresh ``mmap``, and returns it
with ``munmap``: the next call faults every 4 KiB page in again, each zeroed by the kernel.
A flow's training step keeps its layers' activations for the backward pass: at batch 16384
(the MadNIS-sized flows of ``benchmarks/flows.py``, 2 CPU cores) that is 17 000 faults and
47 ms of kernel time per step at d = 4 and 77 000 faults and 0.15 s at d = 16 (one 300 MiB
buffer), a quarter of the step's CPU time.

:func:`reuse_freed_memory` stops that for the rest of the process:

* glibc's ``malloc`` never uses ``mmap`` (``M_MMAP_MAX = 0``) and never trims its heaps
  (``M_TRIM_THRESHOLD`` at its maximum), so a freed buffer is reused by the next call;
* JAX runs CPU programs on the thread that calls them (``jax_cpu_enable_async_dispatch``
  off), so XLA allocates their temporaries on the main thread, whose heap has no size limit
  (other threads' heaps hold at most 64 MiB and fall back to ``mmap`` above that).

Measured in fresh processes (``benchmarks/flows.py``'s step, 2 CPU cores): d = 16 at batch
16384 no page faults and 245 ms per step instead of 340 ms; d = 4 at batch 1024 4.7 ms
against 4.5 ms (the median of five processes each). Keeping one malloc heap for all
threads (``M_ARENA_MAX = 1``) removed the faults too but slowed the small step by half;
transparent huge pages for malloc (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``) helped in a
fresh process and slowed the step inside a longer benchmark run. Neither is used.

The price: the process keeps its peak heap until it exits, and a program dispatched from
Python returns only when it has finished (no overlap of Python with the computation; the
Integrator's runs in ``benchmarks/nis.py`` were not slower: camel4, two circles and Drell-Yan
in 14.7, 18.5 and 24.1 s against 16.1, 18.8 and 25.8 s, same numbers). Programs called
from other Python threads still allocate on those threads.

Both settings are process-wide, which a library must not change behind its caller's back.
The application calls :func:`reuse_freed_memory` before JAX's first computation (JAX reads
the dispatch setting when it starts its CPU backend); it sets glibc's malloc and returns
the JAX settings, each of which the application applies to JAX's configuration, as with
:func:`jaxnis.compile_cache.cache_options` (the README shows the two lines; ``jaxnis demo``
and the benchmarks do it). Without glibc (macOS, musl) nothing changes and there is nothing
to apply.
"""

from __future__ import annotations

import ctypes
import platform
import warnings
from typing import Any

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_NEVER = 2**31 - 1  # mallopt takes an int


def _jax_started() -> bool:
    """Whether JAX has created its backends in this process (``False`` if JAX no longer
    says: then the dispatch setting may come too late, the malloc settings never do)."""
    try:
        from jax._src import xla_bridge
    except ImportError:  # pragma: no cover - a JAX without this private module
        return False
    check = getattr(xla_bridge, "backends_are_initialized", None)
    return False if check is None else bool(check())


#: JAX's settings that go with the malloc settings (see the module docstring).
JAX_OPTIONS: dict[str, Any] = {"jax_cpu_enable_async_dispatch": False}


def reuse_freed_memory() -> dict[str, Any]:
    """Make glibc's malloc keep and reuse freed memory for the rest of the process, and return
    the JAX settings for the application to apply (see the module docstring). Call it before
    JAX's first computation.

    Returns a copy of :data:`JAX_OPTIONS` when the malloc settings took effect; an empty dict,
    changing nothing, where the C library is not glibc, and, with a ``RuntimeWarning``, when
    JAX has already started its backends.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return {}
    if _jax_started():
        warnings.warn("reuse_freed_memory() must run before JAX's first computation (JAX "
                      "has started its backends); nothing changed", RuntimeWarning,
                      stacklevel=2)
        return {}
    libc = ctypes.CDLL(None)
    # mallopt returns 1 on success
    if not (libc.mallopt(_M_MMAP_MAX, 0) == 1
            and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_NEVER) == 1):
        return {}
    return dict(JAX_OPTIONS)
