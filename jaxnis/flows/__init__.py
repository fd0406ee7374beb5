"""Normalising-flow bijectors of the unit hypercube ``[0, 1]^d``.

* :mod:`~jaxnis.flows.splines`: element-wise monotone maps of ``[0, 1]`` (rational-quadratic,
  piecewise-linear, piecewise-quadratic splines and an odds-affine map).
* :mod:`~jaxnis.flows.masks`: coupling masks (binary-digit, checkerboard, random).
* :mod:`~jaxnis.flows.coupling`: coupling layers with flax MLP conditioners.
* :mod:`~jaxnis.flows.flow`: :func:`make_flow`, layers stacked and run by ``lax.scan``.

Bijectors follow distrax's naming, ``forward_and_log_det(params, x) -> (y, logdet)`` and
``inverse_and_log_det(params, y) -> (x, logdet)``, on one event (batch with ``jax.vmap``;
a :class:`Flow` also has ``forward_batch``, ``inverse_batch`` and ``log_prob_batch``, faster
on the CPU).
``jaxnis.flows.distrax_interop`` wraps them for distrax; it is not imported here, so this
package does not need distrax.
"""

from jaxnis.flows.coupling import MLP, CouplingLayer
from jaxnis.flows.flow import Flow, batch_maps, channel_embedding, make_flow
from jaxnis.flows.masks import (
    Permutation,
    binary_masks,
    checkerboard_masks,
    conditions_all,
    make_masks,
    random_masks,
)
from jaxnis.flows.splines import (
    ElementwiseTransform,
    OddsAffine,
    PiecewiseLinear,
    PiecewiseQuadratic,
    RationalQuadraticSpline,
    linear_params_from_heights,
    make_transform,
    rqs_params_from_knots,
)

__all__ = [
    "MLP",
    "CouplingLayer",
    "ElementwiseTransform",
    "Flow",
    "OddsAffine",
    "Permutation",
    "PiecewiseLinear",
    "PiecewiseQuadratic",
    "RationalQuadraticSpline",
    "batch_maps",
    "binary_masks",
    "channel_embedding",
    "checkerboard_masks",
    "conditions_all",
    "linear_params_from_heights",
    "make_flow",
    "make_masks",
    "make_transform",
    "random_masks",
    "rqs_params_from_knots",
]
