"""Neural importance sampling: jaxnis vs vegas (Lepage) vs madnis at equal evaluation budgets.

Usage (from the repository root)::

    .venv/bin/python benchmarks/nis.py                        # the suite at 2.5e5 + 5e4 evaluations
    .venv/bin/python benchmarks/nis.py --budget-scale 1       # 5e5 training + 1e5 final
    .venv/bin/python benchmarks/nis.py --integrands camel4 annulus --tools jaxnis vegas

Writes ``benchmarks/results/nis.json`` and ``nis.md`` (``--out``/``--name`` elsewhere).

Every tool gets the same integrand (:mod:`integrands`), the same number of integrand
evaluations for training (``--train-budget``, 5e5) and for the final estimate
(``--final-budget``, 1e5), both times ``--budget-scale`` (default 0.5, so that the whole suite
runs in about 15 minutes on two shared cores), and is judged the same way on its
final sample of events from the frozen sampler:

* **value and error**: the mean of the final weights with its standard error, stratified
  where the tool samples strata with fixed counts (hypercubes of the latent cube inside the
  channels for jaxnis; channels for madnis; channels and VEGAS+ hypercubes for vegas);
* **pull**: ``(value - reference) / sqrt(error^2 + reference_error^2)``;
* **unweighting efficiency**: ``<|w|> / w_max`` over the final event weights ``w`` (scaled so
  that their plain mean is the estimate), with ``w_max`` from
  ``jaxnis.estimators.max_weight_xs_fraction(w, 1e-3)`` for every tool;
* **wall time** of training plus the final sample, compilation included; for jaxnis also the
  time JAX spent tracing, lowering and compiling (``jax.monitoring`` compile events), and
  the wall time of the same run repeated with its programs in JAX's persistent compilation
  cache (``warm``; what a second process, a re-run notebook or a parameter scan pays;
  ``--no-warm-rerun`` skips it). The cache lives in a fresh temporary directory unless the
  process already has one.

The tools:

* **jaxnis**: ``jaxnis.integrate.Integrator`` (``train`` for the survey, ``refine`` for the
  final events) with its defaults for the integrand's dimension
  (``jaxnis.integrate.default_options``): a coupling flow with binary masks
  (``2 ceil(log2 d)`` layers), rational-quadratic splines of 10 bins, conditioners with two
  hidden layers of 32 (three linear layers), Adam at 3e-3 with a cosine decay to a tenth
  over the survey, a forward-KL phase (the first 75% of a single channel's survey) then
  the variance loss (stratified over channels; its gradient with a baseline at the events
  with ``f != 0``), uniform warm-up, buffered training (1 + 3 updates per evaluated batch,
  from a buffer of the last 10 batches); for ``d <= 2`` eight
  layers of 16 bins, Adam at 1e-2, 1 + 7 updates per batch, no KL phase. Each row records
  the layers, bins, widths and learning rate. The final events are stratified over the
  latent cube, inside each channel for a process (two per hypercube,
  ``Integrator(latent_strata=True)``).
  Multi-channel processes as their
  ``MultiChannelIntegrand`` (one flow conditioned on the channel, learned channel weights
  on the single-diagram-enhanced prior).
* **madnis** (PyTorch on the CPU, or on ``--torch-device``, e.g. ``cuda``; the integrand is
  evaluated on the host): ``madnis.integrator.Integrator`` with the same masks (so the
  same number of layers), bins, conditioner size, batch size, learning rate and cosine
  schedule as jaxnis on that integrand; its other defaults (KL
  loss for one channel, stratified variance for several; no buffer); ``batch_size_threshold``
  is 0 so that a training step evaluates exactly one batch (its default, 0.5, draws further
  batches while fewer than half the points are non-zero, which would spend more than the
  budget). Processes are given madnis's multi-channel ``Integrand`` with the same channel
  maps, prior weights and channel-network features (madnis builds one flow per channel).
* **vegas**: ``vegas.Integrator`` with its standard adaptive settings (``alpha = 0.5``,
  ``beta = 0.75``, VEGAS+ stratification), ``--vegas-iterations`` adaptive iterations over the
  training budget, then one frozen iteration (no adaptation) as the final sample. For a
  process, one integrator per channel (``alpha_c f J_c`` on that channel's map, the budget
  split equally), as an event generator that knows the channels would use VEGAS.

The physics processes exist in JAX only: the peers call the same JAX integrand, compiled
once for chunks of 1024 events, from NumPy (:class:`integrands.ProcessEvaluator`); the time
spent in the integrand is reported for every peer, and the compilation separately (it is a
cost of this harness, not of the peers, and is not in their wall time).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
import integrands as itg  # noqa: E402

TOOLS = ("jaxnis", "vegas", "madnis")
TITLE = "Neural importance sampling: jaxnis vs vegas vs madnis"
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "scipy", "vegas", "madnis", "torch")
XS_FRACTION = 1e-3


class Skip(Exception):
    """A tool that cannot run here (not installed)."""


# ------------------------------------------------------------------------------ compile clock

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_compile_seconds = [0.0]
_listening = [False]


def compile_seconds() -> float:
    """Seconds JAX has spent tracing, lowering and compiling in this process so far."""
    if not _listening[0]:
        import jax

        def listener(event, duration, **_):
            if event in _COMPILE_EVENTS:
                _compile_seconds[0] += duration

        jax.monitoring.register_event_duration_secs_listener(listener)
        _listening[0] = True
    return _compile_seconds[0]


# ------------------------------------------------------------------------------ estimates


def stratified_estimate(raw: np.ndarray, strata: np.ndarray) -> tuple[float, float]:
    """``sum_s mean_s(raw)`` and its error ``sqrt(sum_s var_s / n_s)`` over strata ids."""
    raw = np.asarray(raw, np.float64)
    _, inv = np.unique(strata, return_inverse=True)
    n = np.bincount(inv).astype(np.float64)
    s1 = np.bincount(inv, raw)
    s2 = np.bincount(inv, raw * raw)
    mean = s1 / n
    var = np.where(n > 1, (s2 - n * mean**2) / np.maximum(n - 1, 1) / n, 0.0)
    return float(np.sum(mean)), float(math.sqrt(max(np.sum(var), 0.0)))


def channel_event_weights(raw: np.ndarray, channel: np.ndarray) -> np.ndarray:
    """Event weights ``raw * N / N_c`` of channel-stratified samples (their mean is the
    stratified estimate)."""
    _, inv, counts = np.unique(channel, return_inverse=True, return_counts=True)
    return np.asarray(raw, np.float64) * raw.shape[0] / counts[inv]


def unweighting_efficiency(w: np.ndarray) -> tuple[float, float]:
    """``(<|w|> / w_max, w_max)`` with ``w_max = max_weight_xs_fraction(w, 1e-3)``."""
    import jax.numpy as jnp

    from jaxnis import estimators

    w_max = float(estimators.max_weight_xs_fraction(jnp.asarray(w), XS_FRACTION))
    a = np.abs(np.asarray(w, np.float64))
    return (float(a.mean() / w_max) if w_max > 0 else 0.0), w_max


# ------------------------------------------------------------------------------ tools


def shared_settings(case: itg.Integrand, cfg: dict[str, Any]) -> dict[str, Any]:
    """What jaxnis and madnis share for this integrand: the Integrator's defaults for its
    dimension (``jaxnis.integrate.default_options``) with the command line's ``--bins``,
    ``--hidden``, ``--learning-rate`` and the ``flow`` and ``learning_rate`` of
    ``--jaxnis-options`` on top; the masks are binary, ``n_layers`` of them where given."""
    from jaxnis.flows.masks import make_masks
    from jaxnis.integrate import default_options

    defaults = default_options(case.dim, case.n_channels)
    extra = cfg.get("jaxnis_options", {})
    flow = defaults["flow"] | {"masks": "binary"}
    if cfg.get("bins"):
        flow["n_bins"] = cfg["bins"]
    if cfg.get("hidden"):
        flow["hidden"] = tuple(cfg["hidden"])
    flow |= extra.get("flow", {})
    lr = extra.get("learning_rate") or cfg.get("learning_rate") or defaults["learning_rate"]
    masks = make_masks(flow["masks"], case.dim, flow.get("n_layers"))
    return {"flow": flow, "learning_rate": lr, "masks": masks}


def run_jaxnis(case: itg.Integrand, cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    """Survey with ``Integrator.train``, final events with ``Integrator.refine``."""
    import jax

    from jaxnis.integrate import Integrator

    n_steps, n_batches, batch = cfg["train_steps"], cfg["final_batches"], cfg["batch_size"]
    shared = shared_settings(case, cfg)
    options = dict(batch_size=batch, progress=False) | cfg.get("jaxnis_options", {}) | dict(
        learning_rate=shared["learning_rate"], flow=shared["flow"])
    n_iter = cfg.get("refine_iterations", n_batches)

    def once():
        compile0 = compile_seconds()
        t0, cpu0 = time.perf_counter(), time.process_time()
        if case.is_process:
            integ = Integrator(case.process.multichannel(), theta=case.params(), **options)
        else:
            integ = Integrator(case.jax_fn, case.dim, **options)
        k_train, k_final = jax.random.split(jax.random.key(seed))
        history = integ.train(k_train, n_steps)
        t_train = time.perf_counter() - t0
        # The frozen sampler: the final budget in `refine_iterations` batches (one, like
        # vegas's frozen iteration, by default; a batch size other than the survey's compiles
        # a second, sampling-only program, counted in the wall time).
        refined = integ.refine(k_final, n_iter, batch_size=n_batches * batch // n_iter)
        raw = np.asarray(refined.weights, np.float64).reshape(-1)
        stratum = np.asarray(refined.stratum).reshape(-1)  # channels or latent hypercubes
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        return history, raw, stratum, wall, t_train, compile_seconds() - compile0, cpu

    history, raw, stratum, wall, t_train, compile_s, cpu = once()
    warm = {}
    if cfg.get("warm_rerun"):
        # The same run again in this process: its programs come from the persistent
        # compilation cache written by the first (tracing and lowering are repeated).
        again = once()
        if not np.array_equal(again[1], raw):
            raise RuntimeError(f"{case.name}: the warm rerun drew other weights")
        warm = {"wall_warm_s": again[3], "compile_warm_s": again[5]}
    value, error = stratified_estimate(raw, stratum)
    events = channel_event_weights(raw, stratum)
    n_uniform = int(np.sum(~np.asarray(history["use_flow"], bool)))
    return {"value": value, "error": error, "event_weights": events,
            "n_eval_train": n_steps * batch, "n_eval_final": n_batches * batch,
            "wall_s": wall, "train_s": t_train, "compile_s": compile_s, "cpu_s": cpu, **warm,
            "n_nonfinite": int(np.sum(history["n_nonfinite"])) if n_steps else 0,
            "uniform_steps": n_uniform, "train_steps": n_steps, **flow_summary(shared)}


def flow_summary(shared: dict[str, Any]) -> dict[str, Any]:
    """The row's record of the flow size and learning rate that jaxnis and madnis shared."""
    return {"layers": len(shared["masks"]), "bins": shared["flow"]["n_bins"],
            "hidden": list(shared["flow"]["hidden"]), "learning_rate": shared["learning_rate"]}


