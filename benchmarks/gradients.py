"""Cost of differentiable parameter studies: value and gradient, and vectorised scans.

Usage (from the repository root)::

    .venv/bin/python benchmarks/gradients.py                 # Drell-Yan Z', 1e5 events
    .venv/bin/python benchmarks/gradients.py --quick         # small sizes, checks the harness
    .venv/bin/python benchmarks/gradients.py --process ee --n 100000

Writes ``benchmarks/results/gradients.json`` and ``gradients.md`` (``--out`` elsewhere).

Two questions, both on one process (default ``p p -> mu+ mu-`` at 13 TeV through photon,
Z and Z', u and d quarks, three Breit-Wigner/power-law luminosity channels; ``--process
ee`` is ``e+e- -> mu+ mu-`` at the Z pole):

1. **Value and gradient over value alone** at ``--n`` events (fixed uniform points, equal
   channel blocks): ``jaxnis.studies.cross_section`` against
   ``cross_section_and_grad`` with respect to ``M_Z'``, ``Gamma_Z'`` and ``g_A^l`` (the
   gradient *and its error*, from per-event gradients) in forward and reverse mode, and
   ``jax.value_and_grad`` of the plain mean (gradient without error). Target: <= 3x.
2. **Scan throughput**: the cross section at ``--grid`` Z' masses (width 3 % of the mass)
   with common random numbers, for each ``--scan-n`` events per point (default 1e5, and
   1e3 where per-call overhead matters). Scans: ``scan_cross_section`` (every point at the
   whole grid, points in blocks of ``SCAN_EVENT_CHUNK``; also untiled when ``grid x n`` is
   at most 2.5e6, and as ``lax.map`` over ``--chunk`` grid points), and ``reweight_scan``
   of one fixed event sample (only the parameter-dependent part of ``f`` per mass).
   Baselines: a Python loop calling the jitted single-point function
   (``cross_section``, resp. ``reweight`` + ``sample_cross_section``) once per mass with
   the same events, dispatched back to back and waited for at the end, untiled and with
   ``event_chunk=--loop-chunk``; each scan is compared with the faster loop of its kind
   and the reweighting scan also with the map loop. Target: scan >= 10x the loop on the
   CPU. The scan values are checked against the loop's.

Timed: median of ``--repeats`` calls after one warm-up call; results are waited for with
``block_until_ready``; compile time (``lower().compile()``) is reported separately. Wall
and process CPU time are both recorded (on a shared machine the CPU-time ratios are the
steadier ones). The process is pinned to ``--threads`` cores before JAX starts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

WRT = ("M_Zp", "Gamma_Zp", "gA_Zp_l")
TARGET_GRAD_RATIO = 3.0
TARGET_SCAN_SPEEDUP = 10.0
#: the one-vmap scan holds grid x events intermediates at once; above this it is skipped
FULL_VMAP_MAX_EVENTS = 2_500_000


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--process", choices=("dy", "dy-light", "ee"), default="dy",
                   help="dy: u, d quarks, photon+Z+Z'; dy-light: u quarks, Z+Z'; ee: mu mu")
    p.add_argument("--n", type=int, default=100_000, help="events for value vs gradient")
    p.add_argument("--grid", type=int, default=64, help="Z' masses in the scan")
    p.add_argument("--scan-n", type=int, nargs="+", default=[100_000, 1000],
                   help="events per scan point (one scan table each)")
    p.add_argument("--chunk", type=int, nargs="*", default=[16],
                   help="grid points per lax.map step (one scan row each)")
    p.add_argument("--loop-chunk", type=int, default=4096,
                   help="event_chunk of the tiled single evaluations of the loops (the loop "
                        "baseline is the faster of untiled and tiled; 0: untiled only)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=int, default=None, help="cores to pin to (default all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes (harness check)")
    p.add_argument("--out", type=Path, default=_common.RESULTS_DIR)
    p.add_argument("--name", default="gradients")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.grid, args.scan_n, args.chunk, args.repeats = 3000, 8, [1500], [4], 1
        args.loop_chunk = 512
    return args


def _setup(process: str, dtype):
    from jaxnis.physics.processes import DrellYan, EEToFFbar

    if process == "ee":
        proc = EEToFFbar("mu")
        params = proc.default_params(dtype, sqrt_s=91.188)
        # ee has no Z': differentiate and scan the Z instead
        return proc, params, ("M_Z", "Gamma_Z", "alpha"), ("M_Z", "Gamma_Z", 85.0, 97.0)
    if process == "dy-light":
        proc = DrellYan(flavours=("u",), bosons=("Z", "Zp"))
    else:
        proc = DrellYan(flavours=("u", "d"))
    params = proc.default_params(dtype, m_ll_min=500.0)
    return proc, params, WRT, ("M_Zp", "Gamma_Zp", 600.0, 900.0)


def _timed(fn, args, repeats: int, jax) -> dict[str, Any]:
    """Compile ``fn`` for ``args``, warm up, then time ``repeats`` calls."""
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    out = jax.block_until_ready(compiled(*args))
    times, cpu = [], []
    for _ in range(repeats):
        c0 = time.process_time()
        times.append(_common.time_call(lambda: compiled(*args), jax.block_until_ready))
        cpu.append(time.process_time() - c0)
    return {"compile_s": compile_s, **_common.summarize_times(times),
            "cpu_median_s": float(np.median(cpu)), "out": out}


def run_gradients(proc, params, wrt, n, repeats, seed, log, jax, st,
                  quick=False) -> list[dict[str, Any]]:
    """Value alone vs value and gradient (forward, reverse, plain mean); ``quick``: forward
    with one and all parameters only, no plain mean (fewer compilations)."""
    import jax.numpy as jnp

    dtype = params["sqrt_s"].dtype
    points = st.uniform_points(jax.random.key(seed), n, proc.dim, proc.n_channels, dtype)
    sub = {k: params[k] for k in wrt}

    def value(p, pts):
        return st.cross_section(proc, p, points=pts)

    def with_grad(mode, names):
        return lambda p, pts: st.cross_section_and_grad(proc, p, wrt=names, points=pts,
                                                        mode=mode)

    def plain(s, pts):
        return jax.value_and_grad(lambda s: jnp.mean(
            st.per_event_weights(proc, {**params, **s}, pts)))(s)

    variants = [("value", value, (params, points))]
    for k in ((1, len(wrt)) if quick else range(1, len(wrt) + 1)):
        variants.append((f"value+grad+errors, forward, {k} param", with_grad("fwd", wrt[:k]),
                         (params, points)))
    variants.append((f"value+grad+errors, reverse, {len(wrt)} param", with_grad("rev", wrt),
                     (params, points)))
    if proc.n_channels == 1 and not quick:  # the plain mean is the estimate for 1 channel
        variants.append((f"value+grad (plain mean), reverse, {len(wrt)} param", plain,
                         (sub, points)))
    rows = []
    for label, fn, args in variants:
        res = _timed(jax.jit(fn), args, repeats, jax)
        out = res.pop("out")
        row = {"variant": label, "n": n, **res}
        if label != "value" and "plain" not in label:
            row["grad"] = {k: float(v) for k, v in out.grad.items()}
            row["grad_error"] = {k: float(v) for k, v in out.grad_error.items()}
        if label == "value":
            row["value"], row["error"] = float(out.value), float(out.error)
        rows.append(row)
        log(f"  {label:44s} {res['median_s'] * 1e3:9.2f} ms  (compile {res['compile_s']:.1f} s)")
    base, base_cpu = rows[0]["median_s"], rows[0]["cpu_median_s"]
    for row in rows:
        row["ratio_to_value"] = row["median_s"] / base
        row["cpu_ratio_to_value"] = row["cpu_median_s"] / base_cpu
    return rows


def _loop_timed(compiled, arg_lists, repeats, jax) -> tuple[dict[str, Any], np.ndarray]:
    """A Python loop of calls to one compiled function, dispatched back to back and waited
    for at the end; wall and process CPU time of the whole loop."""
    def call_all():
        return [compiled(*a) for a in arg_lists]

    out = jax.block_until_ready(call_all())
    times, cpu = [], []
    for _ in range(repeats):
        c0 = time.process_time()
        times.append(_common.time_call(call_all, jax.block_until_ready))
        cpu.append(time.process_time() - c0)
    return ({**_common.summarize_times(times), "cpu_median_s": float(np.median(cpu))},
            np.asarray([float(v) for v in out]))


def run_scan(proc, params, scan_spec, grid_size, n, chunks, loop_chunk, repeats, seed, log,
             jax, st, quick=False) -> dict[str, Any]:
    """Scan vs loop, by the map at fixed points and by reweighting fixed events (``quick``:
    no untiled scans)."""
    import jax.numpy as jnp

    mass_key, width_key, lo, hi = scan_spec
    dtype = params["sqrt_s"].dtype
    masses = jnp.linspace(lo, hi, grid_size, dtype=dtype)
    grid = {mass_key: masses}
    if mass_key == "M_Zp":
        grid[width_key] = 0.03 * masses
    points = st.uniform_points(jax.random.key(seed + 1), n, proc.dim, proc.n_channels, dtype)
    grid_params = [{**params, **{k: v[i] for k, v in grid.items()}} for i in range(grid_size)]
    sample = jax.jit(st.generate_events, static_argnames=("integrand",))(proc, params,
                                                                         points=points)
    default_chunk = st.scans.SCAN_EVENT_CHUNK
    loop_chunks = [None] + ([loop_chunk] if loop_chunk and loop_chunk < n else [])
    rows = []

    def add_loops(kind, make_fn, first):
        best = None
        for ec in loop_chunks:
            fn = jax.jit(make_fn(ec))
            args = [(p, first) if kind == "map" else (first, p) for p in grid_params]
            t0 = time.perf_counter()
            compiled = fn.lower(*args[0]).compile()
            compile_s = time.perf_counter() - t0
            res, values = _loop_timed(compiled, args, repeats, jax)
            what = "evaluations (map, fixed r)" if kind == "map" else "reweightings (fixed events)"
            label = f"loop of single {what}, " + (f"event_chunk {ec}" if ec else "untiled")
            row = {"variant": label, "kind": f"{kind} loop", "event_chunk": ec,
                   "compile_s": compile_s, **res}
            rows.append(row)
            log(f"  {label:60s} {res['median_s']:8.3f} s  (cpu {res['cpu_median_s']:.3f} s)")
            if best is None or res["median_s"] < best[0]["median_s"]:
                best = (row, values)
        return best

    def single(ec):
        return lambda p, pts: st.cross_section(proc, p, points=pts, event_chunk=ec).value

    def rw_single(ec):
        return lambda s, p: st.sample_cross_section(
            s, st.reweight(proc, s, p, event_chunk=ec)).value

    loop_row, loop_values = add_loops("map", single, points)
    rw_loop_row, rw_loop_values = add_loops("rw", rw_single, sample)

    scans = [(f"vmap scan (map, fixed r), event_chunk {default_chunk}", "map scan",
              lambda p, pts, g: st.scan_cross_section(proc, p, g, points=pts).value)]
    if grid_size * n <= FULL_VMAP_MAX_EVENTS and not quick:
        scans.append(("vmap scan (map, fixed r), untiled", "map scan",
                      lambda p, pts, g: st.scan_cross_section(
                          proc, p, g, points=pts, event_chunk=None).value))
    for c in chunks:
        scans.append((f"lax.map over grid chunks of {c} (map, fixed r), event_chunk "
                      f"{default_chunk}", "map scan",
                      lambda p, pts, g, c=c: st.scan_cross_section(proc, p, g, points=pts,
                                                                   chunk=c).value))
    scans.append((f"vmap reweight scan (fixed events), event_chunk {default_chunk}", "rw scan",
                  lambda s, p, g: st.reweight_scan(proc, s, p, g).value))
    if grid_size * n <= FULL_VMAP_MAX_EVENTS and not quick:
        scans.append(("vmap reweight scan (fixed events), untiled", "rw scan",
                      lambda s, p, g: st.reweight_scan(proc, s, p, g, event_chunk=None).value))
    for label, kind, fn in scans:
        args = (params, points, grid) if kind == "map scan" else (sample, params, grid)
        res = _timed(jax.jit(fn), args, repeats, jax)
        values = np.asarray(res.pop("out"))
        own, own_values = (loop_row, loop_values) if kind == "map scan" else (
            rw_loop_row, rw_loop_values)
        res["max_rel_diff_to_loop"] = float(np.max(np.abs(values / own_values - 1)))
        res["speedup_vs_loop"] = own["median_s"] / res["median_s"]
        res["cpu_speedup_vs_loop"] = own["cpu_median_s"] / res["cpu_median_s"]
        res["speedup_vs_map_loop"] = loop_row["median_s"] / res["median_s"]
        res["cpu_speedup_vs_map_loop"] = loop_row["cpu_median_s"] / res["cpu_median_s"]
        rows.append({"variant": label, "kind": kind, **res})
        if kind == "rw scan" and "untiled" not in label:
            rw_values = values
        log(f"  {label:60s} {res['median_s']:8.3f} s  x{res['speedup_vs_loop']:.2f} own loop, "
            f"x{res['speedup_vs_map_loop']:.2f} map loop (cpu x{res['cpu_speedup_vs_loop']:.2f}"
            f", x{res['cpu_speedup_vs_map_loop']:.2f})")
    return {"grid": {k: np.asarray(v).tolist() for k, v in grid.items()}, "n": n,
            "scanned": mass_key, "rows": rows, "loop_values": loop_values.tolist(),
            "reweighted_values": rw_values.tolist(),
            "map_loop_variant": loop_row["variant"], "rw_loop_variant": rw_loop_row["variant"]}


def _fmt_ratio(r: dict[str, Any], key: str) -> str:
    return f"{r[key]:.2f}" if key in r else "1"


def _write_markdown(path: Path, payload: dict[str, Any]) -> None:
    s = payload["settings"]
    summary = payload["summary"]
    grad_rows = [[r["variant"], r["n"], f"{r['median_s'] * 1e3:.2f}",
                  f"{r['cpu_median_s'] * 1e3:.2f}", f"{r['compile_s']:.1f}",
                  f"{r['ratio_to_value']:.2f}", f"{r['cpu_ratio_to_value']:.2f}"]
                 for r in payload["gradients"]]
    scan_tables = []
    for scan in payload["scans"]:
        rows = []
        for r in scan["rows"]:
            rows.append([r["variant"], f"{r['median_s'] * 1e3:.1f}",
                         f"{r['cpu_median_s'] * 1e3:.1f}",
                         f"{s['grid'] * scan['n'] / r['median_s'] / 1e6:.2f}",
                         _fmt_ratio(r, "speedup_vs_loop"), _fmt_ratio(r, "cpu_speedup_vs_loop"),
                         _fmt_ratio(r, "speedup_vs_map_loop"),
                         f"{r.get('compile_s', float('nan')):.1f}",
                         f"{r['max_rel_diff_to_loop']:.1e}" if "max_rel_diff_to_loop" in r
                         else "-"])
        verdict = ("meets" if scan["rw_speedup"] >= TARGET_SCAN_SPEEDUP else "misses")
        scan_tables.append(
            f"## Scan over {s['grid']} values of {scan['scanned']}, {scan['n']} events each\n\n"
            + _common.markdown_table(["variant", "wall ms", "cpu ms", "M evals/s",
                                      "x own loop", "x own loop (cpu)", "x map loop",
                                      "compile s", "max rel diff to loop"], rows)
            + f"\n\nLoops: each row calls the jitted single-point function once per grid "
            f"point with the same {scan['n']} events; a scan's own loop is the faster loop of "
            f"its kind ({scan['map_loop_variant']}; {scan['rw_loop_variant']}).\n\n"
            f"Map at fixed r: best {scan['best_variant']}, {scan['best_speedup']:.2f}x its loop "
            f"(cpu {scan['best_cpu_speedup']:.2f}x). Reweighting fixed events: "
            f"{scan['rw_speedup']:.2f}x its loop (cpu {scan['rw_cpu_speedup']:.2f}x; "
            f"{verdict} the {TARGET_SCAN_SPEEDUP:g}x target) and "
            f"{scan['reweight_speedup_vs_map_loop']:.1f}x the map loop "
            f"(cpu {scan['reweight_cpu_speedup_vs_map_loop']:.1f}x).")
    sections = [
        _common.metadata_markdown(payload),
        f"Process: {s['process_label']}; gradient with respect to {', '.join(s['wrt'])}.",
        "## Value and gradient vs value alone\n\n" + _common.markdown_table(
            ["variant", "events", "wall ms", "cpu ms", "compile s", "x value",
             "x value (cpu)"], grad_rows),
        f"Target: value+gradient+errors <= {TARGET_GRAD_RATIO:g}x value. Measured with "
        f"{len(s['wrt'])} parameters: forward {summary['grad_ratio_forward']:.2f}x "
        f"(cpu {summary['grad_cpu_ratio_forward']:.2f}x), reverse "
        f"{summary['grad_ratio_reverse']:.2f}x (cpu {summary['grad_cpu_ratio_reverse']:.2f}x) "
        f"({'met' if summary['grad_target_met'] else 'NOT met'}); forward mode by number of "
        "parameters: " + ", ".join(f"{k}: {v:.2f}x" for k, v in
                                   summary["grad_ratio_forward_by_params"].items()) + ".",
        *scan_tables,
        "Notes: " + summary["notes"],
    ]
    _common.write_markdown(path, "Differentiable studies: gradient and scan cost", sections)


def main(argv=None, log=print) -> dict[str, Any]:
    """Run the benchmark; write ``<out>/<name>.json`` and ``.md``; return the payload."""
    args = parse_args(argv)
    threads = _common.limit_cores(args.threads)  # before JAX starts its thread pool
    import jax

    if args.dtype == "float64" and not jax.config.read("jax_enable_x64"):
        jax.config.update("jax_enable_x64", True)  # scripts may; the library never does
    import jax.numpy as jnp

    from jaxnis import studies as st

    here = Path(__file__).resolve()
    root = here.parents[1]
    used = {"benchmarks/gradients.py": here}
    for mod in ("core", "scans", "reweighting"):
        used[f"jaxnis/studies/{mod}.py"] = root / "jaxnis" / "studies" / f"{mod}.py"
    used["jaxnis/physics/processes.py"] = root / "jaxnis" / "physics" / "processes.py"
    source = _common.git_state(used)
    machine = _common.machine_info()
    dtype = jnp.dtype(args.dtype)
    proc, params, wrt, scan_spec = _setup(args.process, dtype)
    label = {"dy": "p p -> mu mu at 13 TeV, u d quarks, photon + Z + Z' (3 channels), "
                   "m_ll > 500 GeV",
             "dy-light": "p p -> mu mu at 13 TeV, u quarks, Z + Z' (2 channels), m_ll > 500 GeV",
             "ee": "e+e- -> mu mu at sqrt(s) = 91.188 GeV (1 channel)"}[args.process]
    settings = {"process": args.process, "process_label": label, "n": args.n,
                "grid": args.grid, "scan_n": args.scan_n, "chunk": args.chunk,
                "loop_chunk": args.loop_chunk,
                "scan_event_chunk": st.scans.SCAN_EVENT_CHUNK,
                "repeats": args.repeats, "dtype": args.dtype, "threads": threads,
                "seed": args.seed, "wrt": list(wrt), "jax_backend": jax.default_backend(),
                "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
                "shared_machine": machine.get("load_average_1_5_15min", [0])[0] > 0.5 * threads}
    t_start = time.perf_counter()
    log(f"value and gradient, {label}, n = {args.n}")
    grad_rows = run_gradients(proc, params, wrt, args.n, args.repeats, args.seed, log, jax, st,
                              args.quick)
    scans = []
    for n_scan in args.scan_n:
        log(f"scan over {args.grid} masses, {n_scan} events each")
        scan = run_scan(proc, params, scan_spec, args.grid, n_scan, args.chunk,
                        args.loop_chunk, args.repeats, args.seed, log, jax, st, args.quick)
        map_scans = [r for r in scan["rows"] if r["kind"] == "map scan"]
        best = max(map_scans, key=lambda r: r["speedup_vs_loop"])
        rw_row = next(r for r in scan["rows"] if r["kind"] == "rw scan")
        scan.update(best_variant=best["variant"], best_speedup=best["speedup_vs_loop"],
                    best_cpu_speedup=best["cpu_speedup_vs_loop"],
                    rw_speedup=rw_row["speedup_vs_loop"],
                    rw_cpu_speedup=rw_row["cpu_speedup_vs_loop"],
                    reweight_speedup_vs_map_loop=rw_row["speedup_vs_map_loop"],
                    reweight_cpu_speedup_vs_map_loop=rw_row["cpu_speedup_vs_map_loop"],
                    matches_loop=max(r["max_rel_diff_to_loop"] for r in scan["rows"]
                                     if "scan" in r["kind"]) < (
                        1e-4 if args.dtype == "float32" else 1e-10))
        scans.append(scan)
    fwd = [r for r in grad_rows if "forward" in r["variant"]]
    rev = next(r for r in grad_rows if "errors, reverse" in r["variant"])
    big = max(scans, key=lambda sc: sc["n"])
    summary = {
        "grad_ratio_forward_by_params": {r["variant"].rsplit(", ", 1)[1]: r["ratio_to_value"]
                                         for r in fwd},
        "grad_ratio_forward": fwd[-1]["ratio_to_value"],
        "grad_ratio_reverse": rev["ratio_to_value"],
        "grad_cpu_ratio_forward": fwd[-1]["cpu_ratio_to_value"],
        "grad_cpu_ratio_reverse": rev["cpu_ratio_to_value"],
        "grad_target_met": min(max(fwd[-1]["ratio_to_value"], fwd[-1]["cpu_ratio_to_value"]),
                               max(rev["ratio_to_value"], rev["cpu_ratio_to_value"]))
        <= TARGET_GRAD_RATIO,
        "map_scan_speedup_by_n": {sc["n"]: sc["best_speedup"] for sc in scans},
        "map_scan_cpu_speedup_by_n": {sc["n"]: sc["best_cpu_speedup"] for sc in scans},
        "rw_scan_speedup_by_n": {sc["n"]: sc["rw_speedup"] for sc in scans},
        "rw_scan_cpu_speedup_by_n": {sc["n"]: sc["rw_cpu_speedup"] for sc in scans},
        "rw_scan_speedup_vs_map_loop_by_n": {sc["n"]: sc["reweight_speedup_vs_map_loop"]
                                             for sc in scans},
        "map_scan_target_met_at_largest_n": big["best_speedup"] >= TARGET_SCAN_SPEEDUP,
        "rw_scan_target_met_at_largest_n": big["rw_speedup"] >= TARGET_SCAN_SPEEDUP,
        "scan_matches_loop": all(sc["matches_loop"] for sc in scans),
        "notes": (
            "Both scans evaluate every event at the whole grid (vmap over the grid inside "
            "the vmap over events, events in blocks of scan_event_chunk), with only the "
            "scanned parameters batched, so vmap leaves the work that does not depend on them "
            "unbatched and XLA does it once per event. With the map at fixed r that is the "
            "photon and Z channels' events, PDFs and cuts; the Z' channel's events move with "
            "M_Z' (its Breit-Wigner map follows the mass), so a third of the events is "
            "recomputed in full per mass and bounds the map scan at about 3x. Reweighting "
            "holds the events fixed: per mass only the propagator-dependent part of |M|^2 is "
            "recomputed: in this process one summed photon + Z + Z' coupling matrix per "
            "flavour and event (DrellYan builds the per-boson matrices only for the channel "
            "weights, which reweighting does not need). The tiling (blocks of a few hundred "
            "events) keeps the events x grid intermediates in the caches, which is where most "
            "of the gain over one untiled vmap comes from; the loop baselines get the same chance "
            "(untiled and tiled single evaluations, the faster one counts). CPU-time ratios "
            "are given next to wall-time ratios because the machine is shared. Forward mode "
            "costs about one extra evaluation per parameter; per-event reverse mode a fixed "
            "factor."),
        "wall_s": time.perf_counter() - t_start,
    }
    payload = {"date": _common.utc_now(), "machine": machine, "versions": _common.versions(),
               "source": source, "settings": settings, "gradients": grad_rows, "scans": scans,
               "summary": summary}
    _common.write_json(args.out / f"{args.name}.json", payload)
    _write_markdown(args.out / f"{args.name}.md", payload)
    log(f"wrote {args.out / args.name}.json/.md in {summary['wall_s']:.0f} s")
    return payload


if __name__ == "__main__":
    main()
