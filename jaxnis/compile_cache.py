"""A persistent cache of compiled programs, so a second run skips XLA compilation.

A jaxnis run spends much of its wall time compiling: the training program of the Drell-Yan
process compiles for about 8 s on a laptop-class CPU and then runs 250 steps in about 5 s.
JAX can store compiled programs on disk, keyed by the program, the compiler and the device,
so that running the same script again (or the same integrator configuration in another
process) loads the programs instead of compiling them. Measured on 2 CPU cores:
``Integrator(DrellYan().multichannel()).integrate(n_survey=250, n_refine=50)`` at batch
1000 took 15.7 s in a fresh process and 8.3 s in the next one (tracing is not cached,
compilation is).

The cache is a process-wide JAX setting, which a library must not change behind its
caller's back; :func:`cache_options` returns the settings and the application applies
each of them to JAX's configuration (the README shows the two lines; ``jaxnis demo`` does
it in :mod:`jaxnis.cli`).

The cache is a plain directory; deleting it is always safe. ``jaxnis demo`` uses it unless
given ``--no-cache``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: Environment variable naming the cache directory (overrides the default location).
ENV_VAR = "JAXNIS_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$JAXNIS_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxnis/xla``, else
    ``~/.cache/jaxnis/xla``."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "jaxnis" / "xla"


def cache_options(path: str | os.PathLike | None = None, *, min_compile_seconds: float = 1.0,
                  max_size_bytes: int | None = None) -> dict[str, Any]:
    """JAX settings that store compiled programs under ``path`` for later processes.

    Returns ``{jax option name: value}``, each to be set in JAX's configuration:
    ``jax_compilation_cache_dir``, ``jax_persistent_cache_min_compile_time_secs`` and, when a
    size is given, ``jax_compilation_cache_max_size``. A training program takes a few
    hundred kB; the directory grows by one entry per distinct program and is never pruned
    unless a size is given. The directory is created here.

    Args:
        path: cache directory; default :func:`default_cache_dir`.
        min_compile_seconds: only programs that took at least this long to compile are
            stored (small programs compile faster than they load).
        max_size_bytes: keep the most recently used entries within this size; JAX needs the
            ``filelock`` package for it (not a jaxnis dependency). ``None``: no limit.

    Raises:
        ValueError: on a negative ``min_compile_seconds`` or a path that is not a directory.
    """
    if min_compile_seconds < 0:
        raise ValueError(f"min_compile_seconds must be >= 0, got {min_compile_seconds}")
    directory = Path(path).expanduser() if path is not None else default_cache_dir()
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"compilation cache path {directory} exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "jax_compilation_cache_dir": str(directory),
        "jax_persistent_cache_min_compile_time_secs": float(min_compile_seconds),
    }
    if max_size_bytes is not None:
        options["jax_compilation_cache_max_size"] = int(max_size_bytes)
    return options


__all__ = ["ENV_VAR", "cache_options", "default_cache_dir"]