def _numpy_integrand(case: itg.Integrand, evaluator=None):
    """The peers' integrand ``g(channel, x) -> alpha_c f J_c`` and its timing object."""
    if case.is_process:
        def g(channel, x):
            fj, prior, _ = evaluator(channel, x)
            return fj * prior[np.arange(x.shape[0]), channel]
        return g, evaluator
    counted = itg.CountedFunction(case.numpy_fn)
    return (lambda channel, x: counted(x)), counted


def run_vegas(case: itg.Integrand, cfg: dict[str, Any], seed: int,
              evaluator=None) -> dict[str, Any]:
    """Adaptive iterations over the training budget, then one frozen iteration (per channel)."""
    try:
        import vegas
    except ImportError as exc:
        raise Skip(f"vegas not importable: {exc}") from exc
    g, timer = _numpy_integrand(case, evaluator)
    timer.reset_counters()
    n_ch = case.n_channels
    nitn = cfg["vegas_iterations"]
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    values, variances, event_parts, n_train, n_final = [], [], [], 0, 0
    for c in range(n_ch):
        def fcn(x, c=c):
            return g(np.full(x.shape[0], c), x)

        batch_fcn = vegas.lbatchintegrand(fcn)
        integ = vegas.Integrator([[0.0, 1.0]] * case.dim, ran_array_generator=rng.random)
        before = timer.events
        integ(batch_fcn, nitn=nitn, neval=cfg["train_budget"] / n_ch / nitn)
        n_train += timer.events - before
        # The final sample: one iteration of the frozen map and stratification. Per
        # hypercube h with n_h points, I_h = sum wgt f and var(I_h) = (n_h sum (wgt f)^2 -
        # I_h^2) / (n_h - 1); vegas's own estimate of one non-adapting iteration.
        integ.set(neval=cfg["final_budget"] / n_ch, adapt=False)
        wf_all, value, var = [], 0.0, 0.0
        for x, wgt, hcube in integ.random_batch(yield_hcube=True):
            wf = wgt * fcn(x)
            _, inv = np.unique(hcube, return_inverse=True)
            n_h = np.bincount(inv).astype(np.float64)
            s1 = np.bincount(inv, wf)
            s2 = np.bincount(inv, wf * wf)
            value += float(np.sum(s1))
            var += float(np.sum((n_h * s2 - s1 * s1) / np.maximum(n_h - 1, 1)))
            wf_all.append(wf)
        values.append(value)
        variances.append(max(var, 0.0))
        event_parts.append(np.concatenate(wf_all))
        n_final += event_parts[-1].shape[0]
    wall = time.perf_counter() - t0
    # event weights N wgt f: their plain mean over all N final events is the estimate
    events = np.concatenate(event_parts) * n_final
    return {"value": float(sum(values)), "error": float(math.sqrt(sum(variances))),
            "event_weights": events, "n_eval_train": int(n_train), "n_eval_final": int(n_final),
            "wall_s": wall, "integrand_s": timer.seconds,
            "channel_values": values if n_ch > 1 else None}


