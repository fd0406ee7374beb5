"""Smoke test of ``benchmarks/gradients.py``: tiny sizes on e+e- -> mu mu (cheap to compile).

Runs the benchmark's ``main`` into a temporary folder (never ``benchmarks/results/``) and
checks that the JSON and markdown are written, every timing is positive and finite, the
gradients come with errors, and the scans reproduce the loop of single evaluations.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gradients  # noqa: E402


def test_gradients_benchmark_smoke(tmp_path):
    argv = ["--quick", "--process", "ee", "--out", str(tmp_path), "--name", "smoke"]
    payload = gradients.main(argv, log=lambda *_: None)
    data = json.loads((tmp_path / "smoke.json").read_text())
    md = (tmp_path / "smoke.md").read_text()
    assert "Value and gradient vs value alone" in md and "x own loop (cpu)" in md
    assert data["settings"]["process"] == "ee" and data["settings"]["grid"] == 8
    assert data["machine"]["usable_cores"] >= 1
    variants = [r["variant"] for r in data["gradients"]]
    assert variants[0] == "value" and any("forward" in v for v in variants)
    for row in data["gradients"]:
        assert math.isfinite(row["median_s"]) and row["median_s"] > 0
        assert row["compile_s"] > 0
        if "grad_error" in row:
            assert all(v > 0 for v in row["grad_error"].values())
    assert data["gradients"][0]["ratio_to_value"] == 1.0
    (scan,) = data["scans"]
    assert scan["n"] == 1500 and len(scan["loop_values"]) == 8
    kinds = {row["kind"] for row in scan["rows"]}
    assert kinds == {"map loop", "rw loop", "map scan", "rw scan"}
    for row in scan["rows"]:
        assert math.isfinite(row["median_s"]) and row["median_s"] > 0
        assert math.isfinite(row["cpu_median_s"]) and row["cpu_median_s"] >= 0
        if "scan" in row["kind"]:
            assert row["speedup_vs_loop"] > 0 and row["max_rel_diff_to_loop"] < 1e-4
    assert payload["summary"]["scan_matches_loop"] is True
    # the map scan and the reweighting of fixed events estimate the same cross sections
    loop = np.asarray(scan["loop_values"])
    reweighted = np.asarray(scan["reweighted_values"])
    assert np.all(reweighted > 0) and np.max(np.abs(reweighted / loop - 1)) < 0.1
