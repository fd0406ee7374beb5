"""Differentiable toy physics: parameters, matrix elements, cross sections, parton densities.

Every float (masses, widths, couplings, alpha_s) lives in a parameter pytree
(:func:`default_params`), so ``jax.grad`` of any observable with respect to the physics
parameters is exact automatic differentiation. Flavours and boson sets are static.
Units: GeV and pb.
"""

from jaxnis.physics import cross_sections, matrix_elements, parameters, spinors
from jaxnis.physics.cross_sections import afb_ffbar, dsigma_dcos_ffbar, sigma_ffbar
from jaxnis.physics.matrix_elements import (
    me_ee_to_mumu,
    me_ee_to_mumua,
    me_ee_to_qq,
    me_ee_to_qqg,
    me_ffbar_to_ffbar,
    me_ffbar_to_ffbar_a,
    me_qq_to_ll,
    radiative_amplitudes,
)
from jaxnis.physics.parameters import (
    GEV2_TO_PB,
    default_params,
    derived,
    validate_params,
)

__all__ = [
    "GEV2_TO_PB",
    "afb_ffbar",
    "cross_sections",
    "default_params",
    "derived",
    "dsigma_dcos_ffbar",
    "matrix_elements",
    "me_ee_to_mumu",
    "me_ee_to_mumua",
    "me_ee_to_qq",
    "me_ee_to_qqg",
    "me_ffbar_to_ffbar",
    "me_ffbar_to_ffbar_a",
    "me_qq_to_ll",
    "parameters",
    "radiative_amplitudes",
    "sigma_ffbar",
    "spinors",
    "validate_params",
]