def run_madnis(case: itg.Integrand, cfg: dict[str, Any], seed: int,
               evaluator=None) -> dict[str, Any]:
    """madnis with the same flow size, batch and learning-rate schedule, on the CPU or on
    ``cfg["torch_device"]`` (the integrand is evaluated on the host either way: its points
    are copied there and its values back, as for an integrand outside PyTorch)."""
    try:
        import torch
        from madnis.integrator import Integrand, Integrator
    except ImportError as exc:
        raise Skip(f"madnis/torch not importable: {exc}") from exc
    device = torch.device(cfg.get("torch_device", "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Skip(f"torch device {device} requested but torch.cuda.is_available() is False")
    torch.manual_seed(seed)
    if cfg.get("torch_threads"):
        torch.set_num_threads(cfg["torch_threads"])
    dtype = torch.get_default_dtype()
    n_steps, batch = cfg["train_steps"], cfg["batch_size"]
    n_final = cfg["final_batches"] * batch
    shared = shared_settings(case, cfg)
    lr, hidden = shared["learning_rate"], shared["flow"]["hidden"]
    if case.is_process:
        timer = evaluator

        def function(x, channels):
            fj, prior, features = evaluator(channels.cpu().numpy(), x.detach().cpu().numpy())
            return tuple(torch.from_numpy(a).to(device=x.device, dtype=dtype)
                         for a in (fj, features, prior))

        integrand = Integrand(function, case.dim, channel_count=case.n_channels,
                              remapped_dim=case.process.n_features,
                              has_channel_weight_prior=True)
    else:
        timer = itg.CountedFunction(case.numpy_fn)

        def integrand(x):
            return torch.from_numpy(timer(x.detach().cpu().numpy())).to(device=x.device,
                                                                        dtype=dtype)
    timer.reset_counters()
    flow_kwargs = {"condition_masks": torch.from_numpy(shared["masks"]),
                   "layers": len(hidden) + 1, "units": hidden[0],
                   "bins": shared["flow"]["n_bins"]}
    t0 = time.perf_counter()
    integrator = Integrator(
        integrand, dims=case.dim, flow_kwargs=flow_kwargs, batch_size=batch,
        learning_rate=lr, batch_size_threshold=0.0,
        scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(n_steps, 1), eta_min=0.1 * lr),
        device=device)
    integrator.train(n_steps)
    n_train = timer.events
    samples = integrator.sample(n_final)
    events = samples.weights.detach().cpu().numpy().astype(np.float64)
    wall = time.perf_counter() - t0
    if case.is_process:
        channel = samples.channels.cpu().numpy()
        _, inv, counts = np.unique(channel, return_inverse=True, return_counts=True)
        value, error = stratified_estimate(events * counts[inv] / events.shape[0], channel)
    else:
        value, error = float(events.mean()), float(events.std(ddof=1) / math.sqrt(len(events)))
    return {"value": value, "error": error, "event_weights": events,
            "n_eval_train": int(n_train), "n_eval_final": int(timer.events - n_train),
            "wall_s": wall, "integrand_s": timer.seconds, "train_steps": n_steps,
            **flow_summary(shared)}


RUNNERS = {"jaxnis": run_jaxnis, "vegas": run_vegas, "madnis": run_madnis}


# ------------------------------------------------------------------------------ main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--integrands", nargs="+", default=list(itg.DEFAULT_SUITE),
                   choices=sorted(itg.FACTORIES))
    p.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    p.add_argument("--train-budget", type=float, default=5e5,
                   help="integrand evaluations for training (before --budget-scale)")
    p.add_argument("--final-budget", type=float, default=1e5,
                   help="integrand evaluations of the final estimate (before --budget-scale)")
    p.add_argument("--budget-scale", type=float, default=0.5,
                   help="multiplies both budgets; 0.5 (2.5e5 + 5e4) keeps the whole suite near "
                        "15 minutes on 2 shared cores, 1 gives the issue's 5e5 + 1e5")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--learning-rate", type=float, default=None,
                   help="Adam learning rate of jaxnis and madnis (default: jaxnis's default for "
                        "the integrand's dimension, jaxnis.integrate.default_options)")
    p.add_argument("--bins", type=int, default=None,
                   help="spline bins of jaxnis and madnis (default: jaxnis's default)")
    p.add_argument("--hidden", type=int, nargs="+", default=None,
                   help="conditioner hidden widths (madnis: layers = len + 1, units = first; "
                        "default: jaxnis's default)")
    p.add_argument("--vegas-iterations", type=int, default=10)
    p.add_argument("--refine-iterations", type=int, default=1,
                   help="jaxnis's final sample in this many refine batches (of the final "
                        "budget over this number; default one, like vegas's frozen "
                        "iteration: larger batches hold finer latent strata)")
    p.add_argument("--jaxnis-options", type=json.loads, default={},
                   help='extra jaxnis Integrator options as JSON, e.g. \'{"loss": "kl"}\'')
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch intra-op threads for madnis (0: torch's default, one per core)")
    p.add_argument("--torch-device", default="cpu",
                   help='torch device for madnis, e.g. "cuda" on a GPU machine (default cpu)')
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-warm-rerun", dest="warm_rerun", action="store_false",
                   help="skip jaxnis's second run from the persistent compilation cache")
    p.add_argument("--threads", type=int, default=None, help="pin to this many cores")
    p.add_argument("--note", action="append", default=[],
                   help="a line added to the notes of the report (repeatable)")
    p.add_argument("--merge", type=Path, nargs="+", default=None,
                   help="join these result JSONs (parts of the suite, same settings) into "
                        "<out>/<name>.json and .md instead of running")
    p.add_argument("--out", type=Path, default=_common.RESULTS_DIR)
    p.add_argument("--name", default="nis")
    return p.parse_args(argv)


