"""Training kernels for neural importance sampling (pure ``init`` / ``step``).

One training step, for a batch of ``N`` sample slots split over ``C`` channels::

    c_i            channel of slot i (stratified allocation, fixed shape)
    u_i ~ U[0,1]^d
    r_i, log q_i   = sampler(u_i | c_i)              (uniform during an adaptive warm-up)
    ChannelEval_i  = integrand.evaluate(c_i, r_i, theta)   -> log|f J|, sign, prior, features
    log alpha_i    = channel weights (prior x learned correction) at x_i, column c_i
    loss           = L(log alpha + log|f J|, log q_current(r_i | c_i); log q_i)
    params         <- optax update;  then ``buffered_steps`` more updates on the buffer

The sampler is a bijector of the unit hypercube with a uniform base density (a
:mod:`jaxnis.flows` flow, conditioned on a one-hot channel context when ``C > 1``). Events
are held fixed and the gradient reaches the flow through ``log q_current`` (an inverse pass)
and the channel-weight network through ``log alpha`` (score-function scheme of i-flow,
arXiv:2001.05486, and MadNIS, arXiv:2212.06172). Events drawn earlier are reused from a
fixed-size ring buffer with the importance ratio ``q_current / q_sampled`` (MadNIS's
buffered training, arXiv:2311.01548).

Everything here is a pure function with fixed shapes: :func:`make_trainer` validates the
static configuration and returns ``init`` and ``step``; ``step`` jits once and never
retraces for new keys, learning rates inside optax schedules, or physics parameters.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnis import channels as ch
from jaxnis import estimators, losses, vegas
from jaxnis.flows.flow import batch_maps
from jaxnis.numerics import times_exp
from jaxnis.types import Array, Params, PRNGKey, PyTree

_LOSSES = ("variance", "kl", "reverse_kl")

#: Fraction of the KL phase over which a tempered target's exponent rises to 1.
TEMPER_SPAN = 0.5


def check_kl_temper(kl_temper: float) -> None:
    """Raise ``ValueError`` unless the KL phase's starting exponent is in ``(0, 1]``."""
    if not 0.0 < kl_temper <= 1.0:
        raise ValueError(f"kl_temper must be in (0, 1], got {kl_temper}")


def kl_exponent(step: Array, kl_steps: int, kl_temper: float) -> Array:
    """The exponent ``beta`` of the KL phase's target ``|f|^beta`` at ``step``: ``kl_temper``
    at step 0, rising geometrically to 1 at ``TEMPER_SPAN * kl_steps`` and 1 after."""
    if kl_temper == 1.0 or not kl_steps:
        return jnp.ones((), jnp.float32)
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / (TEMPER_SPAN * kl_steps), 0.0, 1.0)
    return jnp.float32(kl_temper) ** (1.0 - frac)


class Buffer(NamedTuple):
    """Ring buffer of evaluated events (capacity ``B``; all fields have leading axis ``B``).

    Attributes:
        r: ``[B, d]`` points on the unit hypercube (channel coordinates).
        channel: ``[B]`` int32 channel of each event.
        log_fj: ``[B]`` ``log |f J|`` after sanitising (``-inf`` = zero).
        sign: ``[B]`` sign of ``f``.
        log_prior: ``[B, C]`` log prior channel weights at the event.
        features: ``[B, k]`` channel-weight network inputs.
        log_q: ``[B]`` log density the event was drawn from.
        size: ``[]`` int32 number of filled slots.
        head: ``[]`` int32 next slot to write.
    """

    r: Array
    channel: Array
    log_fj: Array
    sign: Array
    log_prior: Array
    features: Array
    log_q: Array
    size: Array
    head: Array


class TrainState(NamedTuple):
    """State of a training run.

    Attributes:
        params: ``{"flow": ..., "channel_weights": ...}`` trainable pytree.
        opt_state: optax state of ``params``.
        buffer: :class:`Buffer` (capacity 0 when buffering is off).
        counts: ``[C]`` int32 samples per channel in the next batch (sums to ``N``).
        active: ``[C]`` bool channels still sampled (dropping switches them off).
        sigma: ``[C]`` running estimate of each channel's weight standard deviation.
        use_flow: ``[]`` bool: sample from the flow (``False`` during a uniform warm-up).
        step: ``[]`` int32 steps taken.
        log_scale: ``[]`` the unit of the losses, ``log`` of a running (exponential, 0.9
            per step) average of the batches' mean weight ``<|alpha f| / q>``; NaN before
            the first step. See ``objective`` in :func:`make_trainer`.
        average: the parameters that frozen steps and ``sample`` draw from: an exponential
            moving average of ``params`` over the training steps (``average_decay`` of
            :func:`make_trainer`; debiased, so it averages only parameters that were
            reached), or ``params`` itself when averaging is off.
    """

    params: Params
    opt_state: optax.OptState
    buffer: Buffer
    counts: Array
    active: Array
    sigma: Array
    use_flow: Array
    step: Array
    log_scale: Array
    average: Params


