"""The front door: integrate a function or a process with a trained neural sampler.

Two phases, as in ZuNIS (arXiv:2110.05491):

* **survey**: ``n_survey`` training steps of :mod:`jaxnis.train` (each step evaluates the
  integrand on one batch); optionally starting from uniform sampling until the flow's loss
  beats it. Survey estimates are reported but not used in the result.
* **refine**: the sampler is frozen and ``n_refine`` fresh batches are integrated, each
  stratified over the latent cube (inside each channel); the result is the plain mean of
  the refine iterations (identically distributed), with chi2/dof
  (:func:`jaxnis.estimators.average`).

Example:
    >>> import jax.numpy as jnp
    >>> from jaxnis.integrate import Integrator
    >>> f = lambda x, theta: jnp.exp(-jnp.sum((x - 0.5) ** 2) / 0.02)
    >>> result = Integrator(f, dim=2).integrate(n_survey=50, n_refine=5)  # doctest: +SKIP
    >>> print(result)                                                      # doctest: +SKIP
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnis import channels as ch
from jaxnis import compiler, estimators, pretrain, vegas
from jaxnis.flows.flow import make_flow
from jaxnis.train import (
    Trainer,
    TrainInfo,
    TrainState,
    check_integrand,
    check_kl_temper,
    make_trainer,
    single_channel,
)
from jaxnis.types import Array, PRNGKey, PyTree


class Result(NamedTuple):
    """Result of :meth:`Integrator.integrate`.

    Attributes:
        value: combined refine estimate of the integral.
        error: its standard error.
        rel_error: ``error / |value|`` (``inf`` for a zero value).
        chi2_dof: chi2 per degree of freedom of the refine iterations.
        n_eval: integrand evaluations, survey and refine together.
        n_eval_refine: evaluations in the refine phase.
        unweighting_efficiency: ``<|w|> / w_max`` on the refine weights, with ``w_max`` the
            weight above which a fraction ``1e-3`` of the cross section lies
            (:func:`jaxnis.estimators.max_weight_xs_fraction`).
        n_nonfinite: integrand values that were NaN or +inf (counted as zero).
        channel_value: per-channel contributions, averaged over the refine iterations as
            ``value`` is (they add up to it).
        history: dict of numpy arrays per survey step: ``loss``, ``value``, ``error``,
            ``use_flow``, ``n_nonfinite``, ``n_skipped`` (optimizer updates skipped for a
            non-finite loss or gradient); and per refine iteration: ``refine_value``,
            ``refine_error``.
        wall_time: seconds spent, compilation included.
        message: empty, or a warning about the result (e.g. the integrand vanished).
    """

    value: float
    error: float
    rel_error: float
    chi2_dof: float
    n_eval: int
    n_eval_refine: int
    unweighting_efficiency: float
    n_nonfinite: int
    channel_value: np.ndarray
    history: dict[str, np.ndarray]
    wall_time: float
    message: str = ""

    def __str__(self) -> str:
        lines = [
            f"integral        = {self.value:.8g} +- {self.error:.3g}"
            f"  ({100 * self.rel_error:.3g} %)",
            f"chi2/dof        = {self.chi2_dof:.3g}",
            f"evaluations     = {self.n_eval} ({self.n_eval_refine} in refine)",
            f"unweighting eff = {self.unweighting_efficiency:.4g}",
            f"wall time       = {self.wall_time:.3g} s",
        ]
        if self.n_nonfinite:
            lines.append(f"non-finite integrand values (counted as zero): {self.n_nonfinite}")
        if self.message:
            lines.append(f"warning: {self.message}")
        return "\n".join(lines)


class Refined(NamedTuple):
    """Output of :meth:`Integrator.refine`.

    Attributes:
        combined: :class:`jaxnis.estimators.Combined` over the refine iterations.
        values: ``[n_iter]`` per-iteration estimates.
        errors: ``[n_iter]`` their errors.
        unweighting_efficiency: ``<|w|> / w_max`` of all refine weights (see
            :class:`Result`).
        weights: ``[n_iter, N]`` weights in the stratified convention: per iteration, the
            sum over strata of their mean within each stratum is the estimate
            (:func:`jaxnis.estimators.event_weights` turns them into event weights).
        channel: ``[n_iter, N]`` channel of each event.
        n_nonfinite: non-finite integrand values met.
        channel_value: ``[C]`` per-channel contributions, the mean over the iterations
            that enter ``combined`` (they add up to its value).
        stratum: ``[n_iter, N]`` stratum of each event: its channel, or with latent strata
            its hypercube of the latent cube.
    """

    combined: estimators.Combined
    values: np.ndarray
    errors: np.ndarray
    unweighting_efficiency: float
    weights: np.ndarray
    channel: np.ndarray
    n_nonfinite: int
    channel_value: np.ndarray
    stratum: np.ndarray


class _Progress:
    """A one-line progress display (rewritten in place on a terminal)."""

    def __init__(self, total: int, label: str, enabled: bool, stream=None):
        self.total, self.label, self.enabled = total, label, enabled and total > 0
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.last_print = -1.0

    def update(self, done: int, text: str) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        final = done >= self.total
        if not final and now - self.last_print < (0.2 if self.tty else 5.0):
            return
        self.last_print = now
        width = 24
        filled = int(width * done / self.total)
        bar = "#" * filled + "." * (width - filled)
        line = f"{self.label} [{bar}] {done}/{self.total} {text} ({now - self.start:.1f} s)"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


#: Integrands of at most this many dimensions get :data:`LOW_DIM_DEFAULTS` on top.
LOW_DIM = 2

#: The Integrator's defaults. ``kl_fraction`` applies to a single channel (0 for several).
DEFAULTS: dict[str, Any] = {"learning_rate": 3e-3, "buffered_steps": 3, "kl_fraction": 0.75,
                            "average_fraction": 0.05,
                            "flow": {"n_bins": 10, "hidden": (32, 32)}}

#: Defaults for ``dim <= LOW_DIM``. Binary masks give a 2-d flow only two coupling layers
#: (each dimension transformed once), too few for curved, thin structure; a 2-d flow is cheap,
#: so it gets eight layers of 16 bins, a larger learning rate and more updates per batch, and
#: no KL phase (uniform sampling already covers a 2-d cube, so the variance loss can train
#: from the start). Measured with ``benchmarks/nis.py`` (2.5e5 training evaluations, seeds
#: 0-2): i-flow's two circles from 5.3-7.4e-3 to 1.2-1.3e-3 relative error (vegas 2.5e-3),
#: the 2-d camel, not used to choose them, from 3.7-4.3e-4 to 3.0-3.3e-4, for about three
#: times the run time. Each change alone gains 1.5-2x on the circles. The larger learning
#: rate is not for higher dimensions: it broke the 16-d rotated Gaussian (relative error
#: 0.16 instead of 0.013).
LOW_DIM_DEFAULTS: dict[str, Any] = {"learning_rate": 1e-2, "buffered_steps": 7,
                                    "kl_fraction": 0.0, "flow": {"n_layers": 8, "n_bins": 16}}


#: The exponent the KL phase's tempered target ``|f|^beta`` starts from (``kl_temper``).
#: Measured with ``benchmarks/nis.py`` (2.5e5 training evaluations, seeds 0-1): without
#: tempering the 16-d camel lost one of its two peaks in seeds 0 and 1 (0.431 +- 0.0008 for
#: 0.862, pull -578); from 0.03, 0.1 or 0.3 it finds both (relative error 3.8-5.3e-3, pulls
#: within 3); the 16-d rotated Gaussian improves from 1.3-1.7e-2 to 3.5-5.0e-3 and the 8-d
#: camel from 1.8-2.5e-3 to 1.8-2.1e-3; the 4-d camel loses 10% (7.1e-4 to 8.0e-4).
KL_TEMPER = 0.1


def average_decay(fraction: float, n_survey: int) -> float:
    """The per-step decay of an exponential average of the parameters whose time constant,
    ``1 / (1 - decay)`` steps, is ``fraction`` of a survey of ``n_survey`` steps; 0 (no
    averaging) when that is a step or less."""
    window = fraction * n_survey
    return 1.0 - 1.0 / window if window > 1.0 else 0.0


def default_options(dim: int, n_channels: int = 1) -> dict[str, Any]:
    """The :class:`Integrator`'s defaults for ``dim`` dimensions and ``n_channels`` channels:
    ``learning_rate``, ``buffered_steps``, ``kl_fraction``, ``average_fraction`` and the
    ``flow`` options (given options replace these one by one, flow options key by key)."""
    low = LOW_DIM_DEFAULTS if dim <= LOW_DIM else {}
    options = DEFAULTS | low
    options["flow"] = DEFAULTS["flow"] | low.get("flow", {})
    if n_channels > 1:
        options["kl_fraction"] = 0.0
    return options


@functools.partial(jax.jit, static_argnums=4)
def _refine_summary(values: Array, errors: Array, raw: Array, stratum: Array, n_strata: int):
    """The combination of the refine iterations and the unweighting efficiency
    ``<|w|> / w_max`` of the event weights (``w_max``: the ``1e-3`` cross-section-fraction
    maximum), one program."""
    w = jax.vmap(estimators.event_weights, (0, 0, None))(raw, stratum, n_strata).reshape(-1)
    w_max = estimators.max_weight_xs_fraction(w, 1e-3)
    return (estimators.average(values, errors),
            estimators.unweighting_metrics(w, w_max).efficiency)


def _as_key(key: PRNGKey | int) -> PRNGKey:
    """A PRNG key from a key or an integer seed."""
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        return jax.random.key(int(key))
    return key


def _mean_channels(rows, values: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """Per-channel values averaged over the refine iterations that
    :func:`jaxnis.estimators.average` uses (finite value and error), so that they add up to
    the combined value; the last iteration's when none is usable."""
    per_iter = np.concatenate([np.asarray(r.channel_value) for r in rows])
    ok = np.asarray(estimators.usable_iterations(values, errors))
    return per_iter[ok].mean(axis=0) if ok.any() else per_iter[-1]


