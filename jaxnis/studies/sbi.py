r"""Joint score and joint likelihood ratio per event, for simulation-based inference.

For parton-level events ``z`` (here the observables ``x`` are functions of ``z``), the
normalised density of an event is ``p(z | theta) = f(z | theta) / sigma(theta)`` with
``f = d sigma / dz`` the differential cross section (:meth:`Integrand.log_f`: matrix element,
PDFs, cuts; no phase-space Jacobian). Brehmer, Cranmer, Louppe and Pavez
(arXiv:1805.00013, 1805.00020; MadMiner, arXiv:1907.10621) train estimators of ``log r(x)``
and ``t(x)`` on the *joint* quantities

.. math::

    t(x, z | \theta) = \nabla_\theta \log f(z | \theta) - \nabla_\theta \log\sigma(\theta),
    \qquad
    r(x, z | \theta_0, \theta_1) = \frac{f(z | \theta_0)}{f(z | \theta_1)}
        \frac{\sigma(\theta_1)}{\sigma(\theta_0)},

which are exact per event because the parton-level density is known. Properties used as
checks: ``E_{theta}[t] = 0`` and ``E_{theta_1}[r(theta_0, theta_1)] = 1`` over events drawn
at ``theta`` (``theta_1``).

``sigma`` and ``grad sigma`` come either from an independent estimate (a
:class:`~jaxnis.studies.core.GradEstimate` of
:func:`~jaxnis.studies.core.cross_section_and_grad`; then the two properties are genuine
checks), or from the sample itself (``norm=None``: ``sigma = sum weight`` and
``grad sigma = sum weight grad log f`` at fixed events, which makes the weighted mean score
exactly zero by construction).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxnis.studies.core import as_integrand
from jaxnis.studies.reweighting import EventSample
from jaxnis.types import Array, Params


class TrainingSet(NamedTuple):
    """Events with their joint score and joint likelihood ratio (leading axis ``N``).

    Attributes:
        events: the process's ``Event``, leaves ``[N, ...]``.
        weight: ``[N]`` cross-section weights at ``theta`` (zero: cut; drop those events, or
            unweight with :func:`jaxnis.estimators.unweight`).
        log_p: ``[N]`` ``log p(z | theta)`` (``-inf`` where the weight is zero).
        score: ``{name: [N]}`` joint score ``t(x, z | theta)`` (zero where the weight is zero).
        log_r: ``[N]`` ``log r(x, z | theta_alt, theta) = log p(z | theta_alt) - log p(z | theta)``
            (zero where the weight is zero), or ``None`` without ``params_alt``.
        log_sigma: ``[]`` the ``log sigma(theta)`` used.
        grad_log_sigma: ``{name: []}`` the ``grad log sigma(theta)`` used.
    """

    events: Any
    weight: Array
    log_p: Array
    score: Any
    log_r: Array | None
    log_sigma: Array
    grad_log_sigma: Any


def grad_log_f(integrand: Any, events: Any, params: Params, wrt: Sequence[str]) -> Any:
    """``grad_theta log f(z_i | theta)`` at fixed events, ``{name: [N]}`` (forward mode)."""
    integrand = as_integrand(integrand)
    names = tuple(wrt)
    sub = {k: params[k] for k in names}

    def one(event):
        return jax.jacfwd(lambda s: integrand.log_f(event, {**params, **s}))(sub)

    return jax.vmap(one)(events)


def augment(integrand: Any, sample: EventSample, params: Params, wrt: Sequence[str] = (), *,
            norm: Any = None, params_alt: Params | None = None,
            norm_alt: Any = None) -> TrainingSet:
    """Joint score at ``params`` and joint log ratio to ``params_alt`` for ``sample``.

    Args:
        integrand: the process (or study integrand) that generated ``sample``.
        sample: events drawn at ``params`` (:func:`jaxnis.studies.reweighting.generate_events`).
        params: the generating ``theta``.
        wrt: static parameter names of the score.
        norm: ``(sigma, grad)`` at ``params`` from an independent estimate: anything with
            ``value`` and ``grad`` attributes (a ``GradEstimate``), or ``None`` for the
            sample's own (see the module docstring).
        params_alt: ``theta_alt`` of the ratio ``p(z | theta_alt) / p(z | theta)``, or
            ``None``.
        norm_alt: ``sigma(theta_alt)``: an object with ``value`` (an ``Estimate``), or
            ``None`` to estimate it by reweighting the sample.

    Returns:
        :class:`TrainingSet`.
    """
    integrand = as_integrand(integrand)
    names = tuple(wrt)
    weight = sample.weight
    alive = jnp.isfinite(sample.log_f) & (weight > 0)
    log_f = jnp.where(alive, sample.log_f, 0.0)
    g_log_f = grad_log_f(integrand, sample.events, params, names) if names else {}
    g_log_f = {k: jnp.where(alive, v, 0.0) for k, v in g_log_f.items()}
    if norm is None:
        sigma = jnp.sum(weight)
        grad_sigma = {k: jnp.sum(weight * v) for k, v in g_log_f.items()}
    else:
        sigma = jnp.asarray(norm.value)
        grad_sigma = {k: jnp.asarray(norm.grad[k]) for k in names}
    log_sigma = jnp.log(sigma)
    grad_log_sigma = {k: v / sigma for k, v in grad_sigma.items()}
    score = {k: jnp.where(alive, g_log_f[k] - grad_log_sigma[k], 0.0) for k in names}
    log_p = jnp.where(alive, log_f - log_sigma, -jnp.inf)

    log_r = None
    if params_alt is not None:
        log_f_alt = jax.vmap(integrand.log_f, (0, None))(sample.events, params_alt)
        if norm_alt is None:
            ratio = jnp.exp(jnp.where(alive, log_f_alt - log_f, -jnp.inf))
            log_sigma_alt = jnp.log(jnp.sum(weight * ratio))
        else:
            log_sigma_alt = jnp.log(jnp.asarray(norm_alt.value))
        # double where: events without weight get 0, never -inf - (-inf)
        diff = jnp.where(alive, log_f_alt - log_f, 0.0) - log_sigma_alt + log_sigma
        log_r = jnp.where(alive, diff, 0.0)
    return TrainingSet(sample.events, weight, log_p, score, log_r, log_sigma, grad_log_sigma)


__all__ = ["TrainingSet", "augment", "grad_log_f"]
