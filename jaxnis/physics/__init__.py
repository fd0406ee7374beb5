"""Differentiable toy physics: parameters, matrix elements, cross sections, parton densities,
and process integrands on the unit hypercube.

Every float (masses, widths, couplings, alpha_s) lives in a parameter pytree
(:func:`default_params`), so ``jax.grad`` of any observable with respect to the physics
parameters is exact automatic differentiation. Flavours and boson sets are static.
Units: GeV and pb.
"""

from jaxnis.physics import (
    cross_sections,
    lhapdf,
    matrix_elements,
    parameters,
    pdf,
    processes,
    spinors,
)
from jaxnis.physics.cross_sections import afb_ffbar, dsigma_dcos_ffbar, sigma_ffbar
from jaxnis.physics.lhapdf import LHAPDFFormatError, PDFGrid, load_lhapdf, xfxq, xfxq2
from jaxnis.physics.matrix_elements import (
    me_ee_to_mumu,
    me_ee_to_mumua,
    me_ee_to_qq,
    me_ee_to_qqg,
    me_ffbar_to_ffbar,
    me_ffbar_to_ffbar_a,
    me_qq_to_ll,
    radiative_amplitudes,
    radiative_amplitudes_by_boson,
    radiative_me_from_amplitudes,
)
from jaxnis.physics.parameters import (
    GEV2_TO_PB,
    default_params,
    derived,
    validate_params,
)
from jaxnis.physics.pdf import flavour_index, toy_xf, toy_xfx, toy_xfxq2
from jaxnis.physics.processes import (
    DrellYan,
    EEToFFbar,
    EEToMuMuGamma,
    EEToQQG,
    Event,
    three_jet_b,
)

__all__ = [
    "DrellYan",
    "EEToFFbar",
    "EEToMuMuGamma",
    "EEToQQG",
    "Event",
    "GEV2_TO_PB",
    "LHAPDFFormatError",
    "PDFGrid",
    "afb_ffbar",
    "cross_sections",
    "default_params",
    "derived",
    "dsigma_dcos_ffbar",
    "flavour_index",
    "lhapdf",
    "load_lhapdf",
    "matrix_elements",
    "me_ee_to_mumu",
    "me_ee_to_mumua",
    "me_ee_to_qq",
    "me_ee_to_qqg",
    "me_ffbar_to_ffbar",
    "me_ffbar_to_ffbar_a",
    "me_qq_to_ll",
    "parameters",
    "pdf",
    "processes",
    "radiative_amplitudes",
    "radiative_amplitudes_by_boson",
    "radiative_me_from_amplitudes",
    "sigma_ffbar",
    "spinors",
    "three_jet_b",
    "toy_xf",
    "toy_xfx",
    "toy_xfxq2",
    "validate_params",
    "xfxq",
    "xfxq2",
]