def _fmt(x, spec=".3g"):
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def summarize(case: itg.Integrand, tool: str, out: dict[str, Any]) -> dict[str, Any]:
    """The row of one (integrand, tool): metrics from the raw output."""
    w = out.pop("event_weights")
    eff, w_max = unweighting_efficiency(w)
    value, error = out["value"], out["error"]
    sigma = math.sqrt(error**2 + case.reference_error**2)
    row = {"integrand": case.name, "tool": tool, **out,
           "rel_error": error / abs(value) if value else math.inf,
           "pull": (value - case.reference) / sigma if sigma > 0 else math.inf,
           "rel_deviation": (value - case.reference) / case.reference,
           "unweighting_efficiency": eff, "w_max": w_max,
           "n_eval": out["n_eval_train"] + out["n_eval_final"],
           "n_nonfinite_final": int(np.sum(~np.isfinite(w)))}
    return row


def targets(rows: list[dict[str, Any]], cases: dict[str, itg.Integrand]) -> list[dict]:
    """Per integrand: jaxnis / best peer ratios of relative error and unweighting efficiency,
    and jaxnis / madnis wall time (the issue's targets: <= 0.5, >= 1.5, <= 0.1)."""
    out = []
    for name, case in cases.items():
        by_tool = {r["tool"]: r for r in rows if r["integrand"] == name}
        if "jaxnis" not in by_tool:
            continue
        j = by_tool["jaxnis"]
        peers = [r for t, r in by_tool.items() if t != "jaxnis"]
        entry = {"integrand": name, "structure": case.structure}
        if peers:
            best_err = min(peers, key=lambda r: r["rel_error"])
            best_eff = max(peers, key=lambda r: r["unweighting_efficiency"])
            entry |= {
                "rel_error_ratio": j["rel_error"] / best_err["rel_error"],
                "best_error_peer": best_err["tool"],
                "efficiency_ratio": (j["unweighting_efficiency"]
                                     / best_eff["unweighting_efficiency"]
                                     if best_eff["unweighting_efficiency"] > 0 else math.inf),
                "best_efficiency_peer": best_eff["tool"],
            }
            # A result many of its own errors off the reference is wrong, however small its
            # error: no target is met with it.
            entry["jaxnis_consistent"] = abs(j["pull"]) <= 5
            entry["error_target_met"] = (entry["rel_error_ratio"] <= 0.5
                                         and entry["jaxnis_consistent"])
            entry["efficiency_target_met"] = (entry["efficiency_ratio"] >= 1.5
                                              and entry["jaxnis_consistent"])
        if "madnis" in by_tool:
            entry["wall_ratio_vs_madnis"] = j["wall_s"] / by_tool["madnis"]["wall_s"]
            entry["wall_target_met"] = entry["wall_ratio_vs_madnis"] <= 0.1
            if "wall_warm_s" in j:
                entry["wall_warm_ratio_vs_madnis"] = (j["wall_warm_s"]
                                                      / by_tool["madnis"]["wall_s"])
        out.append(entry)
    return out


