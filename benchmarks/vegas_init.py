"""Which VEGAS start trains a flow better: spline initialisation or the grid as a fixed layer.

At an equal integrand budget per run (``--budget`` evaluations for training, VEGAS included,
then ``--eval-points`` fresh points to measure the trained sampler), these samplers are
compared on each integrand, over ``--seeds`` seeds:

* ``flow``: the flow from the identity, trained on the whole budget (no VEGAS);
* ``spline@f``: a fraction ``f`` of the budget (``--vegas-frac``, several allowed) on
  per-channel VEGAS (:func:`jaxnis.pretrain.pretrain_channels`, ``--vegas-iterations``
  iterations), then the flow started as the grid (:func:`jaxnis.pretrain.flow_params_from_grid`)
  and trained on the rest;
* ``grid@f``: the same VEGAS run, then ``r = G_c(F(u))`` with the grid as a fixed last layer
  and the flow, from the identity, trained on the rest (:func:`jaxnis.pretrain.with_grid`);
* ``vegas``: VEGAS alone on the whole budget (the grid, no flow).

All runs use :func:`jaxnis.train.make_trainer` directly (variance loss, Adam with a cosine
decay to 0.1x over the steps actually taken, binary masks, rational-quadratic splines whose
slope parameters start at 1e-3 rather than exactly 0, see :func:`off_zero_slopes`), the
whole run (VEGAS, flow start, training, evaluation) as one jitted function per sampler kind,
so compilation is shared between seeds and between the flow and spline runs. Processes
(Drell-Yan) use a conditional flow with a one-hot channel context, per-channel grids and a
learned channel-weight correction.

The figure of merit is the relative standard deviation of the weights,
``sigma_w / I = rel_error * sqrt(N_eval)`` (stratified over channels for a process), i.e.
the relative error one would get from ``N`` points is ``(sigma_w / I) / sqrt(N)``.

A run whose estimate is more than 5 of its own errors from the reference is marked *missed*
(it lost part of the integrand, e.g. a camel peak; its small spread means nothing).

Run: ``.venv/bin/python benchmarks/vegas_init.py`` (writes ``results/vegas_init.{json,md}``;
about 40 minutes on 2 shared cores, mostly compilation); ``--render-only`` rewrites the
markdown from the JSON.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
import integrands as itg  # noqa: E402

PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy")
TITLE = "VEGAS start of a flow: spline initialisation vs grid layer"
#: A run whose estimate is further than this many of its own errors from the reference has
#: lost part of the integrand (its weight spread says nothing about it).
MISS_PULL = 5.0


def suite() -> dict[str, Any]:
    """The integrands: camels (axis-aligned), a rotated Gaussian and the annulus
    (correlated), Drell-Yan (3 channels)."""
    return {
        "camel4_a0.1": lambda: itg.camel(4, 0.1),
        "camel4_a0.2": lambda: itg.camel(4, 0.2),
        "camel8_a0.1": lambda: itg.camel(8, 0.1),
        "camel8_a0.2": lambda: itg.camel(8, 0.2),
        "gauss4": lambda: itg.rotated_gaussian(dim=4, sigma_min=0.1),
        "annulus": itg.annulus,
        "drell_yan": itg.drell_yan,
    }


def off_zero_slopes(flow, params, eps: float = 1e-3):
    """Add ``eps`` to the output biases of every spline's knot-slope parameters.

    The rational-quadratic slope map ``raw -> d`` has a zero derivative at exactly
    ``raw = 0``, where an identity-initialised layer starts, so those slopes would never
    train. As the Integrator does, every method here starts them at ``eps`` instead (knot
    slopes ``1 + 7e-4``: the same start to that accuracy; a spline start's own slopes move
    by the same ``eps``).
    """
    k, n_par = flow.transform.n_bins, flow.transform.n_params
    out = params["layers"]["params"]["output"]
    bias = out["bias"].reshape(out["bias"].shape[0], -1, n_par)
    bias = bias.at[..., 2 * k:].add(eps).reshape(out["bias"].shape)
    net = dict(params["layers"]["params"], output=dict(out, bias=bias))
    return dict(params, layers=dict(params["layers"], params=net))


def build_runs(spec, args):
    """Jitted run functions for one integrand: ``(pretrain, run_flow, run_grid)``."""
    import jax
    import jax.numpy as jnp
    import optax

    from jaxnis import channels as ch
    from jaxnis import estimators, pretrain
    from jaxnis.flows import make_flow
    from jaxnis.train import make_trainer, single_channel

    if spec.is_process:
        integrand = spec.process.multichannel()
    else:
        integrand = single_channel(spec.jax_fn, spec.dim)
    theta = spec.params()
    n_ch = integrand.n_channels
    flow = make_flow(integrand.dim, n_bins=args.bins, hidden=tuple(args.hidden),
                     context_dim=n_ch if n_ch > 1 else 0)
    cw = ch.make_channel_weights(n_ch, integrand.n_features) if n_ch > 1 else None
    optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=args.learning_rate)
    n_batches = args.eval_points // args.batch_size

    def trainer_for(sampler):
        return make_trainer(integrand, sampler, optimizer, batch_size=args.batch_size,
                            channel_weights=cw)

    def train_and_measure(trainer, key, flow_params, n_steps):
        k_init, k_train, k_eval = jax.random.split(key, 3)
        state = trainer.init(k_init, off_zero_slopes(flow, flow_params))
        steps = jnp.maximum(n_steps, 1).astype(jnp.float32)

        def body(i, carry):
            state, key = carry
            key, k = jax.random.split(key)
            # Cosine decay from lr to 0.1 lr over the n_steps actually taken (traced, so
            # runs of different lengths share one compiled program).
            lr = args.learning_rate * (0.1 + 0.45 * (1.0 + jnp.cos(jnp.pi * i / steps)))
            hp = dict(state.opt_state.hyperparams, learning_rate=lr)
            state = state._replace(opt_state=state.opt_state._replace(hyperparams=hp))
            state, _ = trainer.step(k, state, theta)
            return state, key

        state, _ = jax.lax.fori_loop(0, n_steps, body, (state, k_train))

        def measure(_, k):
            batch, w, _ = trainer.sample(k, state, theta)
            est = estimators.estimate_channels(w, batch.channel, n_ch)
            return None, (est.total.value, est.total.error)

        _, (values, errors) = jax.lax.scan(measure, None, jax.random.split(k_eval, n_batches))
        return values, errors

    @jax.jit
    def run_flow(key, flow_params, n_steps):
        return train_and_measure(trainer_for(pretrain.as_sampler(flow)), key, flow_params,
                                 n_steps)

    @jax.jit
    def run_grid(key, grids, n_steps):
        k_flow, k_run = jax.random.split(key)
        trainer = trainer_for(pretrain.with_grid(flow, grids))
        return train_and_measure(trainer, k_run, flow.init(k_flow), n_steps)

    pretrain_jit = jax.jit(pretrain.pretrain_channels, static_argnums=(1, 3, 4, 5))

    def pre(key, n_iter, n_per_iter):
        return pretrain_jit(key, integrand, theta, n_iter, n_per_iter, args.vegas_bins,
                            args.vegas_alpha)

    return integrand, flow, pre, run_flow, run_grid


def method_names(fracs) -> list[str]:
    """``flow``, then ``spline@f`` and ``grid@f`` per VEGAS fraction ``f``, then ``vegas``."""
    names = ["flow"]
    for f in fracs:
        names += [f"spline@{f:g}", f"grid@{f:g}"]
    return [*names, "vegas"]


def run_integrand(name, spec, args, log) -> dict[str, Any]:
    import jax

    from jaxnis import pretrain

    integrand, flow, pre, run_flow, run_grid = build_runs(spec, args)
    spline_start = jax.jit(pretrain.flow_params_from_grid, static_argnums=0)
    n_ch = integrand.n_channels
    budget, batch = args.budget, args.batch_size
    steps_full = budget // batch
    plan: dict[str, dict[str, int]] = {"flow": {"vegas_iter": 0, "points_per_iter": 0,
                                                "steps": steps_full}}
    for f in args.vegas_frac:
        n_per_iter = int(f * budget) // (args.vegas_iterations * n_ch)
        n_vegas = n_ch * args.vegas_iterations * n_per_iter
        for kind in ("spline", "grid"):
            plan[f"{kind}@{f:g}"] = {"vegas_iter": args.vegas_iterations,
                                     "points_per_iter": n_per_iter,
                                     "steps": (budget - n_vegas) // batch}
    # VEGAS alone: points per iteration of the largest fraction, as many iterations as fit.
    n_per_iter = int(max(args.vegas_frac) * budget) // (args.vegas_iterations * n_ch)
    plan["vegas"] = {"vegas_iter": budget // (n_ch * n_per_iter),
                     "points_per_iter": n_per_iter, "steps": 0}
    for p in plan.values():
        p["evaluations"] = n_ch * p["vegas_iter"] * p["points_per_iter"] + p["steps"] * batch
    methods = list(plan)
    out: dict[str, Any] = {"integrand": spec.summary(), "n_channels": n_ch, "plan": plan,
                           "methods": {}}
    rows: dict[str, list] = {m: [] for m in methods}
    times: dict[str, list] = {m: [] for m in methods}
    for seed in range(args.seeds):
        key = jax.random.fold_in(jax.random.key(args.seed), seed)
        k_pre, k_run = jax.random.split(key)
        grids: dict[tuple[int, int], Any] = {}
        for method in methods:
            p = plan[method]
            t0 = time.perf_counter()
            if p["vegas_iter"]:
                # The spline and grid starts of one fraction share the same VEGAS run.
                cfg = (p["vegas_iter"], p["points_per_iter"])
                if cfg not in grids:
                    grids[cfg] = pre(k_pre, *cfg).grids
                g = grids[cfg]
            kind = method.split("@")[0]
            if kind == "flow":
                res = run_flow(k_run, flow.init(k_run), p["steps"])
            elif kind == "spline":
                res = run_flow(k_run, spline_start(flow, flow.init(k_run), g), p["steps"])
            else:  # grid layer, or VEGAS alone (a grid layer with an untrained flow)
                res = run_grid(k_run, g, p["steps"])
            values, errors = (np.asarray(a, np.float64) for a in jax.block_until_ready(res))
            seconds = time.perf_counter() - t0
            value = float(np.mean(values))
            error = float(math.sqrt(np.mean(errors**2) / values.size))
            rel_std = error / abs(value) * math.sqrt(values.size * batch)
            pull = (value - spec.reference) / math.hypot(error, spec.reference_error)
            rows[method].append({"seed": seed, "value": value, "error": error,
                                 "rel_std": rel_std, "pull": pull,
                                 "missed": bool(abs(pull) > MISS_PULL)})
            times[method].append(seconds)
            log(f"  {name:12s} seed {seed} {method:11s} sigma_w/I = {rel_std:9.4g}  "
                f"pull {pull:+8.2f}  ({seconds:.1f} s)")
    for method in methods:
        rel = np.array([r["rel_std"] for r in rows[method]])
        out["methods"][method] = {
            "runs": rows[method],
            "rel_std_geomean": float(np.exp(np.mean(np.log(rel)))),
            "rel_std_min": float(rel.min()), "rel_std_max": float(rel.max()),
            "n_missed": int(sum(r["missed"] for r in rows[method])),
            "seconds_first_with_compile": times[method][0],
            "seconds_median_after_first": float(np.median(times[method][1:]))
            if len(times[method]) > 1 else float("nan"),
        }
    return out


def _cell(m) -> str:
    text = f"{m['rel_std_geomean']:.3g} [{m['rel_std_min']:.3g}, {m['rel_std_max']:.3g}]"
    return text + (f" **{m['n_missed']} missed**" if m["n_missed"] else "")


def render(payload) -> str:
    sections = [_common.metadata_markdown(payload["meta"])]
    cfg = payload["meta"]["settings"]
    fracs = cfg["vegas_frac"]
    methods = method_names(fracs)
    sections.append(
        f"Training budget {cfg['budget']} integrand evaluations per run, VEGAS included "
        f"(`spline@f` and `grid@f` spend a fraction f on {cfg['vegas_iterations']} VEGAS "
        f"iterations per channel, `vegas` spends it all on VEGAS), then {cfg['eval_points']} "
        f"fresh points to measure the sampler; {cfg['seeds']} seeds. `sigma_w/I` is the "
        "relative standard deviation of the weights (stratified over channels): the relative "
        "error from N points is `sigma_w/I / sqrt(N)`. Geometric mean over seeds [min, max]; "
        f"lower is better. A run is *missed* when its estimate is more than {MISS_PULL} "
        "of its own errors from the reference: the sampler lost part of the integrand (e.g. "
        "one camel peak) and its small `sigma_w` is meaningless.")
    headers = ["integrand", *methods]
    sections.append(_common.markdown_table(
        headers, [[name, *(_cell(res["methods"][k]) for k in methods)]
                  for name, res in payload["results"].items()],
        "l" + "r" * len(methods)))
    lines = []
    for f in fracs:
        ratios, wins, fails = [], 0, []
        for name, res in payload["results"].items():
            sp, gr = res["methods"][f"spline@{f:g}"], res["methods"][f"grid@{f:g}"]
            if sp["n_missed"] or gr["n_missed"]:
                fails.append(f"{name} (missed: spline {sp['n_missed']}, grid {gr['n_missed']})")
                continue
            ratios.append(gr["rel_std_geomean"] / sp["rel_std_geomean"])
            wins += ratios[-1] > 1
        if ratios:
            gm = float(np.exp(np.mean(np.log(ratios))))
            lines.append(f"- VEGAS fraction {f:g}: grid / spline `sigma_w/I` ratio, geometric "
                         f"mean over {len(ratios)} integrands without misses = **{gm:.3g}**; "
                         f"the spline start is better on {wins} of {len(ratios)}"
                         + (f"; left out: {', '.join(fails)}" if fails else "") + ".")
    if lines:
        sections.append("Spline start vs grid layer:\n\n" + "\n".join(lines))
    notes = payload.get("notes", [])
    if notes:
        sections.append("Notes:\n\n" + "\n".join(f"- {n}" for n in notes))
    return "\n\n".join(sections)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--integrands", nargs="+", default=list(suite()), choices=list(suite()))
    p.add_argument("--budget", type=int, default=131072,
                   help="training evaluations per run, VEGAS included")
    p.add_argument("--eval-points", type=int, default=65536)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--vegas-frac", type=float, nargs="+", default=[0.1, 0.25],
                   help="fractions of the budget spent on VEGAS before the flow")
    p.add_argument("--vegas-iterations", type=int, default=8)
    p.add_argument("--vegas-bins", type=int, default=64)
    p.add_argument("--vegas-alpha", type=float, default=1.5)
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--bins", type=int, default=10)
    p.add_argument("--hidden", type=int, nargs="+", default=[32, 32])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="pin to this many cores")
    p.add_argument("--note", action="append", default=[])
    p.add_argument("--out", type=Path, default=_common.RESULTS_DIR)
    p.add_argument("--name", default="vegas_init")
    p.add_argument("--render-only", action="store_true",
                   help="rewrite the markdown from the existing JSON (and its notes, if given)")
    return p.parse_args(argv)


def main(argv=None, log=print) -> dict[str, Any]:
    args = parse_args(argv)
    if args.render_only:
        payload = _common.read_json(args.out / f"{args.name}.json")
        if args.note:  # notes written after the run (the measurements are untouched)
            payload["notes"] = list(args.note)
            _common.write_json(args.out / f"{args.name}.json", payload)
        _common.write_markdown(args.out / f"{args.name}.md", TITLE, [render(payload)])
        return payload
    threads = _common.limit_cores(args.threads)
    if args.eval_points < args.batch_size:
        raise SystemExit("--eval-points must be at least --batch-size")
    start = time.perf_counter()
    machine = _common.machine_info()
    root = Path(__file__).resolve().parents[1]
    source = _common.git_state({p: root / p for p in (
        "benchmarks/vegas_init.py", "jaxnis/pretrain.py", "jaxnis/vegas.py",
        "jaxnis/train.py")})
    cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
           if k not in ("note", "out", "name")}
    cfg["threads"] = threads
    results = {}
    factories = suite()
    for name in args.integrands:
        log(f"{name}")
        results[name] = run_integrand(name, factories[name](), args, log)
    payload = {
        "meta": {"date": _common.utc_now(), "machine": machine,
                 "versions": _common.versions(PACKAGES), "settings": cfg, "source": source,
                 "run_seconds": time.perf_counter() - start},
        "results": results,
        "notes": list(args.note),
    }
    _common.write_report(args.out, args.name, TITLE, payload, [render(payload)])
    return payload


if __name__ == "__main__":
    main()
