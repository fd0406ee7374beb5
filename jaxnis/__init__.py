"""jaxnis: neural importance sampling of phase-space integrals in JAX."""

from jaxnis import kinematics, numerics, phasespace

__version__ = "0.1.0"

__all__ = ["__version__", "kinematics", "numerics", "phasespace"]