def shared_machine(load_start: float, load_end: float, threads: int) -> bool:
    """Whether other work shared the cores: a 1-minute load average above what this run puts
    on them itself (up to ``threads`` busy cores; at the start, a previous part of the suite
    run just before), by more than half a core."""
    return max(load_start, load_end) > threads + 0.5


def markdown(payload: dict[str, Any]) -> list[str]:
    s = payload["settings"]
    rows = payload["rows"]
    intro = (
        f"Equal budgets: {s['train_budget']:.3g} integrand evaluations for training and "
        f"{s['final_budget']:.3g} for the final estimate per integrand and tool "
        f"(defaults 5e5 / 1e5 times budget scale {s['budget_scale']}); one seed ({s['seed']}). "
        "Value and error from the final sample of the frozen sampler; pull against the "
        "reference; unweighting efficiency <|w|>/w_max with w_max = "
        "`max_weight_xs_fraction(w, 1e-3)` on every tool's final event weights; wall time of "
        "training + final sample including compilation (jaxnis: its JAX compile time in "
        "brackets; `warm`: the same run again with its compiled programs in JAX's "
        "persistent cache, as in a second process)."
    )
    if payload["shared_machine"]:
        load = payload["machine"].get("load_average_1_5_15min")
        intro += (f"\n\n**The {payload['machine']['usable_cores']} cores were shared with other "
                  f"work while measuring** (1-minute load average {load} at the start, "
                  f"{payload.get('load_average_end')} at the end): wall times are noisy and "
                  "pessimistic, compare them within a row rather than across runs; `cpu s` is "
                  "the process CPU time (all threads) of each run.")
    head = ["integrand", "tool", "value", "error", "rel. error", "pull", "unw. eff.",
            "evals train", "evals final", "wall s", "cpu s", "integrand s",
            "flow: layers x bins, lr"]
    body = []
    for r in rows:
        wall = _fmt(r["wall_s"], ".1f")
        if r["tool"] == "jaxnis":
            wall += f" ({r['compile_s']:.1f})"
            if "wall_warm_s" in r:
                wall += f", warm {r['wall_warm_s']:.1f}"
        body.append([r["integrand"], r["tool"], _fmt(r["value"], ".7g"), _fmt(r["error"], ".2g"),
                     _fmt(r["rel_error"], ".2e"), _fmt(r["pull"], "+.2f"),
                     _fmt(r["unweighting_efficiency"], ".3f"), _common.si(r["n_eval_train"]),
                     _common.si(r["n_eval_final"]), wall, _fmt(r["cpu_s"], ".1f"),
                     _fmt(r.get("integrand_s"), ".1f"),
                     f"{r['layers']} x {r['bins']}, {r['learning_rate']:g}" if "layers" in r
                     else "-"])
    table = _common.markdown_table(head, body, "llrrrrrrrrrrl")
    refs = _common.markdown_table(
        ["integrand", "d", "channels", "structure", "reference", "ref. error", "source",
         "description"],
        [[c["name"], c["dim"], c["n_channels"], c["structure"], f"{c['reference']:.10g}",
          f"{c['reference_error']:.2g}", c["reference_source"], c["description"]]
         for c in payload["integrands"]], "lrrllrll")
    tg = payload["targets"]
    tgt = _common.markdown_table(
        ["integrand", "structure", "rel. error jaxnis / best peer (<= 0.5)",
         "unw. eff. jaxnis / best peer (>= 1.5)", "wall jaxnis / madnis (<= 0.1)",
         "warm-cache wall jaxnis / madnis"],
        [[t["integrand"], t["structure"],
          f"{_fmt(t.get('rel_error_ratio'), '.3f')} ({t.get('best_error_peer', '-')})"
          + ("" if t.get("jaxnis_consistent", True) else " **wrong: pull beyond 5 sigma**"),
          f"{_fmt(t.get('efficiency_ratio'), '.3f')} ({t.get('best_efficiency_peer', '-')})",
          _fmt(t.get("wall_ratio_vs_madnis"), ".2f"),
          _fmt(t.get("wall_warm_ratio_vs_madnis"), ".2f")] for t in tg], "llrrrr")
    corr = [t for t in tg if t["structure"] == "correlated" and "rel_error_ratio" in t]
    names = ", ".join(t["integrand"] for t in corr)
    n_err = sum(t["error_target_met"] for t in corr)
    n_eff = sum(t["efficiency_target_met"] for t in corr)
    n_wall = sum(bool(t.get("wall_target_met")) for t in tg)
    met = (f"On the integrands with non-axis-aligned peaks ({names}): relative-error target "
           f"met {n_err}/{len(corr)}, unweighting-efficiency target met {n_eff}/{len(corr)}; "
           f"wall-time target met {n_wall}/{len(tg)} integrands." if corr else "")
    sections = [intro, "## Results\n\n" + table,
                "## Targets (reported, not asserted)\n\n" + tgt + "\n\n" + met,
                "## Integrands\n\n" + refs,
                "## What each tool was given\n\n" + "\n".join(f"- {x}" for x in payload["tools"]),
                "## Metadata\n\n" + _common.metadata_markdown(payload)]
    if payload.get("skipped_tools"):
        sections.append("Skipped tools: " + ", ".join(
            f"{k} ({v})" for k, v in payload["skipped_tools"].items()))
    if payload.get("notes"):
        sections.append("## Notes\n\n" + "\n".join(f"- {n}" for n in payload["notes"]))
    return sections