class TrainInfo(NamedTuple):
    """Diagnostics of one step (all scalars unless noted).

    Attributes:
        loss: loss on the fresh batch (before the update), in the integrand's units (the
            variance in those of ``f^2``: ``inf`` or 0 where the dtype cannot hold that;
            the update itself uses the loss in the units of ``TrainState.log_scale``); in a
            tempered KL phase the divergence from ``|f|^beta`` (``kl_temper``).
        value: integral estimate from the fresh batch.
        error: its standard error.
        channel_value: ``[C]`` per-channel contributions.
        channel_error: ``[C]`` their errors.
        n_nonfinite: int32 integrand values that were NaN or +inf (treated as zero).
        use_flow: bool, whether the batch came from the flow.
        uniform_loss: the loss of uniform sampling on this batch, when it was uniform.
        weights: ``[N]`` weights of the fresh batch in the stratified convention: ``value``
            is the sum over strata of their mean within each stratum (see ``stratum``); a
            frozen step (``update=False``) is a refine iteration.
        channel: ``[N]`` int32 channel of each event.
        stratum: ``[N]`` int32 stratum of each event: its channel, or with latent strata
            its hypercube of the latent cube (then ``weights`` are ``f / q`` over the number
            of hypercubes).
        n_skipped: int32 optimizer updates of this step (of ``1 + buffered_steps``) that
            were skipped because the loss or a gradient was not finite (the parameters and
            the optimizer state stay as they were).
    """

    loss: Array
    value: Array
    error: Array
    channel_value: Array
    channel_error: Array
    n_nonfinite: Array
    use_flow: Array
    uniform_loss: Array
    weights: Array
    channel: Array
    stratum: Array
    n_skipped: Array


class Sampler(NamedTuple):
    """A bijector of ``[0,1]^d`` with a uniform base density (duck type of a jaxnis flow).

    ``forward_and_log_det(params, u, context) -> (r, logdet)`` for one event; the sampling
    density is ``log q(r) = -logdet``. ``inverse_and_log_det(params, r, context)`` returns
    ``(u, log q(r))``. ``context`` is ``None`` or a vector.

    ``forward_batch`` and ``inverse_batch`` (optional) are the same maps on a batch
    ``[n, d]`` with a context ``[n, C]`` or ``None`` (a flow's
    :meth:`~jaxnis.flows.Flow.forward_batch`); when given, :func:`make_trainer` calls them
    instead of ``jax.vmap`` of the per-event functions (:func:`jaxnis.flows.batch_maps`).
    """

    init: Callable[[PRNGKey], Params]
    forward_and_log_det: Callable[..., tuple[Array, Array]]
    inverse_and_log_det: Callable[..., tuple[Array, Array]]
    forward_batch: Callable[..., tuple[Array, Array]] | None = None
    inverse_batch: Callable[..., tuple[Array, Array]] | None = None


class Trainer(NamedTuple):
    """``init(key, flow_params=None) -> state`` and
    ``step(key, state, theta, update=True) -> (state, info)``.

    ``update`` may be a traced boolean: with ``False`` the step draws and evaluates a fresh
    batch and reports it (``info.weights``) but leaves the state unchanged, so survey and
    refine iterations run through one compiled program. Also exposes
    ``sample(key, state, theta)`` (a fresh batch, its weights ``alpha f / q`` and the
    non-finite count, no update) and ``estimate(w, channel)``: the batch's
    :class:`jaxnis.estimators.ChannelEstimate`, its weights in the stratified convention of
    :attr:`TrainInfo.weights` and each event's stratum, in ``[0, n_strata)``; and
    ``allocate(sigma, active)``: the events per channel of a batch of this trainer's size
    (so a trainer of another batch size can sample from a state trained by this one:
    ``state._replace(counts=other.allocate(state.sigma, state.active))``).
    """

    init: Callable[..., TrainState]
    step: Callable[[PRNGKey, TrainState, PyTree], tuple[TrainState, TrainInfo]]
    sample: Callable[[PRNGKey, TrainState, PyTree], Any]
    integrand: ch.MultiChannelIntegrand
    estimate: Callable[[Array, Array], tuple[estimators.ChannelEstimate, Array, Array]]
    n_strata: int
    allocate: Callable[[Array, Array], Array]


def _with_theta(f: Callable[..., Array]) -> Callable[[Array, PyTree], Array]:
    """``f`` as ``f(x, theta)``: a function of one argument ``f(x)`` gets ``theta`` ignored;
    one that takes neither form is refused here rather than deep inside a trace."""
    try:
        signature = inspect.signature(f)
    except (TypeError, ValueError):  # no signature to read (some builtins): call as given
        return f
    for args in ((None, None), (None,)):
        try:
            signature.bind(*args)
        except TypeError:
            continue
        return f if len(args) == 2 else (lambda x, theta: f(x))
    raise TypeError(f"the integrand must be callable as f(x, theta) or f(x); "
                    f"{getattr(f, '__name__', f)!r} has the signature {signature}")


