"""The nis benchmark over several seeds: how far the single-seed figures of ``nis.py`` move.

Usage (from the repository root)::

    .venv/bin/python benchmarks/nis_seeds.py        # annulus, two circles, gauss16; seeds 0-4
    .venv/bin/python benchmarks/nis_seeds.py --seeds 0 1 2 --integrands camel4 annulus

Writes ``benchmarks/results/nis_seeds.json`` and ``nis_seeds.md`` (``--out``/``--name``
elsewhere). Every other option is passed to ``benchmarks/nis.py`` unchanged (budgets, batch
size, tools, jaxnis options; the warm rerun is off), so each seed is exactly one run of that
benchmark, in this one process, with its tools, budgets and metrics.

Per integrand and tool, over the seeds:

* **quoted relative error**: the median of the errors the tool reports;
* **actual relative error**: ``sqrt(mean((value - reference)^2)) / reference``, what the
  quoted errors should match (with ``n`` seeds it is itself uncertain by about
  ``1 / sqrt(2 n)``, 32% for five);
* **pulls** ``(value - reference) / error``: mean and standard deviation (0 and 1 for an
  unbiased estimate with an honest error);
* **unweighting efficiency**: median, minimum and maximum.

The targets of ``nis.py`` (jaxnis over the best peer: relative error <= 0.5, unweighting
efficiency >= 1.5) are reported on the medians, and the error ratio also on the actual errors.
"""

from __future__ import annotations

import argparse
import math
import nis  # benchmarks/nis.py (first on sys.path when run as a script)
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np

DEFAULT_INTEGRANDS = ("gauss16", "two_circles", "annulus")


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    # no abbreviations: --seed must reach the check below, not be taken for --seeds
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--integrands", nargs="+", default=list(DEFAULT_INTEGRANDS))
    p.add_argument("--out", type=Path, default=_common.RESULTS_DIR)
    p.add_argument("--name", default="nis_seeds")
    args, passed = p.parse_known_args(argv)
    if len(args.seeds) < 2 or len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds needs at least two different seeds, got {args.seeds}")
    given = {a.split("=")[0] for a in passed}
    for option in ("--seed", "--merge", "--out", "--name"):
        if option in given:
            p.error(f"{option} is set by this script")
    return args, passed


def aggregate(rows: list[dict[str, Any]], references: dict[str, float]) -> list[dict]:
    """One entry per (integrand, tool) over its seeds (see the module docstring), in the
    order of ``rows``."""
    out = []
    for integrand, tool in dict.fromkeys((r["integrand"], r["tool"]) for r in rows):
        mine = [r for r in rows if (r["integrand"], r["tool"]) == (integrand, tool)]
        ref = references[integrand]
        dev = np.array([r["value"] - ref for r in mine])
        pulls = np.array([r["pull"] for r in mine])
        eff = np.array([r["unweighting_efficiency"] for r in mine])
        out.append({
            "integrand": integrand, "tool": tool, "n_seeds": len(mine),
            "seeds": [r["seed"] for r in mine],
            "rel_error_median": float(np.median([r["rel_error"] for r in mine])),
            "rel_error_actual": float(np.sqrt(np.mean(dev**2)) / abs(ref)),
            "pull_mean": float(np.mean(pulls)), "pull_std": float(np.std(pulls, ddof=1)),
            "efficiency_median": float(np.median(eff)),
            "efficiency_min": float(np.min(eff)), "efficiency_max": float(np.max(eff)),
            "wall_median_s": float(np.median([r["wall_s"] for r in mine])),
        })
    return out


def targets(summary: list[dict[str, Any]], cases: dict[str, Any]) -> list[dict[str, Any]]:
    """``nis.targets`` on the medians over the seeds (quoted error, efficiency, pull mean,
    wall time), with the error ratio also on the actual errors; integrands with peers only."""
    def rows(error: str) -> list[dict[str, Any]]:
        return [{"integrand": s["integrand"], "tool": s["tool"], "rel_error": s[error],
                 "unweighting_efficiency": s["efficiency_median"], "pull": s["pull_mean"],
                 "wall_s": s["wall_median_s"]} for s in summary]

    quoted = nis.targets(rows("rel_error_median"), cases)
    actual = nis.targets(rows("rel_error_actual"), cases)
    return [q | {"actual_error_ratio": a["rel_error_ratio"], "best_actual_peer":
                 a["best_error_peer"]} for q, a in zip(quoted, actual, strict=True)
            if "rel_error_ratio" in q]


