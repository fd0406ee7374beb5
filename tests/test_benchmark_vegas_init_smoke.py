"""Smoke test of ``benchmarks/vegas_init.py``: one integrand, tiny budgets, two seeds.

Runs the benchmark's ``main`` into a temporary folder (never ``benchmarks/results/``) and
checks the plan of evaluations (every method gets the same budget, VEGAS included), that
every run is finite and near the reference, and that ``--render-only`` rewrites the report
from the JSON without touching the measurements.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import vegas_init  # noqa: E402


def test_vegas_init_benchmark_smoke(tmp_path):
    budget, batch = 4096, 512
    argv = ["--integrands", "annulus", "--budget", str(budget), "--eval-points", "2048",
            "--batch-size", str(batch), "--vegas-frac", "0.25", "--vegas-iterations", "2",
            "--vegas-bins", "16", "--seeds", "2", "--out", str(tmp_path), "--name", "smoke"]
    payload = vegas_init.main(argv, log=lambda *_: None)

    res = payload["results"]["annulus"]
    assert set(res["methods"]) == {"flow", "spline@0.25", "grid@0.25", "vegas"}
    for name, plan in res["plan"].items():
        # the same budget for every method, VEGAS's evaluations included (whole batches)
        assert budget - batch < plan["evaluations"] <= budget, (name, plan)
    assert res["plan"]["spline@0.25"] == res["plan"]["grid@0.25"]
    assert res["plan"]["flow"]["vegas_iter"] == 0 and res["plan"]["vegas"]["steps"] == 0
    reference = vegas_init.suite()["annulus"]().reference
    for name, method in res["methods"].items():
        assert [r["seed"] for r in method["runs"]] == [0, 1]
        for run in method["runs"]:
            assert math.isfinite(run["value"]) and run["error"] > 0, (name, run)
            assert abs(run["value"] - reference) < 5 * run["error"], (name, run)
            assert not run["missed"]
        rel = [r["rel_std"] for r in method["runs"]]
        assert min(rel) <= method["rel_std_geomean"] <= max(rel)

    report = (tmp_path / "smoke.md").read_text()
    assert "spline@0.25" in report and "Spline start vs grid layer" in report
    before = json.loads((tmp_path / "smoke.json").read_text())
    vegas_init.main(["--render-only", "--note", "a note", "--out", str(tmp_path),
                     "--name", "smoke"], log=lambda *_: None)
    after = json.loads((tmp_path / "smoke.json").read_text())
    assert after["results"] == before["results"] and after["notes"] == ["a note"]
    assert "- a note" in (tmp_path / "smoke.md").read_text()