def single_channel(f: Callable[..., Array], dim: int) -> ch.MultiChannelIntegrand:
    """Wrap ``f(x [dim], theta) -> value`` on the unit hypercube as a one-channel integrand.

    ``f`` takes one point and returns one number; ``f(x)`` without ``theta`` also works.
    """
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    f2 = _with_theta(f)

    def evaluate(channel, r, theta):
        value = jnp.asarray(f2(r, theta))
        if jnp.iscomplexobj(value):
            raise ValueError(f"the integrand must be real; it returned {value.dtype} (integrate "
                             f"the real and imaginary parts separately)")
        if value.shape != ():
            raise ValueError(f"the integrand must return one number per point x of shape "
                             f"({dim},); it returned shape {value.shape}")
        log_abs = jnp.log(jnp.abs(value))  # NaN stays NaN and is counted by the trainer
        sign = jnp.where(value < 0, -1.0, 1.0).astype(log_abs.dtype)
        zero = jnp.zeros((1,), dtype=log_abs.dtype)
        return ch.ChannelEval(log_abs, sign, zero, zero)

    return ch.MultiChannelIntegrand(dim=dim, n_channels=1, n_features=1, evaluate=evaluate)


def check_integrand(integrand: ch.MultiChannelIntegrand) -> None:
    """``ValueError`` unless ``integrand`` has ``dim``, ``n_channels`` and ``n_features``
    of at least 1 and a callable ``evaluate``."""
    sizes = (integrand.dim, integrand.n_channels, integrand.n_features)
    if not all(isinstance(k, int | np.integer) and k >= 1 for k in sizes):
        raise ValueError(f"the integrand needs integers dim, n_channels and n_features >= 1, "
                         f"got {sizes[0]!r}, {sizes[1]!r} and {sizes[2]!r}")
    if not callable(integrand.evaluate):
        raise ValueError(f"the integrand's evaluate must be callable, got "
                         f"{integrand.evaluate!r}")


def _checked(ev: ch.ChannelEval, integrand: ch.MultiChannelIntegrand) -> ch.ChannelEval:
    """``ev`` (a batch of evaluations) if each event's fields have the shapes
    :class:`jaxnis.channels.ChannelEval` states, else a ``ValueError`` naming the field."""
    expected = {"log_fj": (), "sign": (), "log_prior": (integrand.n_channels,),
                "features": (integrand.n_features,)}
    for name, shape in expected.items():
        field = getattr(ev, name)
        if jnp.iscomplexobj(field):
            raise ValueError(f"the integrand's {name} must be real, got "
                             f"{jnp.result_type(field)}")
        got = jnp.shape(field)[1:]
        if got != shape:
            raise ValueError(f"the integrand's {name} has shape {got} per event; expected "
                             f"{shape} (n_channels={integrand.n_channels}, "
                             f"n_features={integrand.n_features})")
    return ev


class _Batch(NamedTuple):
    r: Array
    channel: Array
    log_fj: Array
    sign: Array
    log_prior: Array
    features: Array
    log_q: Array