TOOL_NOTES = {
    "jaxnis": "jaxnis: `Integrator(f or process.multichannel(), batch_size, learning_rate, "
              "flow={n_bins, hidden, masks='binary', n_layers})` with "
              "`default_options(dim)` (per row: layers, bins, learning rate), "
              "`.train(key, steps)` then "
              "`.refine(key, iterations, batch_size)` (the frozen sampler: the final budget "
              "in `refine_iterations` batches, one by default); float32; variance loss "
              "(stratified over channels; its gradient with a baseline at the events with "
              "f != 0), uniform warm-up, learned channel weights on the "
              "prior; buffered training (the Integrator default: each evaluated batch serves "
              "1 + 3 Adam updates, 1 + 7 for d <= 2, the extra ones on batches drawn from the "
              "last 10 batches with importance ratios); a forward-KL phase over the first 75% "
              "of a single channel's survey for d > 2; Adam with cosine decay to 0.1 x lr over "
              "all updates; final events stratified over the latent cube (inside each "
              "channel), two per hypercube (the error is the stratified one; one refine "
              "batch of 5e4 holds 158 x 158 hypercubes in 2-d).",
    "vegas": "vegas: `vegas.Integrator` defaults (alpha 0.5, beta 0.75, VEGAS+ "
             "stratification) on the NumPy integrand (float64), adaptive iterations over the "
             "training budget, then one frozen iteration (`adapt=False`) for the final sample; "
             "processes: one integrator per channel on `alpha_c f J_c` (JAX integrand called "
             "from NumPy), budget split equally.",
    "madnis": "madnis: `madnis.integrator.Integrator` on the settings' `torch_device` (the CPU "
              "unless stated; the integrand on the host) in float32, the same masks "
              "and layers, bins, conditioner (layers = hidden + 1, units 32), batch size, "
              "learning rate and "
              "cosine schedule (`CosineAnnealingLR`, eta_min = 0.1 lr); its defaults otherwise "
              "(KL loss single-channel, stratified variance multi-channel, no buffer, "
              "trained channel-weight network) except `batch_size_threshold=0` (one batch per "
              "step, so the budget is kept); processes through madnis's multi-channel "
              "`Integrand` (x, channel) -> (f J_c, features, prior), one flow per channel; "
              "toy integrands: the NumPy function through `torch.from_numpy`.",
}