def _check_batch_size(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 2:
        raise ValueError(f"{name} must be an integer >= 2, got {value!r}")
    return int(value)


class Integrator:
    """Neural importance sampling of a function on ``[0, 1]^dim`` or of a multi-channel process.

    Options left at ``None`` take :func:`default_options`: :data:`DEFAULTS`, and for
    integrands of one or two dimensions :data:`LOW_DIM_DEFAULTS` (a deeper flow with more
    bins, a larger learning rate, more updates per batch, no KL phase).

    Args:
        f: ``f(x [dim], theta) -> value``, one number for one point (jax-traceable;
            ``f(x)`` also works), or a :class:`jaxnis.channels.MultiChannelIntegrand`.
        dim: number of dimensions (ignored for a multi-channel integrand).
        theta: physics parameters passed to the integrand (a pytree of arrays).
        batch_size: integrand evaluations per training step and per refine iteration.
        learning_rate: Adam learning rate (cosine-decayed over the survey) unless
            ``optimizer`` is given; by default 3e-3, 1e-2 for ``dim <= 2``.
        optimizer: any optax transformation, overriding ``learning_rate``.
        loss: ``"variance"``, ``"kl"`` or ``"reverse_kl"``.
        kl_fraction: the first ``kl_fraction`` of the survey steps train with the forward KL
            divergence, the rest with ``loss`` (``make_trainer``'s ``kl_steps``). By default
            0.75 for a single channel of three or more dimensions, 0 otherwise. KL weighs an
            event by ``w``, the variance by ``w^2``: from a sampler far from the target, the
            variance loss chases the few largest weights. Measured (``benchmarks/nis.py``,
            2.5e5 training evaluations, seeds 0-2): the 16-d rotated Gaussian went from
            relative errors of 0.43-0.64 with pulls +0.7, -8.4 and -113 (variance only) to
            0.013-0.017 with pulls below 0.9; the 8-d camel from 4.5e-3 to 2.5e-3. The thin
            rings of i-flow's two circles lose 1.2-2x (the variance loss alone suits such
            sharp, thin support, and uniform sampling already covers two dimensions), and
            multi-channel processes, whose channel maps already flatten the peaks, lose
            unweighting efficiency with a KL phase, hence 0 there.
        kl_temper: the KL phase's target starts as ``|f|^kl_temper`` and sharpens to ``|f|``
            over the first half of the phase (``make_trainer``'s ``kl_temper``; 1: off), so
            that the flow covers every peak before it narrows. See :data:`KL_TEMPER`.
        average_fraction: the refine iterations (and ``sample``) draw from an exponential
            moving average of the parameters over the survey, with a time constant of this
            fraction of the survey's steps (``make_trainer``'s ``average_decay``, from
            :func:`average_decay`; 0: the last parameters). Default 0.05: measured at the
            ``benchmarks/nis.py`` budgets (medians over seeds 0-4), the quarter annulus's
            relative error 2.73e-4 -> 2.62e-4 and unweighting efficiency 0.62 -> 0.69;
            the other integrands of the suite within their spread over seeds
            (``docs/training.md``, "Survey and refine").
        flow: keyword arguments for :func:`jaxnis.flows.flow.make_flow` (bins, layers, ...),
            on top of the defaults: 10 bins, conditioners of two hidden layers of 32, binary
            masks (``2 ceil(log2 d)`` layers); for ``dim <= 2`` eight layers of 16 bins.
        buffer_capacity, buffered_steps: buffered training (``buffered_steps=0``: off); see
            :func:`jaxnis.train.make_trainer`. The default capacity is the last 10 batches.
            By default every evaluated batch serves 1 + 3 optimizer updates (1 + 7 for
            ``dim <= 2``): at a fixed
            evaluation budget more updates per evaluation is the main lever (measured at
            2.5e5 evaluations, batch 1000: relative error of camel4 / two circles / annulus
            2.4e-3 / 8.9e-3 / 2.5e-3 online, 1.0e-3 / 4.4e-3 / 1.6e-3 buffered).
        learn_channel_weights: train a channel-weight network on top of the prior
            (multi-channel only).
        uniform_warmup: sample uniformly until the flow's loss beats uniform sampling.
        trainer_options: further keyword arguments for :func:`jaxnis.train.make_trainer`
            (checked here: an unknown name or a bad value raises ``ValueError``).
        progress: show a progress line on stderr.
        steps_per_call: steps (or refine iterations) per call of the compiled program, which
            scans over them; the progress line is updated between calls.
        vegas_pretrain: run VEGAS per channel before the survey and start the flow's splines
            from the grids (:mod:`jaxnis.pretrain`): ``True`` for the defaults or a dict with
            ``n_iter``, ``n_per_iter`` (per channel), ``n_bins``, ``alpha``. Its evaluations
            count in ``n_eval``; the uniform warm-up is switched off (the flow starts from
            VEGAS). Off by default: measured in ``benchmarks/results/vegas_init.md``, it helps
            where VEGAS finds every peak (4-d camels, rotated Gaussian, annulus, Drell-Yan)
            and hurts where it loses or invents peaks (8-d camels).
        latent_strata: stratify the refine batches' uniform numbers over hypercubes of the
            latent cube, two events per hypercube (see :func:`jaxnis.train.make_trainer`):
            ``True`` for ``jaxnis.vegas.default_strata(dim, batch_size, 0)`` cells per axis
            for a single channel (VEGAS+'s rule, e.g. 23 x 22 for ``d = 2`` and batch 1024)
            and hypercubes inside each channel for several (``channel_strata``), a tuple of
            cells per axis (single channel), or ``False`` for plain sampling. The estimate
            and its error are the stratified ones.
        refine_batch_size: events per refine iteration (default ``batch_size``). Larger
            refine batches hold finer latent strata (two events per hypercube), and the
            error of a stratified sample falls faster than ``1/sqrt(N)`` where the weight
            varies smoothly or jumps along a surface. Measured at 5e4 refine events after
            2.5e5 training evaluations (seeds 0-1): relative error of the quarter annulus
            7.2e-4 -> 3.8-4.0e-4 and of i-flow's two circles 9.2-9.5e-4 -> 4.5-5.0e-4 with one
            refine batch of 5e4 instead of 50 of 1000; in four dimensions 1.2x (camel),
            beyond about eight little (two cells on some axes). A refine batch of another size
            is a second compiled program (sampling only).
    """

    def __init__(
        self,
        f: Callable[[Array, PyTree], Array] | ch.MultiChannelIntegrand,
        dim: int | None = None,
        *,
        theta: PyTree = None,
        batch_size: int = 1024,
        learning_rate: float | None = None,
        optimizer: optax.GradientTransformation | None = None,
        loss: str = "variance",
        kl_fraction: float | None = None,
        kl_temper: float = KL_TEMPER,
        average_fraction: float | None = None,
        flow: dict[str, Any] | None = None,
        buffer_capacity: int | None = None,
        buffered_steps: int | None = None,
        learn_channel_weights: bool = True,
        uniform_warmup: bool = True,
        trainer_options: dict[str, Any] | None = None,
        progress: bool = True,
        steps_per_call: int = 25,
        vegas_pretrain: dict[str, Any] | bool | None = None,
        latent_strata: tuple[int, ...] | bool = True,
        refine_batch_size: int | None = None,
    ):
        if isinstance(f, ch.MultiChannelIntegrand):
            check_integrand(f)
            integrand = f
        else:
            if dim is None:
                raise ValueError("dim is required when f is a function")
            integrand = single_channel(f, dim)
        self.integrand = integrand
        self.theta = theta
        self.batch_size = _check_batch_size("batch_size", batch_size)
        self.refine_batch_size = _check_batch_size(
            "refine_batch_size", batch_size if refine_batch_size is None else refine_batch_size)
        self.progress = progress
        if steps_per_call < 1:
            raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
        self.steps_per_call = steps_per_call
        defaults = default_options(integrand.dim, integrand.n_channels)
        self.learning_rate = defaults["learning_rate"] if learning_rate is None else learning_rate
        self._optimizer = optimizer
        if buffered_steps is None:
            buffered_steps = defaults["buffered_steps"]
        if kl_fraction is None:
            kl_fraction = defaults["kl_fraction"]
        if not 0.0 <= kl_fraction <= 1.0:
            raise ValueError(f"kl_fraction must be in [0, 1], got {kl_fraction}")
        self.kl_fraction = kl_fraction
        if average_fraction is None:
            average_fraction = defaults["average_fraction"]
        if not 0.0 <= average_fraction <= 1.0:
            raise ValueError(f"average_fraction must be in [0, 1], got {average_fraction}")
        self.average_fraction = average_fraction
        check_kl_temper(kl_temper)
        n_ch = integrand.n_channels
        flow_options = defaults["flow"] | dict(flow or {})
        if n_ch > 1:
            flow_options["context_dim"] = n_ch
        self.flow = make_flow(integrand.dim, **flow_options)
        cw = None
        if n_ch > 1 and learn_channel_weights:
            cw = ch.make_channel_weights(n_ch, integrand.n_features)
        if buffer_capacity is None:
            buffer_capacity = 10 * batch_size if buffered_steps else 0
        channel_strata = bool(latent_strata) and n_ch > 1
        self._latent_strata_option = latent_strata
        self.latent_strata = self._latent_strata(batch_size)
        self.channel_strata = channel_strata
        self._trainer_kwargs = dict(
            batch_size=batch_size, loss=loss, buffer_capacity=buffer_capacity,
            buffered_steps=buffered_steps, channel_weights=cw, uniform_warmup=uniform_warmup,
            kl_temper=kl_temper,
            latent_strata=self.latent_strata, channel_strata=channel_strata,
        ) | dict(trainer_options or {})
        self._check_trainer_options()
        self.state: TrainState | None = None
        self.n_eval = 0
        # Compiled kernels per survey length (the learning-rate schedule depends on it).
        self._compiled: dict[int, Any] = {}
        # Compiled refine samplers per refine batch size (other than batch_size).
        self._refiners: dict[int, Any] = {}
        self._active: Any = None
        self.vegas_pretrain = None
        if vegas_pretrain:
            options = dict(vegas_pretrain) if isinstance(vegas_pretrain, dict) else {}
            unknown = set(options) - {"n_iter", "n_per_iter", "n_bins", "alpha"}
            if unknown:
                raise ValueError(f"unknown vegas_pretrain options {sorted(unknown)}")
            self.vegas_pretrain = {"n_iter": 8, "n_per_iter": 2048, "n_bins": 64,
                                   "alpha": 1.5} | options
            self._trainer_kwargs["uniform_warmup"] = False

    def _trainer(self, n_survey: int):
        """The trainer and its compiled programs for a survey of ``n_survey`` steps.

        Two programs per survey length (the learning-rate schedule depends on it): ``init``
        and ``chunk``, which runs up to ``steps_per_call`` steps under ``lax.scan``. Survey
        and refine iterations share ``chunk`` (a refine iteration is a step with the update
        switched off, a traced flag), so nothing is recompiled between the two phases.
        """
        if n_survey not in self._compiled:
            # Every step makes 1 + buffered_steps optimizer updates: the schedule spans them all.
            n_updates = max(n_survey, 1) * (1 + self._trainer_kwargs["buffered_steps"])
            optimizer = self._optimizer or optax.adam(
                optax.cosine_decay_schedule(self.learning_rate, n_updates, alpha=0.1)
            )
            by_length = {"kl_steps": round(self.kl_fraction * n_survey),
                         "average_decay": average_decay(self.average_fraction, n_survey)}
            trainer = make_trainer(self.integrand, self.flow, optimizer,
                                   **(by_length | self._trainer_kwargs))
            length = self.steps_per_call
            flow = self.flow

            vegas_options = self.vegas_pretrain

            def init(key, theta):
                """Fresh state; with VEGAS pretraining also its grids' evaluation count."""
                k_vegas, key = jax.random.split(key)
                # trainer.init draws the flow from the first of these keys
                flow_params = flow.init(jax.random.split(key, 3)[0])
                n_vegas = jnp.zeros((), jnp.int32)
                if vegas_options is not None:
                    o = vegas_options
                    pre = pretrain.pretrain_channels(k_vegas, self.integrand, theta, o["n_iter"],
                                                     o["n_per_iter"], o["n_bins"], o["alpha"])
                    flow_params = pretrain.flow_params_from_grid(flow, flow_params, pre.grids)
                    n_vegas = jnp.asarray(pre.n_eval, jnp.int32)
                return trainer.init(key, flow_params), n_vegas

            def chunk(key, state, theta, train, n_valid):
                traced: dict[str, Any] = {}

                def body(state, xs):
                    k, i = xs

                    def run(state):
                        new_state, info = trainer.step(k, state, theta, train)
                        traced["info"] = jax.eval_shape(lambda: info)
                        return new_state, info

                    def idle(state):
                        # Past n_valid (the last chunk of a run): nothing evaluated. The
                        # step's output shapes come from its trace in `run` (lax.cond traces
                        # that branch first); tracing the step again would cost as much.
                        info = traced.get("info") or jax.eval_shape(run, state)[1]
                        return state, jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), info)

                    return jax.lax.cond(i < n_valid, run, idle, state)

                xs = (jax.random.split(key, length), jnp.arange(length))
                return jax.lax.scan(body, state, xs)

            def sample(key, state, theta):
                """A fresh batch with its event weights (their mean is the estimate)."""
                batch, w, n_bad = trainer.sample(key, state, theta)
                _, raw, stratum = trainer.estimate(w, batch.channel)
                return batch, estimators.event_weights(raw, stratum, trainer.n_strata), n_bad

            self._compiled[n_survey] = (trainer, compiler.jit(init), compiler.jit(chunk),
                                        compiler.jit(sample))
        self._active = self._compiled[n_survey]
        return self._active

    def _check_trainer_options(self) -> None:
        """Check the trainer's options now rather than at the first ``train``: the names
        against :func:`make_trainer`'s keywords, the values by building a trainer once
        (Python only, nothing traced)."""
        known = set(inspect.signature(make_trainer).parameters) - {
            "integrand", "sampler", "optimizer"}
        unknown = sorted(set(self._trainer_kwargs) - known)
        if unknown:
            raise ValueError(f"unknown trainer_options {unknown}; make_trainer takes "
                             f"{sorted(known)}")
        make_trainer(self.integrand, self.flow, optax.identity(), **self._trainer_kwargs)

    def _latent_strata(self, n: int) -> tuple[int, ...] | None:
        """Cells per axis of the single-channel latent strata for batches of ``n`` events:
        ``default_strata(dim, n, 0)`` for ``latent_strata=True``, the given tuple, or
        ``None`` (plain sampling, or several channels: strata inside the channels)."""
        option = self._latent_strata_option
        if option is True:
            return (vegas.default_strata(self.integrand.dim, n, 0.0)
                    if self.integrand.n_channels == 1 else None)
        return None if option is None or option is False else tuple(option)

    def _refiner(self, n: int):
        """The trainer of refine batches of ``n`` events and its compiled frozen iteration.

        Same integrand, flow, channel weights and allocation rule as the survey's trainer,
        without buffer; latent strata sized for ``n`` (``default_strata(dim, n, 0)`` unless
        given as a tuple). The frozen iteration re-allocates the survey state's channel
        counts to ``n`` events, draws one batch and returns its :class:`TrainInfo` (loss 0).
        """
        if n not in self._refiners:
            kwargs = dict(self._trainer_kwargs, batch_size=n, buffer_capacity=0,
                          buffered_steps=0, latent_strata=self._latent_strata(n))
            trainer = make_trainer(self.integrand, self.flow, optax.identity(), **kwargs)

            def frozen(key, state, theta):
                state = state._replace(counts=trainer.allocate(state.sigma, state.active))
                batch, w, n_bad = trainer.sample(key, state, theta)
                est, raw, stratum = trainer.estimate(w, batch.channel)
                zero = jnp.zeros((), est.total.value.dtype)
                return TrainInfo(
                    loss=zero, value=est.total.value, error=est.total.error,
                    channel_value=est.value, channel_error=est.error, n_nonfinite=n_bad,
                    use_flow=state.use_flow, uniform_loss=zero, weights=raw,
                    channel=batch.channel, stratum=stratum,
                    n_skipped=jnp.zeros((), jnp.int32))

            self._refiners[n] = (trainer, compiler.jit(frozen))
        return self._refiners[n]

    def _run(self, key: PRNGKey, n: int, train: bool, bar: _Progress, text) -> list[Any]:
        """``n`` steps (``train``) or frozen iterations through the shared chunk program."""
        _, _, chunk, _ = self._active
        rows: list[Any] = []
        done = 0
        for k in jax.random.split(key, -(-n // self.steps_per_call)) if n else []:
            n_valid = min(self.steps_per_call, n - done)
            self.state, info = chunk(k, self.state, self.theta, train, n_valid)
            info = jax.tree.map(lambda x, m=n_valid: np.asarray(x)[:m], info)
            rows.append(info)
            done += n_valid
            if bar.enabled:
                bar.update(done, text(info))
        return rows

    def train(self, key: PRNGKey | int, n_steps: int) -> dict[str, np.ndarray]:
        """Survey: ``n_steps`` training steps from a fresh state (``key``: PRNG key or
        integer seed). Returns the history."""
        if isinstance(n_steps, bool) or not isinstance(n_steps, int | np.integer) or n_steps < 0:
            raise ValueError(f"the survey needs an integer number of steps >= 0, got {n_steps!r}")
        _, init, _, _ = self._trainer(n_steps)
        k_init, k_steps = jax.random.split(_as_key(key))
        self.state, n_vegas = init(k_init, self.theta)
        self.n_eval += int(n_vegas)
        bar = _Progress(n_steps, "survey", self.progress)
        rows = self._run(
            k_steps, n_steps, True, bar,
            lambda i: f"loss {i.loss[-1]:.3g}  I = {i.value[-1]:.5g} +- {i.error[-1]:.2g}",
        )
        self.n_eval += n_steps * self.batch_size
        keys = ("loss", "value", "error", "use_flow", "n_nonfinite", "n_skipped")
        if not rows:
            return {k: np.zeros(0) for k in keys}
        h = {k: np.concatenate([getattr(r, k) for r in rows]) for k in keys}
        n_skipped = int(np.sum(h["n_skipped"]))
        if n_skipped:
            n_updates = n_steps * (1 + self._trainer_kwargs["buffered_steps"])
            warnings.warn(
                f"{n_skipped} of {n_updates} optimizer updates were skipped: the loss or a "
                f"gradient was not finite (history['n_skipped'] has them per step)",
                RuntimeWarning, stacklevel=2)
        return h

    def refine(self, key: PRNGKey | int, n_iter: int, batch_size: int | None = None):
        """Refine: ``n_iter`` batches from the frozen sampler, combined over iterations.

        Args:
            key: PRNG key or integer seed.
            n_iter: refine iterations.
            batch_size: events per iteration; default ``refine_batch_size`` (see
                :class:`Integrator`).

        Returns a :class:`Refined` (the combination, per-iteration estimates, and the event
        weights ``[n_iter, N]`` with their channels).
        """
        if self.state is None:
            raise RuntimeError("train (survey) before refine")
        if n_iter < 1:
            raise ValueError(f"n_iter must be >= 1, got {n_iter}")
        key = _as_key(key)
        n = self.refine_batch_size if batch_size is None else _check_batch_size(
            "batch_size", batch_size)
        bar = _Progress(n_iter, "refine", self.progress)
        values: list[float] = []
        errors: list[float] = []

        def text(info):
            values.extend(info.value.tolist())
            errors.extend(info.error.tolist())
            comb = estimators.average(np.asarray(values), np.asarray(errors))
            return f"I = {float(comb.value):.6g} +- {float(comb.error):.2g}"

        if n == self.batch_size:  # the survey's own program, update switched off
            rows = self._run(key, n_iter, False, bar, text)
            n_strata = self._active[0].n_strata
        else:
            trainer, frozen = self._refiner(n)
            n_strata = trainer.n_strata
            outs = []  # dispatched asynchronously; only the progress line waits for them

            def host(info):
                return jax.tree.map(lambda x: np.asarray(x)[None], info)

            for i, k in enumerate(jax.random.split(key, n_iter)):
                outs.append(frozen(k, self.state, self.theta))
                if bar.enabled:
                    bar.update(i + 1, text(host(outs[-1])))
            rows = [host(info) for info in outs]
        values = np.concatenate([r.value for r in rows])
        errors = np.concatenate([r.error for r in rows])
        self.n_eval += n_iter * n
        weights = np.concatenate([r.weights for r in rows])
        stratum = np.concatenate([r.stratum for r in rows])
        combined, efficiency = _refine_summary(values, errors, weights, stratum, n_strata)
        return Refined(
            combined=combined,
            values=values,
            errors=errors,
            unweighting_efficiency=float(efficiency),
            weights=weights,
            channel=np.concatenate([r.channel for r in rows]),
            n_nonfinite=int(sum(int(np.sum(r.n_nonfinite)) for r in rows)),
            channel_value=_mean_channels(rows, values, errors),
            stratum=stratum,
        )

    def integrate(
        self, key: PRNGKey | int = 0, *, n_survey: int = 200, n_refine: int = 10
    ) -> Result:
        """Survey then refine; returns a :class:`Result`.

        Args:
            key: PRNG key or integer seed.
            n_survey: training steps (``n_survey * batch_size`` evaluations).
            n_refine: refine iterations (``n_refine * refine_batch_size`` evaluations).
        """
        if n_refine < 1:
            raise ValueError(f"n_refine must be >= 1, got {n_refine}")
        key = _as_key(key)
        start = time.perf_counter()
        self.n_eval = 0
        k_train, k_refine = jax.random.split(key)
        history = self.train(k_train, n_survey)
        refined = self.refine(k_refine, n_refine)
        comb, values, errors = refined.combined, refined.values, refined.errors
        n_bad, channel_value = refined.n_nonfinite, refined.channel_value
        w = refined.weights.reshape(-1)
        eff = refined.unweighting_efficiency
        value, error = float(comb.value), float(comb.error)
        message = ""
        if not np.any(np.asarray(w) != 0):
            message = (
                "the integrand was zero (or non-finite) at every refine point: the integral "
                "is 0 to the resolution of the sample, or the sampler misses its support"
            )
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        n_bad += int(np.sum(history.get("n_nonfinite", 0)))
        history = dict(history, refine_value=np.asarray(values), refine_error=np.asarray(errors))
        return Result(
            value=value,
            error=error,
            rel_error=error / abs(value) if value != 0 else math.inf,
            chi2_dof=float(comb.chi2_dof),
            n_eval=self.n_eval,
            n_eval_refine=n_refine * self.refine_batch_size,
            unweighting_efficiency=eff,
            n_nonfinite=n_bad,
            channel_value=channel_value,
            history=history,
            wall_time=time.perf_counter() - start,
            message=message,
        )

    def sample(self, key: PRNGKey | int, n_batches: int = 1):
        """Weighted events from the trained sampler: ``(r [M, d], channel [M], w [M])``
        (``key``: PRNG key or integer seed).

        ``M = n_batches * batch_size``; ``r`` are the points on the unit hypercube of each
        event's channel (apply that channel's map to get momenta). ``w`` are event weights:
        within each batch, channel and latent stratification are folded in, so their mean is
        the batch's estimate of the integral.
        """
        if self.state is None:
            raise RuntimeError("train (survey) before sampling")
        _, _, _, sample = self._active
        out = [sample(k, self.state, self.theta)
               for k in jax.random.split(_as_key(key), n_batches)]
        r = jnp.concatenate([b.r for b, _, _ in out])
        c = jnp.concatenate([b.channel for b, _, _ in out])
        w = jnp.concatenate([w for _, w, _ in out])
        return r, c, w

    def unweighted_events(self, key: PRNGKey | int, n_batches: int = 1, *,
                          xs_fraction: float = 1e-3):
        """Unweighted events by accept-reject: ``(r, channel, weight, accepted)``, fixed size
        (``key``: PRNG key or integer seed).

        ``w_max`` is the weight above which ``xs_fraction`` of the cross section lies;
        accepted events carry weight ``max(|w| / w_max, 1) sign(w)`` in units of ``w_max``.
        """
        k_sample, k_accept = jax.random.split(_as_key(key))
        r, c, w = self.sample(k_sample, n_batches)
        w_max = estimators.max_weight_xs_fraction(w, xs_fraction)
        unw = estimators.unweight(k_accept, w, w_max)
        return r, c, unw.weight, unw.accepted


def survey_and_refine(
    trainer: Trainer, *, n_survey: int, n_refine: int
) -> Callable[[PRNGKey, PyTree], tuple[estimators.Combined, TrainState]]:
    """The whole survey + refine run as one pure function ``(key, theta) -> (combined, state)``.

    Training and refine iterations run under ``lax.scan``, so the function can be jitted
    once and ``vmap``-ed over seeds (pull studies) or over physics parameters (scans).
    ``combined`` is the :func:`jaxnis.estimators.average` of the refine iterations.
    """
    if n_survey < 0 or n_refine < 1:
        raise ValueError(f"need n_survey >= 0 and n_refine >= 1, got {n_survey}, {n_refine}")

    def run(key: PRNGKey, theta: PyTree = None):
        k_init, k_train, k_refine = jax.random.split(key, 3)
        state = trainer.init(k_init)

        def train_body(state, k):
            state, _ = trainer.step(k, state, theta)
            return state, None

        state, _ = jax.lax.scan(train_body, state, jax.random.split(k_train, n_survey))

        def refine_body(_, k):
            batch, w, _ = trainer.sample(k, state, theta)
            est = trainer.estimate(w, batch.channel)[0]
            return None, (est.total.value, est.total.error)

        _, (values, errors) = jax.lax.scan(refine_body, None,
                                           jax.random.split(k_refine, n_refine))
        return estimators.average(values, errors), state

    return run


def integrate(
    f: Callable[[Array, PyTree], Array] | ch.MultiChannelIntegrand,
    dim: int | None = None,
    *,
    key: PRNGKey | int = 0,
    n_survey: int = 200,
    n_refine: int = 10,
    **options: Any,
) -> Result:
    """One call: ``integrate(f, dim)`` trains a flow on ``f`` and returns a :class:`Result`.

    ``options`` go to :class:`Integrator`.
    """
    return Integrator(f, dim, **options).integrate(key, n_survey=n_survey, n_refine=n_refine)


__all__ = ["DEFAULTS", "LOW_DIM", "LOW_DIM_DEFAULTS", "Integrator", "Refined", "Result",
           "average_decay", "default_options", "integrate", "survey_and_refine"]
