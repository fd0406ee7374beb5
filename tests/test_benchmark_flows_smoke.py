"""Smoke test of ``benchmarks/flows.py``: one tiny case, into a temporary folder.

Runs the benchmark's ``main`` at ``d = 4``, batch 256, one timed repetition, with jaxnis and,
when PyTorch and MadNIS are importable (the optional ``bench`` extra), MadNIS; it never
writes to ``benchmarks/results/``. XLA's backend optimisation is turned down
(``--fast-compile``) because compiling the training step dominates the run; the rates are
only checked to be positive and finite, not compared.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import flows  # noqa: E402


def test_flows_benchmark_smoke(tmp_path, monkeypatch):
    pytest.importorskip("jaxnis.flows")
    # main() sets this default for PyTorch's OpenMP pool; keep it out of the test process.
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    with_madnis = flows.madnis_available()
    peers = ["jaxnis", "madnis"] if with_madnis else ["jaxnis"]
    # threads: keep the test process's affinity (pinning it would outlive the test).
    argv = ["--dims", "4", "--batches", "256", "--repeats", "1", "--warmup", "1",
            "--peers", *peers, "--no-breakdown", "--no-gpu", "--fast-compile",
            "--out", str(tmp_path), "--name", "smoke"]
    payload = flows.main(argv, log=lambda *_: None)

    data = json.loads((tmp_path / "smoke.json").read_text())
    assert "## CPU throughput" in (tmp_path / "smoke.md").read_text()
    assert data["validation_passed"] is True and payload["validation_passed"] is True
    assert data["settings"]["batches"] == [256] and data["settings"]["peers"] == peers
    assert data["versions"]["jax"] == jax.__version__
    assert data["machine"]["usable_cores"] >= 1

    got = {(r["peer"], r["op"]) for r in data["cpu"]}
    assert got == {(p, op) for p in peers for op in flows.OPS}
    for row in data["cpu"]:
        assert math.isfinite(row["samples_per_s"]) and row["samples_per_s"] > 0, row
        assert row["batch"] == 256 and row["d"] == 4
    for row in data["cpu"]:
        if row["peer"] == "jaxnis":
            assert row["compile"]["compile_s"] > 0

    (struct,) = data["structure"]
    assert struct["jaxnis_coupling_layers"] == 4  # 2 ceil(log2 4) binary masks
    if with_madnis:
        # Same flow on both sides: masks, coupling layers, parameter count.
        assert struct["masks_equal"] and struct["same_structure"]
        assert struct["jaxnis_params"] == struct["madnis_params"]
        assert {r["op"] for r in data["ratios"]} == set(flows.OPS)
        assert all(r["wall_ratio"] > 0 for r in data["ratios"])


def test_equal_work_check_catches_a_wrong_log_q(dtype):
    """The round-trip check passes rounding-level differences and fails a wrong Jacobian."""
    name = jnp.dtype(dtype).name
    rng = np.random.default_rng(0)
    x = rng.random((1000, 4)).astype(name)
    log_q = rng.normal(scale=0.3, size=1000).astype(name)
    eps = float(np.finfo(name).eps)
    good = flows._validation(x, log_q, log_q + 10 * eps * rng.standard_normal(1000), 0.1)
    assert good["ok"] and good["inside_cube"]
    # A log-determinant off by 2e-3 in one event (above the 1e-3 tolerance) fails.
    wrong = log_q.copy()
    wrong[17] += 2e-3
    assert not flows._validation(x, log_q, wrong, 0.1)["ok"]
    outside = x.copy()
    outside[3, 2] = 1.0 + 1e3 * eps
    assert not flows._validation(outside, log_q, log_q, 0.1)["ok"]
    assert not flows._validation(x, log_q, log_q, math.nan)["ok"]