def merge(paths: list[Path], out: Path, name: str, notes: list[str], log=print) -> dict:
    """Join runs of parts of the suite (same settings, e.g. run side by side as separate
    processes) into one report: rows, integrands and notes concatenated, targets recomputed."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    settings = {k: v for k, v in parts[0]["settings"].items() if k != "integrands"}
    for p, part in zip(paths, parts, strict=True):
        other = {k: v for k, v in part["settings"].items() if k != "integrands"}
        if other != settings:
            raise ValueError(f"{p}: settings differ from {paths[0]}")
    rows = [r for part in parts for r in part["rows"]]
    cases = {c["name"]: itg.get(c["name"]) for part in parts for c in part["integrands"]}
    first = parts[0]
    payload = dict(
        first, settings=first["settings"], rows=rows,
        integrands=[c.summary() for c in cases.values()], targets=targets(rows, cases),
        total_s=sum(part["total_s"] for part in parts),
        shared_machine=any(
            shared_machine(part["machine"].get("load_average_1_5_15min", [0])[0],
                           part["load_average_end"][0], part["machine"]["usable_cores"])
            for part in parts),
        load_average_end=[part["load_average_end"] for part in parts],
        notes=[*first["notes"],
               *(n for part in parts[1:] for n in part["notes"] if n not in first["notes"]),
               f"Merged from {len(parts)} runs of parts of the suite ("
               + "; ".join(f"{', '.join(c['name'] for c in part['integrands'])}: "
                           f"{part['date']}, {part['total_s']:.0f} s" for part in parts)
               + ").", *notes],
    )
    path, _ = _common.write_report(out, name, TITLE, payload, markdown(payload))
    log(f"wrote {path} and .md")
    return payload


def persistent_cache(jax) -> str:
    """JAX's persistent compilation cache for the warm reruns: the one the process already
    uses (then the first run may hit it too), else ``jaxnis.compile_cache.cache_options`` in a
    fresh temporary directory, so that the first run compiles everything."""
    own = jax.config.jax_compilation_cache_dir
    if own:
        return f"the process's own cache: {own}"
    import tempfile

    from jaxnis.compile_cache import cache_options

    for name, value in cache_options(tempfile.mkdtemp(prefix="jaxnis-nis-")).items():
        jax.config.update(name, value)
    return ("a fresh temporary directory (jaxnis.compile_cache.cache_options: programs that "
            "compiled in >= 1 s)")


def main(argv=None, log=print) -> dict[str, Any]:
    """Run the benchmark; write ``<out>/<name>.json`` and ``.md``; return the payload."""
    args = parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out, args.name, args.note, log)
    threads = _common.limit_cores(args.threads)
    host_memory = _common.reuse_host_memory()  # before JAX's first computation
    import jax

    machine = _common.machine_info()
    scale = args.budget_scale
    steps = max(1, round(args.train_budget * scale / args.batch_size))
    final_batches = max(2, round(args.final_budget * scale / args.batch_size))
    if args.refine_iterations < 1 or (final_batches * args.batch_size) % args.refine_iterations:
        raise SystemExit(f"--refine-iterations {args.refine_iterations} must divide the final "
                         f"budget of {final_batches * args.batch_size} events")
    cfg = {"train_budget": steps * args.batch_size,
           "final_budget": final_batches * args.batch_size,
           "budget_scale": scale, "batch_size": args.batch_size, "train_steps": steps,
           "final_batches": final_batches, "learning_rate": args.learning_rate,
           "lr_schedule": "cosine decay to 0.1 x lr over the training steps (Adam)",
           "bins": args.bins, "hidden": args.hidden,
           "flow": "jaxnis.integrate.default_options(dim) unless bins, hidden or learning_rate "
                   "are given; binary masks; madnis gets the same (per row: layers, bins, "
                   "hidden, learning_rate)",
           "vegas_iterations": args.vegas_iterations, "jaxnis_options": args.jaxnis_options,
           "refine_iterations": args.refine_iterations,
           "warm_rerun": args.warm_rerun and "jaxnis" in args.tools,
           "seed": args.seed, "threads": threads, "torch_threads": args.torch_threads,
           "torch_device": args.torch_device,
           "xs_fraction": XS_FRACTION,
           "jax_backend": jax.default_backend(),
           "x64": bool(jax.config.read("jax_enable_x64")),
           "peer_process_chunk": 1024, "host_memory": host_memory}
    if cfg["warm_rerun"]:
        cfg["compilation_cache"] = persistent_cache(jax)
    root = Path(__file__).resolve().parents[1]
    source = _common.git_state({p: root / p for p in (
        "benchmarks/nis.py", "benchmarks/integrands.py", "jaxnis/integrate.py",
        "jaxnis/train.py", "jaxnis/flows/flow.py")})  # at the start: the code that runs
    cases = {name: itg.get(name) for name in args.integrands}
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    evaluator_compile: dict[str, float] = {}
    log(f"host memory: {host_memory}")
    log(f"budgets: train {cfg['train_budget']} ({steps} x {args.batch_size}), final "
        f"{cfg['final_budget']}; tools {args.tools}")
    t_start = time.perf_counter()
    for name, case in cases.items():
        evaluator = None
        if case.is_process and any(t != "jaxnis" for t in args.tools):
            evaluator = itg.ProcessEvaluator(case.process, case.params(), chunk=1024)
            evaluator_compile[name] = evaluator.warm_up()
        for tool in args.tools:
            if tool in skipped:
                continue
            cpu0 = time.process_time()
            try:
                if tool == "jaxnis":
                    out = run_jaxnis(case, cfg, args.seed)
                else:
                    out = RUNNERS[tool](case, cfg, args.seed, evaluator)
            except Skip as exc:
                skipped[tool] = str(exc)
                log(f"skipping {tool}: {exc}")
                continue
            # all threads of this process (jaxnis: of its first run, not the warm rerun)
            out.setdefault("cpu_s", time.process_time() - cpu0)
            row = summarize(case, tool, out)
            rows.append(row)
            log(f"{name:12s} {tool:7s} {row['value']:.7g} +- {row['error']:.2g} "
                f"(pull {row['pull']:+.2f}, rel {row['rel_error']:.2e}) "
                f"eff {row['unweighting_efficiency']:.3f} evals {row['n_eval']} "
                f"wall {row['wall_s']:.1f} s cpu {row['cpu_s']:.1f} s")
    total = time.perf_counter() - t_start
    load_end = [round(v, 2) for v in __import__("os").getloadavg()]
    shared = shared_machine(machine.get("load_average_1_5_15min", [0])[0], load_end[0],
                            threads)
    notes = [
        "Peers' wall times exclude compiling the JAX process integrand for NumPy callers "
        "(a cost of this harness): " + (", ".join(f"{k} {v:.1f} s"
                                                   for k, v in evaluator_compile.items())
                                        or "no process integrands") + ".",
        "`integrand s`: seconds the peers spent inside the integrand (NumPy function, or the "
        "JAX process integrand called from NumPy in chunks of 1024 events).",
        "jaxnis wall time includes its compilation (in brackets: JAX tracing + lowering + "
        "backend compilation during the run).",
        f"Whole run: {total:.0f} s.",
        "vegas's `neval` is an upper bound (it fills whole hypercubes), so vegas used "
        "slightly fewer evaluations than the budget (see the evaluation columns). Its final "
        "estimate, computed here per hypercube from `random_batch(yield_hcube=True)` to get "
        "the event weights, equals vegas's own `integ(f, nitn=1, adapt=False)` result for "
        "the same random numbers (checked in tests/test_benchmark_nis_smoke.py).",
        *args.note,
    ]
    payload = {
        "benchmark": "nis", "date": _common.utc_now(), "machine": machine,
        "versions": _common.versions(PACKAGES), "settings": cfg,
        "source": source,
        "integrands": [c.summary() for c in cases.values()],
        "tools": [TOOL_NOTES[t] for t in args.tools if t not in skipped],
        "skipped_tools": skipped, "rows": rows, "targets": targets(rows, cases),
        "peer_integrand_compile_s": evaluator_compile, "total_s": total,
        "shared_machine": shared, "load_average_end": load_end, "notes": notes,
    }
    path, _ = _common.write_report(args.out, args.name, TITLE, payload, markdown(payload))
    log(f"wrote {path} and .md ({total:.0f} s)")
    return payload


if __name__ == "__main__":
    main()
