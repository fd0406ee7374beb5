"""jaxnis: neural importance sampling of particle-physics phase-space integrals in JAX.

Modules: :mod:`~jaxnis.kinematics` (four-vectors), :mod:`~jaxnis.phasespace` (maps with
exact weights), :mod:`~jaxnis.physics` (matrix elements, PDFs, processes),
:mod:`~jaxnis.cuts`, :mod:`~jaxnis.flows` (spline coupling flows), :mod:`~jaxnis.vegas`,
:mod:`~jaxnis.channels`, :mod:`~jaxnis.losses`, :mod:`~jaxnis.estimators`,
:mod:`~jaxnis.train` (init/step kernels) and :mod:`~jaxnis.integrate` (the front door).
Importing jaxnis does not import distrax: the distrax wrappers live in
:mod:`jaxnis.flows.distrax_interop`.
"""

from jaxnis import (
    channels,
    cuts,
    estimators,
    flows,
    integrate,
    kinematics,
    losses,
    numerics,
    phasespace,
    physics,
    train,
    vegas,
)
from jaxnis.integrate import Integrator, Result

__version__ = "0.1.0"

__all__ = [
    "Integrator",
    "Result",
    "__version__",
    "channels",
    "cuts",
    "estimators",
    "flows",
    "integrate",
    "kinematics",
    "losses",
    "numerics",
    "phasespace",
    "physics",
    "train",
    "vegas",
]
