"""jaxnis: neural importance sampling of particle-physics phase-space integrals in JAX.

Modules: :mod:`~jaxnis.kinematics` (four-vectors), :mod:`~jaxnis.phasespace` (maps with
exact weights), :mod:`~jaxnis.physics` (matrix elements, PDFs, processes),
:mod:`~jaxnis.cuts`, :mod:`~jaxnis.flows` (spline coupling flows), :mod:`~jaxnis.vegas`,
:mod:`~jaxnis.channels`, :mod:`~jaxnis.losses`, :mod:`~jaxnis.estimators`,
:mod:`~jaxnis.train` (init/step kernels), :mod:`~jaxnis.pretrain` (VEGAS starts of a flow),
:mod:`~jaxnis.integrate` (the front door), :mod:`~jaxnis.studies` (gradients, scans, fits),
:mod:`~jaxnis.batching` (large batches in cache-sized chunks),
:mod:`~jaxnis.compile_cache` (compiled programs kept on disk between runs),
:mod:`~jaxnis.compiler` (the XLA options jaxnis compiles its programs with) and
:mod:`~jaxnis.host_memory` (large CPU programs reusing freed memory).
Importing jaxnis does not import distrax: the distrax wrappers live in
:mod:`jaxnis.flows.distrax_interop`.
"""

from jaxnis import (
    batching,
    channels,
    compile_cache,
    compiler,
    cuts,
    estimators,
    flows,
    host_memory,
    integrate,
    kinematics,
    losses,
    numerics,
    phasespace,
    physics,
    pretrain,
    studies,
    train,
    vegas,
)
from jaxnis.batching import BatchEvaluator, map_in_chunks
from jaxnis.integrate import Integrator, Result

__version__ = "0.1.0"

__all__ = [
    "BatchEvaluator",
    "Integrator",
    "Result",
    "__version__",
    "batching",
    "channels",
    "compile_cache",
    "compiler",
    "cuts",
    "estimators",
    "flows",
    "host_memory",
    "integrate",
    "kinematics",
    "losses",
    "map_in_chunks",
    "numerics",
    "phasespace",
    "physics",
    "pretrain",
    "studies",
    "train",
    "vegas",
]