def make_trainer(
    integrand: ch.MultiChannelIntegrand,
    sampler: Sampler,
    optimizer: optax.GradientTransformation,
    *,
    batch_size: int,
    loss: str = "variance",
    buffer_capacity: int = 0,
    buffered_steps: int = 0,
    channel_weights: ch.ChannelWeights | None = None,
    stratify: bool = True,
    min_per_channel: int = 16,
    sigma_decay: float = 0.9,
    drop_threshold: float = 0.0,
    drop_after: int = 20,
    uniform_warmup: bool = False,
    kl_steps: int = 0,
    kl_temper: float = 1.0,
    latent_strata: tuple[int, ...] | None = None,
    channel_strata: bool = False,
    variance_baseline: str | None = "support",
    average_decay: float = 0.0,
) -> Trainer:
    """Build the pure training kernel.

    Args:
        integrand: a :class:`jaxnis.channels.MultiChannelIntegrand` (see
            :func:`single_channel` for a plain function).
        sampler: bijector of the unit hypercube with context size ``C`` when ``C > 1``
            (one-hot channel) and no context when ``C = 1``.
        optimizer: any optax transformation (schedules included).
        batch_size: static ``N``, integrand evaluations per step.
        loss: ``"variance"`` (stratified over channels), ``"kl"`` or ``"reverse_kl"``
            (on the channel-weighted integrand pooled over channels).
        buffer_capacity: events kept for reuse, a multiple of ``batch_size`` (0: off).
        buffered_steps: extra updates per step on ``batch_size`` events drawn from the
            buffer with importance ratios.
        channel_weights: learned correction to the prior channel weights, or ``None`` to
            use the prior as it is.
        stratify: allocate samples to channels in proportion to their weight spread.
        min_per_channel: floor of the allocation for an active channel.
        sigma_decay: exponential-moving-average factor of the per-channel spread.
        drop_threshold: drop channels contributing less than this fraction (0: never).
        drop_after: steps before dropping is considered, and between checks.
        uniform_warmup: start by sampling uniformly and switch to the flow once its loss,
            estimated on the uniform batch, beats that of uniform sampling (ZuNIS).
        kl_steps: train with the forward KL divergence for the first ``kl_steps`` steps, then
            with ``loss``. KL weighs every event by ``w`` where the variance weighs it by
            ``w^2``: it is robust while the weights are heavy-tailed (a sampler far from the
            target), and the variance then sharpens the sampler where it matters for the
            error. The step count is traced: no recompilation.
        kl_temper: the KL phase starts from the tempered target ``|f|^beta``,
            ``beta = kl_temper`` (in ``(0, 1]``; 1: no tempering), and raises ``beta``
            geometrically to 1 over its first half (:func:`kl_exponent`). Tempering widens
            every peak (a Gaussian's width grows by ``beta^-1/2``) and flattens the ratio
            between them, so the early, uniform-like samples see all of them and the flow
            covers them all before they narrow; untempered, the first peak the batches hit
            can take all the density, and in many dimensions the flow never samples the
            others again (a 16-d camel integrated to half its value, the error not showing
            it). Self-normalised, the KL loss does not depend on the scale of ``f^beta``.
        variance_baseline: ``"support"`` (default), ``"all"`` or ``None``: the variance
            loss's gradient subtracts a baseline from ``w^2``, each channel's squared mean
            weight over the batch's other events (``losses.variance_loss``'s ``baseline``), so
            that its noise vanishes as the weights approach their mean. ``"all"`` keeps the
            expected gradient exactly; ``"support"`` applies it only at events with
            ``f != 0``, where ``"all"`` adds noise (its expected gradient is then that of
            ``Var + c P_q(f != 0)``, whose minimiser is still ``q ~ |f|``); ``None`` is the
            plain gradient ``-w^2 d log q``.
            Estimates never use the loss and are unbiased with any of them. Measured over
            seeds 0-4 at the ``benchmarks/nis.py`` budgets, the Integrator's defaults
            otherwise (median relative error and unweighting efficiency, ``None`` ->
            ``"support"``): Drell-Yan 3.4e-4 -> 2.0e-4, 0.64 -> 0.70; quarter annulus
            4.0e-4 -> 2.8e-4, 0.37 -> 0.67; the other integrands of the suite within their
            spread over seeds. See ``docs/training.md`` ("Which loss").
        latent_strata: cells per axis of the latent cube (single channel only): in frozen
            steps (``update=False``, the refine iterations) and in ``sample``, the uniform
            numbers fed to the flow are stratified over these ``prod latent_strata``
            hypercubes, as evenly as the batch allows (at least 2 each), and the estimate is
            the stratified one, ``I = sum_h (1/M) mean_h(f/q)`` with
            ``err^2 = sum_h s_h^2 / (M^2 n_h)``. The flow maps each hypercube to a region of
            equal probability, so this is stratified sampling in ``q``: unbiased, and the
            error drops wherever the weight varies smoothly across the latent cube (VEGAS+
            does the same in its grid's coordinates). Training steps draw plain batches.
            ``None``: plain sampling throughout.
        channel_strata: the same for several channels, inside each channel: its ``n_c``
            refine events are stratified over ``m_c^d`` hypercubes of the latent cube with
            ``m_c = floor((n_c / 2)^(1/d))`` (at least two events each), and the channel's
            contribution is ``sum_h (1/M_c) mean_h(w)``. The counts follow the allocation,
            so the hypercubes are laid out at run time within a fixed bound of
            ``N // 2 + C`` strata.
        average_decay: frozen steps and ``sample`` draw from an exponential moving average
            of the parameters over the training steps (``TrainState.average``), decaying by
            this factor per step (0: the current parameters). Training steps still draw from
            the current parameters. The last parameters of a stochastic-gradient run scatter
            about the optimum by the noise of the last updates; their average over a window
            of steps scatters less.

    Returns:
        :class:`Trainer`.
    """
    check_integrand(integrand)
    losses.check_baseline(variance_baseline)
    n_ch, dim, n = integrand.n_channels, integrand.dim, batch_size
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2, got {batch_size}")
    if loss not in _LOSSES:
        raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")
    if buffer_capacity < 0 or buffer_capacity % batch_size:
        raise ValueError(
            f"buffer_capacity={buffer_capacity} must be a non-negative multiple of "
            f"batch_size={batch_size}"
        )
    if buffered_steps < 0 or (buffered_steps and not buffer_capacity):
        raise ValueError(f"buffered_steps={buffered_steps} needs buffer_capacity > 0")
    if n_ch > 1 and min_per_channel * n_ch > batch_size:
        raise ValueError(
            f"batch_size={batch_size} is too small for {n_ch} channels with "
            f"min_per_channel={min_per_channel}"
        )
    if isinstance(kl_steps, bool) or not isinstance(kl_steps, int) or kl_steps < 0:
        raise ValueError(f"kl_steps must be an integer >= 0, got {kl_steps!r}")
    check_kl_temper(kl_temper)
    if not 0.0 <= sigma_decay < 1.0:
        raise ValueError(f"sigma_decay must be in [0, 1), got {sigma_decay}")
    if not 0.0 <= average_decay < 1.0:
        raise ValueError(f"average_decay must be in [0, 1), got {average_decay}")
    strata = _check_latent_strata(latent_strata, dim, n_ch, n)
    if channel_strata and n_ch == 1:
        raise ValueError("channel_strata is for several channels; use latent_strata")
    n_cells = math.prod(strata)
    latent_cells = channel_strata or n_cells > 1
    # Strata ids: channels; or the hypercubes (inside the channels, at most N/2 + C of them).
    n_strata = n // 2 + n_ch if channel_strata else max(n_ch, n_cells)
    # Single channel: the static hypercube of each slot (slots in order, as even as possible).
    cell_of_slot = np.repeat(np.arange(n_cells, dtype=np.int32), vegas.equal_counts(n, n_cells))

    def context(channel):
        return jax.nn.one_hot(channel, n_ch) if n_ch > 1 else None

    forward_batch, inverse_batch = batch_maps(sampler)

    def flow_forward(flow_params, u, channel):
        """``r [N, d]`` and ``log|det dr/du| [N]`` of a batch (channels ``[N]``)."""
        return forward_batch(flow_params, u, context(channel))

    def flow_log_q(flow_params, r, channel):
        """``log q(r) [N]`` of a batch (channels ``[N]``)."""
        return inverse_batch(flow_params, r, context(channel))[1]

    def log_alpha(params, log_prior, features, channel, active):
        """``[N]`` log channel weight of each event's own channel."""
        if n_ch == 1:
            return jnp.zeros(channel.shape, dtype=log_prior.dtype)
        if channel_weights is None:
            la = jax.vmap(ch.normalise_log_weights, (0, None))(log_prior, active)
        else:
            la = jax.vmap(channel_weights.log_alpha, (None, 0, 0, None))(
                params["channel_weights"], features, log_prior, active
            )
        return jnp.take_along_axis(la, channel[:, None], axis=1)[:, 0]

    def objective(log_f, log_q, batch: _Batch, log_q_sampled, kl_phase, shift, beta):
        """The loss of the phase in units ``u`` of the run's integral: ``(loss / u, log u)``.

        ``f`` is divided by ``s = exp(shift)`` (``TrainState.log_scale``, a running average of
        the batches' mean weight, no gradient) first: the variance is homogeneous of degree 2
        in ``f`` (``u = s^2``) and the divergences do not depend on its scale (``u = 1``), so
        this is the same loss and, up to that factor, the same gradient, which then neither
        overflows nor underflows for integrands of any magnitude the dtype holds (unscaled,
        the variance of a float32 integrand of order 1e15 overflowed Adam's second moment).
        The factor changes slowly over a run, which Adam's normalisation removes; a factor
        per batch (its own mean weight) would not: it damps the batches whose large weights
        carry the gradient. In the KL phase the target is ``|f|^beta`` (``kl_temper``)."""
        log_f = log_f - jax.lax.stop_gradient(shift)
        if loss == "variance":
            main = losses.stratified_variance_loss(
                log_f, log_q, batch.channel, n_ch, log_q_sampled, sign_f=batch.sign,
                baseline=variance_baseline,
            )
            log_unit = 2.0 * shift
        else:
            # beta is 1 from half-way through the KL phase on: a KL survey is tempered at
            # its start and is the plain KL after
            tempered = beta * log_f if loss == "kl" else log_f
            main = losses.get_loss(loss)(tempered, log_q, log_q_sampled)
            log_unit = jnp.zeros_like(shift)
        if not kl_steps or loss == "kl":
            return main, log_unit
        kl = losses.kl_loss(beta * log_f, log_q, log_q_sampled)
        return jnp.where(kl_phase, kl, main), jnp.where(kl_phase, 0.0, log_unit)

    def phase(step):
        """Whether ``step`` is in the KL phase, and the exponent of its target."""
        return step < kl_steps, kl_exponent(step, kl_steps, kl_temper)

    def loss_fn(params, batch: _Batch, log_q_sampled, active, kl_phase, shift, beta):
        log_q = flow_log_q(params["flow"], batch.r, batch.channel)
        log_f = batch.log_fj + log_alpha(params, batch.log_prior, batch.features,
                                         batch.channel, active)
        return objective(log_f, log_q, batch, log_q_sampled, kl_phase, shift, beta)

    def select(flag, a, b):
        """Pytree ``a`` where ``flag`` (a bool, maybe traced: a stratified batch, an update
        that happens), else ``b``."""
        if isinstance(flag, bool):
            return a if flag else b
        return jax.tree.map(lambda x, y: jnp.where(flag, x, y), a, b)

    def layout(channel):
        """Hypercubes of a stratified batch, per event: cells per axis (``[d]`` or
        ``[N, 1]``), its hypercube within its channel, that channel's number of hypercubes
        and the stratum id; and the channel of each stratum id."""
        if not channel_strata:
            cell = jnp.asarray(cell_of_slot)
            return (np.asarray(strata, np.int32), cell, jnp.full((n,), n_cells, jnp.int32),
                    cell, jnp.zeros((n_strata,), jnp.int32))
        counts = jax.ops.segment_sum(jnp.ones(n, jnp.int32), channel, n_ch)
        half = counts // 2  # m_c = floor(half^(1/d)), the root's rounding fixed both ways
        m = jnp.floor(half.astype(jnp.float32) ** (1.0 / dim)).astype(jnp.int32)
        m = jnp.where((m + 1) ** dim <= half, m + 1, m)
        m = jnp.maximum(jnp.where(m**dim > half, m - 1, m), 1)
        cubes = m**dim
        local = jnp.arange(n, dtype=jnp.int32) - (jnp.cumsum(counts) - counts)[channel]
        cell = local % cubes[channel]
        stratum = (jnp.cumsum(cubes) - cubes)[channel] + cell
        # Ids past the last channel's hypercubes map to n_ch, which segment_sum drops.
        seg_channel = jnp.searchsorted(jnp.cumsum(cubes), jnp.arange(n_strata), side="right")
        return m[channel][:, None], cell, cubes[channel], stratum, seg_channel

    def latent(key, stratified, lay):
        plain = jax.random.uniform(key, (n, dim))
        if lay is None:
            return plain
        cells, cell = lay[0], lay[1]
        return select(stratified, vegas.cell_points(plain, cell, cells), plain)

    def stratified_estimate(w, n_c, lay):
        """Estimate over the hypercubes: ``I_c = sum_h (1/M_c) mean_h(w)``."""
        _, _, cubes, stratum, seg_channel = lay
        raw = w / cubes
        seg = estimators.estimate_channels(raw, stratum, n_strata)
        if n_ch == 1:
            value, error = seg.total.value[None], seg.total.error[None]
        else:
            value = jax.ops.segment_sum(seg.value, seg_channel, n_ch)
            error = jnp.sqrt(jax.ops.segment_sum(seg.error**2, seg_channel, n_ch))
        return estimators.ChannelEstimate(seg.total, value, error, n_c), raw, stratum

    def estimate(w, channel, stratified=True, lay=None):
        """The estimate of a fresh batch with weights ``w = alpha f / q``, its weights in
        the stratified convention and the stratum of each event (channel or hypercube).
        ``stratified``: whether the batch came from the latent strata (refine batches do,
        training batches do not)."""
        est = estimators.estimate_channels(w, channel, n_ch, stratified=True)
        if not latent_cells or stratified is False:
            return est, w, channel
        lay = layout(channel) if lay is None else lay
        return select(stratified, stratified_estimate(w, est.n, lay), (est, w, channel))

    def draw(key, params, state: TrainState, theta, stratified):
        """A fresh batch from the flow of ``params``, its non-finite count and its
        hypercube layout (``None`` when the batch is plain)."""
        channel = ch.channel_ids(state.counts, n)
        lay = layout(channel) if latent_cells and stratified is not False else None
        u = latent(key, stratified, lay)
        flow_params = jax.lax.stop_gradient(params["flow"])

        def from_flow(u):
            r, logdet = flow_forward(flow_params, u, channel)
            return r, -logdet

        def from_uniform(u):
            return u, jnp.zeros(n, dtype=u.dtype)

        r, log_q = jax.lax.cond(state.use_flow, from_flow, from_uniform, u)
        ev = _checked(jax.vmap(integrand.evaluate, (0, 0, None))(channel, r, theta),
                      integrand)
        log_fj, n_bad = losses.sanitize_log_f(ev.log_fj)
        batch = _Batch(r, channel, log_fj, ev.sign, ev.log_prior, ev.features, log_q)
        return batch, n_bad, lay

    def optimise(params, opt_state, batch, log_q_sampled, active, kl_phase, shift, beta):
        """One optimizer update; skipped (state unchanged, flag returned) when the loss or
        a gradient is not finite, so one bad batch cannot turn every parameter into NaN."""
        (value, log_unit), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch, log_q_sampled, active, kl_phase, shift, beta)
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        ok = jnp.isfinite(value) & jnp.all(jnp.array(
            [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        params, opt_state = jax.tree.map(lambda a, b: jnp.where(ok, a, b),
                                         (new_params, new_opt_state), (params, opt_state))
        return params, opt_state, (value, log_unit), jnp.logical_not(ok).astype(jnp.int32)

    def push(buffer: Buffer, batch: _Batch) -> Buffer:
        if not buffer_capacity:
            return buffer
        # the buffer keeps the flow's dtype (a float64 integrand under x64 is stored as such)
        fields = [jax.lax.dynamic_update_slice_in_dim(old, new.astype(old.dtype), buffer.head,
                                                      axis=0)
                  for old, new in zip(buffer[:7], batch, strict=True)]
        return Buffer(*fields, size=jnp.minimum(buffer.size + n, buffer_capacity),
                      head=(buffer.head + n) % buffer_capacity)

    def buffered(key, params, opt_state, buffer: Buffer, fresh: Array, active, kl_phase,
                 shift, beta):
        """``1 + buffered_steps`` updates under one ``lax.scan``: the first on the fresh
        batch (at buffer slots ``fresh``), the rest on random buffer draws. One scan body
        means one compiled copy of the loss gradient, whatever ``buffered_steps``."""
        def one(carry, xs):
            params, opt_state = carry
            k, first = xs
            drawn = jax.random.randint(k, (n,), 0, jnp.maximum(buffer.size, 1))
            b = _Batch(*(x[jnp.where(first, fresh, drawn)] for x in buffer[:7]))
            params, opt_state, value, skipped = optimise(params, opt_state, b, b.log_q,
                                                         active, kl_phase, shift, beta)
            return (params, opt_state), (value, skipped)

        firsts = jnp.arange(1 + buffered_steps) == 0
        (params, opt_state), (values, skipped) = jax.lax.scan(
            one, (params, opt_state), (jax.random.split(key, 1 + buffered_steps), firsts)
        )
        return (params, opt_state, jax.tree.map(lambda v: v[0], values),
                jnp.sum(skipped, dtype=jnp.int32))

    def weights(params, batch: _Batch, active):
        log_w = batch.log_fj + log_alpha(params, batch.log_prior, batch.features,
                                         batch.channel, active) - batch.log_q
        return batch.sign * jnp.exp(log_w)

    def init(key: PRNGKey, flow_params: Params | None = None) -> TrainState:
        k_flow, k_cw, k_probe = jax.random.split(key, 3)
        params = {"flow": sampler.init(k_flow) if flow_params is None else flow_params}
        if channel_weights is not None:
            params["channel_weights"] = channel_weights.init(k_cw)
        dtype = jax.tree.leaves(params["flow"])[0].dtype if jax.tree.leaves(
            params["flow"]) else jnp.float32
        cap, k = buffer_capacity, integrand.n_features
        buffer = Buffer(
            r=jnp.zeros((cap, dim), dtype), channel=jnp.zeros((cap,), jnp.int32),
            log_fj=jnp.full((cap,), -jnp.inf, dtype), sign=jnp.ones((cap,), dtype),
            log_prior=jnp.zeros((cap, n_ch), dtype), features=jnp.zeros((cap, k), dtype),
            log_q=jnp.zeros((cap,), dtype), size=jnp.zeros((), jnp.int32),
            head=jnp.zeros((), jnp.int32),
        )
        active = jnp.ones(n_ch, dtype=bool)
        return TrainState(
            params=params,
            opt_state=optimizer.init(params),
            buffer=buffer,
            counts=ch.allocate(jnp.ones(n_ch, dtype), n, min_per_channel=0),
            active=active,
            sigma=jnp.zeros(n_ch, dtype),
            use_flow=jnp.asarray(not uniform_warmup),
            step=jnp.zeros((), jnp.int32),
            log_scale=jnp.full((), jnp.nan, dtype),
            average=params,
        )

    def averaged(average, params, step):
        """The average after the training step ``step`` (0-based) reached ``params``: the
        debiased exponential average, ``sum_s d^(t-s) p_s / sum_s d^(t-s)`` over the
        ``t = step + 1`` steps so far (the first step's parameters get weight 1)."""
        if not average_decay:
            return params
        t = (step + 1).astype(jnp.float32)
        rate = (1.0 - average_decay) / (1.0 - jnp.float32(average_decay) ** t)
        return jax.tree.map(lambda a, p: a * (1.0 - rate).astype(a.dtype)
                            + p * rate.astype(p.dtype), average, params)

    def train_on(k_buf, state: TrainState, batch: _Batch):
        kl_phase, beta = phase(state.step)
        if not buffered_steps:
            params, opt_state, value, skipped = optimise(
                state.params, state.opt_state, batch, batch.log_q, state.active, kl_phase,
                state.log_scale, beta)
            return params, opt_state, push(state.buffer, batch), value, skipped
        buffer = push(state.buffer, batch)
        fresh = (state.buffer.head + jnp.arange(n)) % buffer_capacity
        params, opt_state, value, skipped = buffered(k_buf, state.params, state.opt_state,
                                                     buffer, fresh, state.active, kl_phase,
                                                     state.log_scale, beta)
        # the loss on the buffered copy has the buffer's dtype; report it in the batch's
        value = jax.tree.map(lambda v: v.astype(batch.log_fj.dtype), value)
        return params, opt_state, buffer, value, skipped

    def step(key: PRNGKey, state: TrainState, theta: PyTree = None, update: Any = True):
        k_draw, k_buf = jax.random.split(key)
        # Only frozen (refine) batches are stratified: training sees plain batches. Frozen
        # batches come from the averaged parameters, training batches from the current ones.
        stratified = False if isinstance(update, bool) and update else jnp.logical_not(update)
        sampling = select(stratified, state.average, state.params)
        batch, n_bad, lay = draw(k_draw, sampling, state, theta, stratified)
        w = weights(sampling, batch, state.active)
        est, raw, stratum = estimate(w, batch.channel, stratified, lay)
        # The unit of the losses: the running average of the batches' mean weight; the
        # first batch sets it. Batches without a finite nonzero weight skip it.
        abs_w = jnp.where(jnp.isfinite(w), jnp.abs(w), 0.0)
        log_mean_w = jnp.log(jnp.maximum(jnp.mean(abs_w), jnp.finfo(abs_w.dtype).tiny))
        has_w = jnp.any(abs_w > 0)
        unset = ~jnp.isfinite(state.log_scale)
        now = jnp.where(unset, jnp.where(has_w, log_mean_w, 0.0), state.log_scale)
        log_scale0 = state.log_scale  # what a frozen step leaves
        state = state._replace(log_scale=now.astype(state.log_scale.dtype))
        # An average of the mean weights themselves (not of their logs, which sits below
        # the integral for heavy-tailed weights): an estimate of |I|, so that the variance
        # loss is the relative variance, of the size of the KL loss it follows.
        log_scale = jnp.where(has_w & ~unset, jnp.logaddexp(now + math.log(0.9),
                                                            log_mean_w + math.log(0.1)), now)

        frozen = not (isinstance(update, bool) and update)
        if frozen:
            # Only the update sits under the cond: the draw and the integrand are shared by
            # both branches, so a frozen (refine) step costs no second compiled program.
            update = jnp.asarray(update, dtype=bool)

            def skip(k_buf, state, batch):
                value = (jnp.zeros((), dtype=est.value.dtype),) * 2
                return (state.params, state.opt_state, state.buffer, value,
                        jnp.zeros((), jnp.int32))

            params, opt_state, buffer, value, skipped = jax.lax.cond(
                update, train_on, skip, k_buf, state, batch
            )
        else:
            params, opt_state, buffer, value, skipped = train_on(k_buf, state, batch)

        # The loss of uniform sampling is the loss on this batch with q = 1; on a uniform
        # batch the flow's own loss (value) is estimated through the ratio q / 1. Both are
        # in the units of log_scale, compared there and reported in the integrand's.
        (value, log_unit), (uniform_loss, _) = value, _uniform_loss(batch, state)
        use_flow = state.use_flow | (value < uniform_loss)
        value, uniform_loss = times_exp(value, log_unit), times_exp(uniform_loss, log_unit)

        # Per-channel spread for the allocation: sqrt(n_c) * error_c is the weight std.
        sigma_now = est.error * jnp.sqrt(est.n.astype(est.error.dtype))
        seen = est.n >= 2
        sigma = jnp.where(
            seen & (state.step > 0), sigma_decay * state.sigma + (1 - sigma_decay) * sigma_now,
            jnp.where(seen, sigma_now, state.sigma),
        )
        active = state.active
        if drop_threshold > 0 and n_ch > 1:
            check = (state.step + 1 >= drop_after) & ((state.step + 1) % drop_after == 0)
            dropped = ch.channels_to_drop(est.value, est.error, active, threshold=drop_threshold)
            active = jnp.where(check, dropped, active)
        counts = allocate(sigma, active) if n_ch > 1 else state.counts

        info = TrainInfo(
            loss=value, value=est.total.value, error=est.total.error,
            channel_value=est.value, channel_error=est.error, n_nonfinite=n_bad,
            use_flow=state.use_flow, uniform_loss=uniform_loss, weights=raw,
            channel=batch.channel, stratum=stratum, n_skipped=skipped,
        )
        new_state = TrainState(params, opt_state, buffer, counts, active, sigma, use_flow,
                               state.step + 1, log_scale,
                               averaged(state.average, params, state.step))
        if frozen:
            new_state = new_state._replace(
                average=select(update, new_state.average, state.average),
                log_scale=jnp.where(update, log_scale, log_scale0),
                counts=jnp.where(update, counts, state.counts),
                active=jnp.where(update, active, state.active),
                sigma=jnp.where(update, sigma, state.sigma),
                use_flow=jnp.where(update, use_flow, state.use_flow),
                step=jnp.where(update, state.step + 1, state.step),
            )
        # A step keeps the state's dtypes (a float64 integrand under x64 with a float32
        # flow would otherwise promote the spreads), so it can be a scan or loop carry.
        new_state = jax.tree.map(lambda a, b: a.astype(b.dtype), new_state, state)
        return new_state, info

    def _uniform_loss(batch: _Batch, state: TrainState):
        """The loss that uniform sampling (``log q = 0``) would have, estimated on ``batch``
        (the loss of the current phase, so that it compares with the flow's)."""
        zeros = jnp.zeros_like(batch.log_q)
        log_f = batch.log_fj + log_alpha(state.params, batch.log_prior, batch.features,
                                         batch.channel, state.active)
        kl_phase, beta = phase(state.step)
        return objective(log_f, zeros, batch, batch.log_q, kl_phase, state.log_scale, beta)

    def allocate(sigma, active):
        """Events per channel ``[C]`` of a batch of ``N`` from the channels' weight spreads
        and the active mask (the allocation a step applies to the next batch)."""
        if n_ch == 1:
            return jnp.full((1,), n, jnp.int32)
        if stratify:
            return ch.allocate(sigma, n, min_per_channel=min_per_channel, active=active)
        return ch.allocate(active.astype(sigma.dtype), n, min_per_channel=0, active=active)

    def sample(key: PRNGKey, state: TrainState, theta: PyTree = None):
        """A fresh batch from the frozen sampler (``state.average``) with its weights
        ``alpha f / q``, no update: ``(batch, w [N], n_nonfinite)``;
        ``estimate(w, batch.channel)`` gives the estimate."""
        batch, n_bad, _ = draw(key, state.average, state, theta, True)
        return batch, weights(state.average, batch, state.active), n_bad

    return Trainer(init=init, step=step, sample=sample, integrand=integrand,
                   estimate=estimate, n_strata=n_strata, allocate=allocate)


def _check_latent_strata(latent_strata, dim: int, n_ch: int, n: int) -> tuple[int, ...]:
    if latent_strata is None:
        return (1,) * dim
    strata = tuple(latent_strata)
    if len(strata) != dim or any(isinstance(k, bool) or not isinstance(k, (int, np.integer))
                                 or k < 1 for k in strata):
        raise ValueError(f"latent_strata must be {dim} integers >= 1, got {latent_strata!r}")
    strata = tuple(int(k) for k in strata)
    if math.prod(strata) > 1 and n_ch > 1:
        raise ValueError("latent_strata needs a single channel (channels are strata already)")
    if 2 * math.prod(strata) > n:
        raise ValueError(f"latent_strata={strata} gives {math.prod(strata)} hypercubes: "
                         f"batch_size={n} must be at least twice that")
    return strata


__all__ = [
    "Buffer",
    "Sampler",
    "TrainInfo",
    "TrainState",
    "Trainer",
    "make_trainer",
    "single_channel",
]