def markdown(payload: dict[str, Any]) -> list[str]:
    f = nis._fmt
    seeds = payload["settings"]["seeds"]
    lines = [
        f"The suite of `benchmarks/nis.py` (its budgets, options and metrics) run once per "
        f"seed, seeds {', '.join(map(str, seeds))}. Quoted: the median of the relative "
        "errors the tool reports. Actual: `sqrt(mean((value - reference)^2)) / reference` "
        f"over the seeds (uncertain by about {1 / math.sqrt(2 * len(seeds)):.0%} with "
        f"{len(seeds)} seeds). Pulls `(value - reference) / error`: mean and standard "
        "deviation (0 and 1 for an unbiased estimate with an honest error).",
        "## Over the seeds",
        _common.markdown_table(
            ["integrand", "tool", "quoted rel. error (median)", "actual rel. error",
             "pull mean", "pull std", "unw. eff. median [min, max]", "wall s (median)"],
            [[s["integrand"], s["tool"], f(s["rel_error_median"], ".2e"),
              f(s["rel_error_actual"], ".2e"), f(s["pull_mean"], "+.2f"),
              f(s["pull_std"], ".2f"),
              f"{f(s['efficiency_median'], '.3f')} [{f(s['efficiency_min'], '.3f')}, "
              f"{f(s['efficiency_max'], '.3f')}]", f(s["wall_median_s"], ".1f")]
             for s in payload["summary"]],
            align="llrrrrrr"),
        "## Targets on the medians",
        _common.markdown_table(
            ["integrand", "quoted rel. error jaxnis / best peer (<= 0.5)",
             "actual rel. error jaxnis / best peer", "unw. eff. jaxnis / best peer (>= 1.5)"],
            [[t["integrand"], f"{f(t['rel_error_ratio'], '.3f')} ({t['best_error_peer']})",
              f"{f(t['actual_error_ratio'], '.3f')} ({t['best_actual_peer']})",
              f"{f(t['efficiency_ratio'], '.3f')} ({t['best_efficiency_peer']})"]
             for t in payload["targets"]],
            align="lrrr"),
        "## Runs",
        _common.markdown_table(
            ["integrand", "tool", "seed", "value", "rel. error", "pull", "unw. eff."],
            [[r["integrand"], r["tool"], r["seed"], f(r["value"], ".7g"),
              f(r["rel_error"], ".2e"), f(r["pull"], "+.2f"),
              f(r["unweighting_efficiency"], ".3f")] for r in payload["rows"]],
            align="llrrrrr"),
        "## Metadata",
        _common.metadata_markdown(payload),
    ]
    return lines


def main(argv=None, log=print) -> dict[str, Any]:
    """Run ``nis.py`` once per seed; write ``<out>/<name>.json`` and ``.md``; return them."""
    args, passed = parse_args(argv)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    first: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="jaxnis-nis-seeds-") as tmp:
        for seed in args.seeds:
            log(f"seed {seed}")
            payload = nis.main([*passed, "--integrands", *args.integrands, "--seed", str(seed),
                                "--no-warm-rerun", "--out", tmp, "--name", f"seed{seed}"],
                               log=log)
            first = first or payload
            rows += [{"seed": seed, **{k: v for k, v in r.items()
                                        if not isinstance(v, list | dict)}}
                     for r in payload["rows"]]
    references = {c["name"]: c["reference"] for c in first["integrands"]}
    rows.sort(key=lambda r: (list(references).index(r["integrand"]),
                             nis.TOOLS.index(r["tool"]), r["seed"]))
    summary = aggregate(rows, references)
    cases = {name: nis.itg.get(name) for name in references}
    # the first run applied jaxnis.host_memory for the whole process (its record says so)
    settings = {k: v for k, v in first["settings"].items() if k not in ("seed", "warm_rerun")}
    payload = {
        "benchmark": "nis_seeds", "date": _common.utc_now(), "machine": first["machine"],
        "versions": first["versions"],
        "settings": {**settings, "seeds": args.seeds, "nis_options": passed},
        "integrands": first["integrands"], "skipped_tools": first["skipped_tools"],
        "summary": summary, "targets": targets(summary, cases), "rows": rows,
        "total_s": time.perf_counter() - t0,
    }
    path, _ = _common.write_report(
        args.out, args.name, "Neural importance sampling over seeds: jaxnis vs vegas vs madnis",
        payload, markdown(payload))
    log(f"wrote {path} and .md ({payload['total_s']:.0f} s)")
    return payload


if __name__ == "__main__":
    main()
