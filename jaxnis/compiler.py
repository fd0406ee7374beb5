"""XLA compiler options for jaxnis's compiled programs, set per program (nothing global).

On the CPU, XLA (jaxlib 0.10) hands small matrix products, together with the element-wise
operations around them, to YNNPACK kernels (``xla_cpu_experimental_ynn_fusion_type``, an
experimental option, on by default). In a spline flow these are the conditioners' layers
and the knot sums of every spline, and there XLA's own loops are faster. Measured on 2 CPU
cores (``benchmarks/flows.py`` step: sample, log q with its gradient, Adam; d = 16, the
MadNIS-sized flow), with the option off: sampling +35-47%, a training step +32% at batch
1024 and +16% at batch 16384; at d = 4 no change. Compile times are unchanged. Since the
flow's batched passes run on rows of events (the transposed output layers are such
products), the option off makes that step 2.7x faster at d = 16 and 1.6-2.0x at d = 4
(batch 16384; 240-250 ms against 670-690 ms, and 36-43 ms against 68-72 ms).
With jaxlib 0.12.1 (what pip installs on Python >= 3.12) the option matters much less: 25
survey steps of the Integrator on the 16-d Gaussian of ``benchmarks/integrands.py`` (8
layers, 1 + 3 updates per step) took 1.13 s with the option set (YNNPACK off) and 1.24 s
with XLA's default at batch 1000, and 22.8 s against 20.5 s at batch 16384, where jaxlib
0.10.2 took 1.54 s against 1.94 s and 26.6 s against 75.1 s (one run each, same machine).

XLA's classic element-wise emitters instead of its newer fusion emitters
(``xla_cpu_use_fusion_emitters=False``, jaxlib 0.10 only) are not set: they trade compile
time for run time.
Measured on 2 CPU cores with the settings of ``benchmarks/nis.py`` (a 250-step survey at
batch 1000, then a refine batch of 5e4): XLA compile time fell by 15-35% (camel4 14-16 s
to 10-11 s, Drell-Yan 27-32 s to 17-22 s, three jets 23.4 s to 17.2 s), but the compiled
survey ran 8-13% longer on camel4, gauss16 and Drell-Yan (11% shorter on the annulus; the
fastest of four repeats, both programs in one process). A run that trains longer than the
benchmark's, or loads its programs from the persistent cache
(:mod:`jaxnis.compile_cache`), would lose by it. The test suite, which compiles many
small programs and runs each a few times, sets it where jaxlib has it
(``tests/conftest.py``).

:func:`jit` is ``jax.jit`` with these options; the :class:`~jaxnis.integrate.Integrator`
compiles its programs with it, and so can a program built from jaxnis's parts (a flow, a
trainer's step). On other backends the options are empty and :func:`jit` is ``jax.jit``.
Options given in ``XLA_FLAGS`` apply to every program; these override them for the programs
compiled through :func:`jit` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

#: Per-program XLA options on the CPU backend (see the module docstring).
CPU_OPTIONS: dict[str, Any] = {"xla_cpu_experimental_ynn_fusion_type": ""}


def compiler_options(backend: str | None = None) -> dict[str, Any]:
    """The options for programs on ``backend`` (default: JAX's default backend): a copy of
    :data:`CPU_OPTIONS` on ``"cpu"``, else empty."""
    backend = jax.default_backend() if backend is None else backend
    return dict(CPU_OPTIONS) if backend == "cpu" else {}


def jit(fun: Callable, **kwargs: Any) -> Callable:
    """``jax.jit(fun, **kwargs)`` compiled with :func:`compiler_options` (merged under any
    ``compiler_options`` given here, which take precedence)."""
    options = {**compiler_options(), **(kwargs.pop("compiler_options", None) or {})}
    return jax.jit(fun, compiler_options=options or None, **kwargs)
