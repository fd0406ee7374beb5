r"""Weighted event samples and their reweighting to new parameters.

An :class:`EventSample` holds events ``x_i`` (momenta and momentum fractions) drawn at
``theta0`` with *cross-section weights* ``weight_i = w_i / n_{c_i}``
(``w = alpha_c f J_c / q_c`` the Monte Carlo weight, ``n_c`` the points of channel ``c``), so
``sum_i weight_i`` estimates ``sigma(theta0)`` and a histogram of the weights estimates
``d sigma``. The sample represents the measure ``f(x | theta0) dx``; under new parameters

.. math::

    \mathrm{weight}_i(\theta_1) = \mathrm{weight}_i(\theta_0)\,
        \frac{f(x_i | \theta_1)}{f(x_i | \theta_0)}

with the **events held fixed**: the ratio contains only the differential cross sections
(matrix element, PDFs, cuts), no phase-space Jacobian, because ``x_i`` does not move.
Holding the random numbers ``r_i`` fixed instead would move the events when the map
depends on ``theta`` (a Breit-Wigner map following ``M_Z'``) and the Jacobian ratio
``J(r | theta1) / J(r | theta0)`` would be needed as well: that is a new direct estimate
with common random numbers (:func:`jaxnis.studies.core.cross_section`), not reweighting.

Reweighting is unbiased where ``f(x | theta0) > 0`` wherever ``f(x | theta1) > 0`` (same
cuts or tighter) and efficient while the ratio stays moderate (watch
:func:`effective_sample_size`); the channel weights ``alpha_c(x | theta0)`` stay as they were,
which is fine because they sum to one at every ``x``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxnis import estimators
from jaxnis.studies.core import (
    Estimate,
    Points,
    as_integrand,
    default_points,
    grid_values,
    map_points,
    over_grid_blocks,
    vmap_chunked,
)
from jaxnis.studies.scans import SCAN_EVENT_CHUNK
from jaxnis.types import Array, ArrayLike, Params, PRNGKey


@dataclasses.dataclass(frozen=True)
class EventSample:
    """Weighted events (a pytree; all leaves have leading axis ``N``).

    Attributes:
        events: the process's ``Event`` with leaves ``[N, ...]``.
        weight: ``[N]`` cross-section weights (pb); ``sum(weight)`` estimates ``sigma``.
        log_f: ``[N]`` ``log f(x_i | theta0)`` at the generating parameters (``-inf``: cut).
        channel: ``[N]`` int32 channel each event was drawn in.
        counts: ``[C]`` events per channel (the ``n_c`` of the weights).
    """

    events: Any
    weight: Array
    log_f: Array
    channel: Array
    counts: Array

    @property
    def n(self) -> int:
        return self.weight.shape[0]

    @property
    def n_channels(self) -> int:
        return self.counts.shape[0]


jax.tree_util.register_dataclass(
    EventSample, data_fields=["events", "weight", "log_f", "channel", "counts"], meta_fields=[]
)


def generate_events(integrand: Any, params: Params, key: PRNGKey | None = None,
                    n: int | None = None, *, points: Points | None = None) -> EventSample:
    """Events and cross-section weights at ``params`` from fixed ``points`` (or ``n`` uniform
    points from ``key``).

    Args:
        integrand: a process or a study integrand with events (see
            :mod:`jaxnis.studies.boundaries`).
        params: generating parameters ``theta0``.
        key, n, points: the sample points.

    Returns:
        :class:`EventSample`.
    """
    integrand = as_integrand(integrand)
    if integrand.process is None:
        raise ValueError("generate_events needs an integrand with events (a process)")
    points = default_points(integrand, params, key, n, points)
    n_ch = integrand.n_channels

    def one(r, log_q, c):
        w, event = integrand.weight_and_event(r, params, c)
        return w * jnp.exp(-log_q), event

    w, events = map_points(one, points, n_ch)
    counts = estimators.blocked_segment_sum(jnp.ones_like(w), points.channel, n_ch)
    log_f = jax.vmap(integrand.log_f, (0, None))(events, params)
    weight = w / jnp.take(counts, points.channel)
    # a zero weight (cut, or outside the map's support) means f = 0 for reweighting too
    log_f = jnp.where(weight > 0, log_f, -jnp.inf)
    return EventSample(events, weight, log_f, points.channel, counts)


def _ratio(log_f1: Array, log_f0: Array) -> Array:
    """``log_f1 - log_f0`` with the conventions of :func:`log_f_ratio`."""
    finite0 = jnp.isfinite(log_f0)
    # double where: no (-inf) - (-inf) = NaN in the value or the gradient
    ratio = jnp.where(finite0, log_f1 - jnp.where(finite0, log_f0, 0.0), 0.0)
    return jnp.where(jnp.isnan(ratio), -jnp.inf, ratio)


def log_f_ratio(integrand: Any, sample: EventSample, params: Params,
                event_chunk: int | None = None) -> Array:
    """``log f(x_i | params) - log f(x_i | theta0)`` at the fixed events, ``[N]``.

    ``-inf`` where the new ``f`` vanishes; ``0`` where the old one did (those events carry
    weight zero and stay at zero: reweighting cannot create support). ``event_chunk``
    events at a time (:func:`jaxnis.studies.core.vmap_chunked`).
    """
    integrand = as_integrand(integrand)

    def one(event, log_f0):
        return _ratio(integrand.log_f(event, params), log_f0)

    return vmap_chunked(one, (sample.events, sample.log_f), event_chunk)


def reweight(integrand: Any, sample: EventSample, params: Params,
             event_chunk: int | None = None) -> Array:
    """Cross-section weights of the same events under ``params``, ``[N]`` (differentiable
    in ``params``)."""
    return sample.weight * jnp.exp(log_f_ratio(integrand, sample, params, event_chunk))


def sample_cross_section(sample: EventSample, weight: ArrayLike | None = None) -> Estimate:
    """``sum(weight)`` and its stratified standard error (``weight`` defaults to the
    sample's own; pass :func:`reweight` output for another ``theta``)."""
    weight = sample.weight if weight is None else jnp.asarray(weight)
    raw = weight * jnp.take(sample.counts, sample.channel).astype(weight.dtype)
    est = estimators.estimate_channels(raw, sample.channel, sample.n_channels)
    return Estimate(est.total.value, est.total.error)


def sample_mean(sample: EventSample, values: ArrayLike,
                weight: ArrayLike | None = None) -> Estimate:
    """Weighted mean ``sum(weight v) / sum(weight)`` over the sample, ``values [N, ...]``,
    with its delta-method error (the standard error of the influence
    ``weight_i (v_i - mean)`` over ``sum(weight)``)."""
    weight = sample.weight if weight is None else jnp.asarray(weight)
    values = jnp.asarray(values)
    total = jnp.sum(weight)
    wv = weight.reshape((-1,) + (1,) * (values.ndim - 1))
    mean = jnp.sum(wv * values, axis=0) / total
    influence = wv * (values - mean)
    raw = influence * jnp.take(sample.counts, sample.channel).astype(weight.dtype).reshape(
        wv.shape)
    flat = raw.reshape(raw.shape[0], -1)

    def err(col):
        return estimators.estimate_channels(col, sample.channel, sample.n_channels).total.error

    error = jax.vmap(err, in_axes=1)(flat).reshape(values.shape[1:]) / jnp.abs(total)
    return Estimate(mean, error)


def effective_sample_size(weight: ArrayLike) -> Array:
    """Kish's ``(sum w)^2 / sum w^2`` of (re)weighted events."""
    return estimators.effective_sample_size(weight)


def reweight_scan(integrand: Any, sample: EventSample, params: Params,
                  grid: Mapping[str, ArrayLike], *, chunk: int | None = None,
                  event_chunk: int | None = SCAN_EVENT_CHUNK) -> Estimate:
    """Cross sections ``[G]`` at every point of ``grid`` by reweighting the fixed events.

    Every event is evaluated at the whole grid (``vmap`` over the grid inside the ``vmap``
    over events) with only the scanned parameters batched, so the parts of ``f`` that do not
    depend on them (kinematics, PDFs, cuts) are computed once per event: per grid point
    only the parameter-dependent part of ``f`` (for a Z' mass, its propagator and the
    amplitude sums it enters) is recomputed. Events go ``event_chunk`` at a time
    (``lax.map``) so the ``events x grid`` intermediates stay small.

    Args:
        integrand: process or study integrand with events.
        sample: events from :func:`generate_events`.
        params: base parameters; ``grid`` overrides some of them.
        grid: ``{name: [G]}`` parameter values (see :func:`jaxnis.studies.scans.product_grid`).
        chunk: grid points per ``lax.map`` step (``None``: the whole grid at once).
        event_chunk: static events per block (``None``: all events in one ``vmap``).
    """
    integrand = as_integrand(integrand)
    values = grid_values(params, grid)

    def block(vals):
        def one(event, log_f0):
            def at(v):
                return _ratio(integrand.log_f(event, {**params, **v}), log_f0)

            return jax.vmap(at)(vals)

        ratio = vmap_chunked(one, (sample.events, sample.log_f), event_chunk)  # [N, g]
        weight = sample.weight[:, None] * jnp.exp(ratio)
        return jax.vmap(lambda w: sample_cross_section(sample, w), in_axes=1)(weight)

    return over_grid_blocks(block, values, chunk)


__all__ = [
    "EventSample",
    "effective_sample_size",
    "generate_events",
    "log_f_ratio",
    "reweight",
    "reweight_scan",
    "sample_cross_section",
    "sample_mean",
]
