"""Multi-channel importance sampling: channel weights, allocation and dropping.

A multi-channel integrand splits ``I = int f(x) dx`` with channel weights
``alpha_c(x) >= 0``, ``sum_c alpha_c(x) = 1`` (Kleiss & Pittau, hep-ph/9405257)::

    I = sum_c int alpha_c(x) f(x) dx
      = sum_c E_{r ~ q_c}[ alpha_c(G_c(r)) f(G_c(r)) J_c(r) / q_c(r) ]

where ``G_c`` is channel c's phase-space map with Jacobian ``J_c`` and ``q_c`` its sampling
density on the unit hypercube. The prior ``alpha_c`` comes from single-diagram enhancement
(``|M_c|^2 / sum_j |M_j|^2``); a small network learns a correction
``alpha_c = prior_c exp(net_c(x)) / sum_j prior_j exp(net_j(x))`` whose last layer starts at
zero, so training starts exactly at the prior (MadNIS, arXiv:2212.06172).

Every function here has fixed shapes: the number of channels ``C`` and the batch size are
static; which channels are active and how many samples each gets are traced arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnis.types import Array, ArrayLike, Params, PRNGKey


class ChannelEval(NamedTuple):
    """What a multi-channel integrand returns for one event sampled in channel ``c``.

    Attributes:
        log_fj: ``[]`` ``log |f(x) J_c(r)|``; ``-inf`` where cut or outside phase space.
        sign: ``[]`` sign of ``f(x)`` (``+1`` or ``-1``; ``+1`` where ``f = 0``).
        log_prior: ``[C]`` log of the prior channel weights at ``x``, normalised so that
            ``logsumexp(log_prior) = 0`` (``-inf`` entries allowed).
        features: ``[k]`` inputs of the channel-weight network (e.g. momenta / sqrt(s)).
    """

    log_fj: Array
    sign: Array
    log_prior: Array
    features: Array


class MultiChannelIntegrand(NamedTuple):
    """A multi-channel integrand on the unit hypercube.

    Attributes:
        dim: number of random numbers per event (the same in every channel).
        n_channels: number of channels ``C``.
        n_features: length of :attr:`ChannelEval.features`.
        evaluate: ``(channel [] int, r [dim], params) -> ChannelEval`` for one event; the
            channel index is traced (use ``jax.lax.switch`` over the channel maps).
        names: optional channel names for reports.
    """

    dim: int
    n_channels: int
    n_features: int
    evaluate: Callable[[Array, Array, Params], ChannelEval]
    names: tuple[str, ...] = ()


def normalise_log_weights(log_w: ArrayLike, active: ArrayLike | None = None) -> Array:
    """Normalise log channel weights ``[..., C]`` to sum to one over the active channels.

    Inactive channels get ``-inf``. If every active weight is zero (all ``-inf``) the result
    is uniform over the active channels, so an event never ends up with no channel at all.
    """
    log_w = jnp.asarray(log_w)
    if active is not None:
        log_w = jnp.where(active, log_w, -jnp.inf)
    uniform = jnp.zeros_like(log_w) if active is None else jnp.where(active, 0.0, -jnp.inf)
    any_finite = jnp.any(jnp.isfinite(log_w), axis=-1, keepdims=True)
    # Double where: with every entry -inf, logsumexp gives -inf (and a nan gradient), so the
    # all -inf rows are replaced by the uniform weights *before* the logsumexp.
    safe = jnp.where(any_finite, log_w, uniform)
    return safe - jax.nn.logsumexp(safe, axis=-1, keepdims=True)


class _ChannelNet(nn.Module):
    """MLP ``features [k] -> logits [C]`` with a zero-initialised last layer."""

    n_channels: int
    hidden: Sequence[int]
    activation: Callable[[Array], Array]

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for width in self.hidden:
            x = self.activation(nn.Dense(width)(x))
        return nn.Dense(self.n_channels, kernel_init=nn.initializers.zeros)(x)


class ChannelWeights(NamedTuple):
    """A learned channel-weight correction on top of a prior.

    Attributes:
        init: ``(key) -> params``.
        log_alpha: ``(params, features [k], log_prior [C], active [C] | None) -> [C]`` the
            normalised log channel weights ``log(prior_c exp(net_c) / sum_j ...)``.
    """

    init: Callable[[PRNGKey], Params]
    log_alpha: Callable[..., Array]


def make_channel_weights(
    n_channels: int,
    n_features: int,
    *,
    hidden: Sequence[int] = (32, 32),
    activation: Callable[[Array], Array] = nn.gelu,
) -> ChannelWeights:
    """Build the channel-weight network (starts exactly at the prior).

    Args:
        n_channels: number of channels ``C >= 1``.
        n_features: length of the feature vector ``k >= 1``.
        hidden: widths of the hidden layers.
        activation: activation between hidden layers.

    Returns:
        :class:`ChannelWeights` whose ``log_alpha`` equals the normalised prior at ``init``.

    Example:
        >>> cw = make_channel_weights(3, 8)
        >>> params = cw.init(jax.random.key(0))
        >>> log_a = cw.log_alpha(params, jnp.zeros(8), jnp.log(jnp.array([0.2, 0.3, 0.5])))
    """
    if n_channels < 1:
        raise ValueError(f"n_channels must be >= 1, got {n_channels}")
    if n_features < 1:
        raise ValueError(f"n_features must be >= 1, got {n_features}")
    if any(w < 1 for w in hidden):
        raise ValueError(f"hidden widths must be >= 1, got {tuple(hidden)}")
    net = _ChannelNet(n_channels, tuple(hidden), activation)

    def init(key: PRNGKey) -> Params:
        return net.init(key, jnp.zeros((n_features,)))["params"]

    def log_alpha(params: Params, features: ArrayLike, log_prior: ArrayLike,
                  active: ArrayLike | None = None) -> Array:
        features = jnp.asarray(features)
        if features.shape != (n_features,):
            raise ValueError(f"features must have shape ({n_features},), got {features.shape}")
        correction = net.apply({"params": params}, features).astype(features.dtype)
        return normalise_log_weights(jnp.asarray(log_prior) + correction, active)

    return ChannelWeights(init, log_alpha)


def allocate(
    sigma: ArrayLike, n_total: int, *, min_per_channel: int = 2, active: ArrayLike | None = None
) -> Array:
    """Stratified allocation of ``n_total`` samples to channels, ``n_c ~ sigma_c``.

    For a fixed total, ``Var(sum_c I_c) = sum_c sigma_c^2 / n_c`` is smallest for
    ``n_c ~ sigma_c``. Every active channel gets at least ``min_per_channel`` samples (so its
    variance stays estimable); inactive channels get none. Rounding uses the largest
    remainders, so the counts always add up to exactly ``n_total``.

    Args:
        sigma: ``[C]`` per-channel standard deviations of the weight (any positive scale;
            non-finite or non-positive values count as zero).
        n_total: static total number of samples.
        min_per_channel: static floor for active channels.
        active: ``[C]`` bool mask, default all active.

    Returns:
        ``[C]`` int32 counts summing to ``n_total``.
    """
    sigma = jnp.asarray(sigma)
    n_channels = sigma.shape[-1]
    if active is None:
        active = jnp.ones(n_channels, dtype=bool)
    active = jnp.asarray(active)
    if min_per_channel * n_channels > n_total:
        raise ValueError(
            f"n_total={n_total} cannot give min_per_channel={min_per_channel} to "
            f"{n_channels} channels"
        )
    sigma = jnp.where(active & jnp.isfinite(sigma) & (sigma > 0), sigma, 0.0)
    n_active = jnp.maximum(jnp.sum(active), 1)
    # If no channel has a positive sigma yet, share equally among the active ones.
    share = jnp.where(jnp.sum(sigma) > 0, sigma, active.astype(sigma.dtype))
    floor = jnp.where(active, min_per_channel, 0)
    spare = n_total - min_per_channel * n_active
    ideal = spare * share / jnp.sum(share)
    counts = floor + jnp.floor(ideal).astype(jnp.int32)
    remainder = jnp.where(active, ideal - jnp.floor(ideal), -1.0)
    missing = n_total - jnp.sum(counts)
    # Hand the missing units to the channels with the largest remainders.
    rank = jnp.argsort(jnp.argsort(-remainder))
    return (counts + (rank < missing)).astype(jnp.int32)


def channel_ids(counts: ArrayLike, n_total: int) -> Array:
    """Channel index of each of ``n_total`` sample slots for the given ``counts`` ``[C]``.

    Slots ``0 .. counts[0]-1`` belong to channel 0, the next ``counts[1]`` to channel 1, and
    so on: a fixed-shape replacement for concatenating variable-length blocks.
    """
    edges = jnp.cumsum(jnp.asarray(counts))
    return jnp.searchsorted(edges, jnp.arange(n_total), side="right").astype(jnp.int32)


def channels_to_drop(
    contributions: ArrayLike, errors: ArrayLike, active: ArrayLike, *, threshold: float
) -> Array:
    """Active mask after dropping channels whose share of the integral is negligible.

    A channel is dropped when ``|I_c| + 3 err_c < threshold * sum_c |I_c|``, i.e. even an
    upward fluctuation of three standard errors leaves it below ``threshold``. The channel
    with the largest contribution is never dropped, and nothing is dropped while the total is
    zero (no information yet).

    Args:
        contributions: ``[C]`` per-channel integral estimates.
        errors: ``[C]`` their standard errors.
        active: ``[C]`` current mask.
        threshold: static relative threshold, e.g. ``1e-3``.

    Returns:
        ``[C]`` bool: the new active mask.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    contributions = jnp.abs(jnp.asarray(contributions))
    errors = jnp.asarray(errors)
    active = jnp.asarray(active)
    total = jnp.sum(jnp.where(active, contributions, 0.0))
    keep = (contributions + 3.0 * errors) >= threshold * total
    best = jnp.argmax(jnp.where(active, contributions, -jnp.inf))
    return active & (keep | (jnp.arange(active.shape[0]) == best))


__all__ = [
    "ChannelEval",
    "ChannelWeights",
    "MultiChannelIntegrand",
    "allocate",
    "channel_ids",
    "channels_to_drop",
    "make_channel_weights",
    "normalise_log_weights",
]
