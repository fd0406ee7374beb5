"""distrax wrappers for jaxnis bijectors and flows (the only module that imports distrax).

Not imported by ``jaxnis`` or ``jaxnis.flows``; import it explicitly::

    from jaxnis.flows.distrax_interop import as_distrax_bijector, as_distrax_distribution

jaxnis bijectors act on one event ``[d]`` with explicit ``params``; the wrappers close over
``params`` (and a fixed context) and accept any leading batch shape ``[..., d]`` by
flattening it and mapping with ``jax.vmap`` (a flow's batch methods instead, where it has
them), as distrax expects of a bijector with ``event_ndims_in = 1``.
"""

from __future__ import annotations

import distrax
import jax.numpy as jnp

from jaxnis.flows.flow import Flow, batch_maps
from jaxnis.types import Array, ArrayLike, Params, PRNGKey


def _bind(bijector, params, context):
    """The bijector's two directions with bound parameters, each on a flat batch ``[n, d]``
    (:func:`jaxnis.flows.batch_maps`: a flow's batch methods, else ``jax.vmap``)."""
    fwd, inv = batch_maps(bijector, with_context=context is not None)
    return lambda x: fwd(params, x, context), lambda y: inv(params, y, context)


def _batched(fn, x: Array, dim: int):
    if x.shape[-1] != dim:
        raise ValueError(f"expected events of size {dim}, got shape {x.shape}")
    lead = x.shape[:-1]
    y, logdet = fn(x.reshape(-1, dim))
    return y.reshape(*lead, dim), logdet.reshape(lead)


class JaxnisBijector(distrax.Bijector):
    """A jaxnis bijector with bound parameters, as a ``distrax.Bijector`` on ``[..., d]``.

    Args:
        bijector: any object with ``forward_and_log_det(params, x[, context])`` and
            ``inverse_and_log_det`` on one event ``[d]`` (splines, coupling layers, flows).
        params: its parameters.
        dim: event size ``d``.
        context: fixed context passed to every call (``None`` for none).
    """

    def __init__(self, bijector, params: Params, dim: int, context: ArrayLike | None = None):
        super().__init__(event_ndims_in=1, event_ndims_out=1)
        self._bijector = bijector
        self._params = params
        self._dim = int(dim)
        self._fwd, self._inv = _bind(bijector, params, context)

    def forward_and_log_det(self, x: Array) -> tuple[Array, Array]:
        return _batched(self._fwd, jnp.asarray(x), self._dim)

    def inverse_and_log_det(self, y: Array) -> tuple[Array, Array]:
        return _batched(self._inv, jnp.asarray(y), self._dim)

    def same_as(self, other) -> bool:
        return (type(other) is JaxnisBijector and other._bijector is self._bijector
                and other._params is self._params)


def as_distrax_bijector(bijector, params: Params, dim: int | None = None,
                        context: ArrayLike | None = None) -> JaxnisBijector:
    """Wrap ``bijector`` with ``params`` as a :class:`JaxnisBijector` (``dim`` defaults to
    ``bijector.dim`` where the bijector has one)."""
    if dim is None:
        dim = getattr(bijector, "dim", None)
        if dim is None:
            raise ValueError(f"dim is required for {type(bijector).__name__}")
    return JaxnisBijector(bijector, params, dim, context)


class FlowDistribution(distrax.Distribution):
    """A :class:`~jaxnis.flows.flow.Flow` with bound parameters as a distrax distribution on
    ``[0, 1]^d`` (event shape ``(d,)``); ``log_prob`` accepts ``[..., d]``."""

    def __init__(self, flow: Flow, params: Params, context: ArrayLike | None = None):
        self._flow = flow
        self._params = params
        self._context = context

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self._flow.dim,)

    def _sample_n(self, key: PRNGKey, n: int) -> Array:
        return self._flow.sample(key, self._params, n, self._context)[0]

    def _sample_n_and_log_prob(self, key: PRNGKey, n: int) -> tuple[Array, Array]:
        return self._flow.sample(key, self._params, n, self._context)

    def log_prob(self, value: ArrayLike) -> Array:
        value = jnp.asarray(value)
        if value.shape[-1] != self._flow.dim:
            raise ValueError(f"expected events of size {self._flow.dim}, got {value.shape}")
        lead = value.shape[:-1]
        lp = self._flow.log_prob_batch(self._params, value.reshape(-1, self._flow.dim),
                                       self._context)
        return lp.reshape(lead)


def as_distrax_distribution(flow: Flow, params: Params,
                            context: ArrayLike | None = None) -> FlowDistribution:
    """Wrap a flow as a :class:`FlowDistribution`."""
    return FlowDistribution(flow, params, context)


__all__ = ["FlowDistribution", "JaxnisBijector", "as_distrax_bijector", "as_distrax_distribution"]
