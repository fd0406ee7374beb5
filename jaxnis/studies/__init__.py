r"""Differentiable parameter studies: gradients, scans, reweighting, fits and SBI data.

Everything here treats a Monte Carlo cross section as a differentiable function of the
physics parameters ``theta`` (masses, widths, couplings, cut values: all traced):

* :mod:`~jaxnis.studies.core`: fixed sample points (uniform or a frozen flow) and
  :func:`cross_section_and_grad`, the pathwise gradient through maps, matrix elements and
  PDFs with a standard error from the per-event gradients; when it is unbiased.
* :mod:`~jaxnis.studies.boundaries`: cuts whose boundary moves with ``theta`` (pathwise
  gradients miss the boundary term) and the remedies (:func:`restrict`,
  :func:`mass_window`, smoothed :func:`window`).
* :mod:`~jaxnis.studies.scans`: :func:`scan_cross_section` over a grid as one ``vmap``,
  common random numbers.
* :mod:`~jaxnis.studies.reweighting`: :func:`generate_events` and :func:`reweight` of fixed
  events to new parameters.
* :mod:`~jaxnis.studies.fitting`: :func:`histogram`, :func:`soft_histogram`,
  :func:`poisson_nll` and :func:`fit` (optax, Hessian uncertainties).
* :mod:`~jaxnis.studies.sbi`: joint score and joint likelihood ratio per event
  (:func:`augment`).
* :mod:`~jaxnis.studies.observables`: ``m_ll`` and ``cos theta*`` of events.

Example:
    >>> import jax
    >>> from jaxnis.physics.processes import EEToFFbar
    >>> from jaxnis import studies
    >>> proc = EEToFFbar("mu")
    >>> params = proc.default_params(sqrt_s=91.188)
    >>> est = studies.cross_section_and_grad(proc, params, jax.random.key(0), 4096,
    ...                                      wrt=("M_Z",))
    >>> float(est.value) > 0
    True
"""

from jaxnis.studies import boundaries, core, fitting, observables, reweighting, sbi, scans
from jaxnis.studies.boundaries import (
    Restricted,
    Windowed,
    mass_window,
    restrict,
    smooth_step,
    smoothing_bias,
    window,
    window_factor,
)
from jaxnis.studies.core import (
    Estimate,
    FunctionIntegrand,
    GradEstimate,
    Integrand,
    Points,
    ProcessIntegrand,
    as_integrand,
    cross_section,
    cross_section_and_grad,
    difference_quotient,
    flow_points,
    per_event_value_and_grad,
    per_event_weights,
    stratified_mean,
    uniform_points,
)
from jaxnis.studies.fitting import FitResult, bin_index, fit, histogram, poisson_nll, soft_histogram
from jaxnis.studies.observables import abs_cos_theta_star, cos_theta_star, pair_mass
from jaxnis.studies.reweighting import (
    EventSample,
    effective_sample_size,
    generate_events,
    log_f_ratio,
    reweight,
    reweight_scan,
    sample_cross_section,
    sample_mean,
)
from jaxnis.studies.sbi import TrainingSet, augment, grad_log_f
from jaxnis.studies.scans import ScanResult, product_grid, scan_cross_section

__all__ = [
    "Estimate",
    "EventSample",
    "FitResult",
    "FunctionIntegrand",
    "GradEstimate",
    "Integrand",
    "Points",
    "ProcessIntegrand",
    "Restricted",
    "ScanResult",
    "TrainingSet",
    "Windowed",
    "abs_cos_theta_star",
    "as_integrand",
    "augment",
    "bin_index",
    "boundaries",
    "core",
    "cos_theta_star",
    "cross_section",
    "cross_section_and_grad",
    "difference_quotient",
    "effective_sample_size",
    "fit",
    "fitting",
    "flow_points",
    "generate_events",
    "grad_log_f",
    "histogram",
    "log_f_ratio",
    "mass_window",
    "observables",
    "pair_mass",
    "per_event_value_and_grad",
    "per_event_weights",
    "poisson_nll",
    "product_grid",
    "restrict",
    "reweight",
    "reweight_scan",
    "reweighting",
    "sample_cross_section",
    "sample_mean",
    "sbi",
    "scan_cross_section",
    "scans",
    "smooth_step",
    "smoothing_bias",
    "soft_histogram",
    "stratified_mean",
    "uniform_points",
    "window",
    "window_factor",
]
