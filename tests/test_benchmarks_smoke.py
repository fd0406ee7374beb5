"""Smoke test of ``benchmarks/phase_space.py``: tiny batches, NumPy and jaxnis only.

Runs the benchmark's ``main`` into a temporary folder (never ``benchmarks/results/``) and
checks that the JSON and markdown are written, every rate is positive and finite, and the
equal-work validation (mean weight = phase-space volume, momentum conservation, mass
shells) passes for both implementations. MadSpace (optional extra ``bench``) is not used.
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

import numpy_rambo  # noqa: E402
import phase_space  # noqa: E402


@pytest.mark.parametrize("k", range(1, 8))
def test_numpy_diet_mass_root(k, dtype):
    """The NumPy baseline's fixed-count Newton solves (k+1) x^k - k x^(k+1) = r to ~eps."""
    eps = float(np.finfo(np.dtype(jnp.dtype(dtype).name)).eps)
    r = np.random.default_rng(k).random(100_000)
    r = np.clip(np.concatenate([r, [0.0, 1.0]]), eps, 1 - eps).astype(jnp.dtype(dtype).name)
    x = numpy_rambo.solve_diet_mass(r, k).astype(np.float64)
    residual = np.abs((k + 1) * x**k - k * x ** (k + 1) - r.astype(np.float64))
    # 16 eps: the root is limited by rounding of F(x) itself (measured <= 10 eps, k <= 7).
    assert residual.max() <= 16 * eps
    assert np.all((x > 0) & (x < 1))


def _run(tmp_path, name: str, dtype: str, algo: str, ns: list[str],
         extra: tuple[str, ...] = ()) -> dict:
    # Massless rows, no RNG or variants table: each jaxnis case costs one compilation, the
    # slow part of this test, so RAMBO runs at n = 3 only. The evaluator runs in chunks of
    # 256: three full chunks and an overlapping last one.
    argv = ["--n", *ns, "--algos", algo, "--batch", "1000", "--repeats", "1",
            "--peers", "numpy", "jaxnis", "--dtypes", dtype, "--masses", "massless",
            "--jax-chunk", "256", "--no-rng", "--no-variants", "--no-gpu",
            "--out", str(tmp_path), "--name", name, *extra]
    payload = phase_space.main(argv, log=lambda *_: None)
    data = json.loads((tmp_path / f"{name}.json").read_text())
    assert data["validation_passed"] is True and payload["validation_passed"] is True
    return data


def test_phase_space_benchmark_smoke(tmp_path, dtype):
    pytest.importorskip("jaxnis.phasespace.rambo")
    name = jnp.dtype(dtype).name
    data = _run(tmp_path, "smoke", name, "diet", ["3", "4"])
    # --rows keeps RAMBO n = 3 of the n = 3, 4 grid; the single-call peer runs there only.
    rambo = _run(tmp_path, "smoke_rambo", name, "rambo", ["3", "4"],
                 ("--rows", f"rambo:3:*:{name}", "--peers", "numpy", "jaxnis", "jaxnis_single"))

    assert (tmp_path / "smoke.md").read_text().count("RAMBO-on-diet") >= 4
    assert data["settings"]["batch"] == 1000 and data["settings"]["dtypes"] == [name]
    for key in ("cpu_model", "usable_cores"):
        assert data["machine"][key]
    assert data["versions"]["jax"] == jax.__version__

    timed = [r for r in data["cpu"] + rambo["cpu"] if "events_per_s" in r]
    got = {(r["peer"], r["algo"], r["n"], r["massive"]) for r in timed}
    want = {(p, a, n, False) for p in ("numpy", "jaxnis")
            for a, n in (("diet", 3), ("diet", 4), ("rambo", 3))}
    assert got == want | {("jaxnis_single", "rambo", 3, False)}
    assert {r["info"]["chunk"] for r in timed if r["peer"] == "jaxnis"} == {256}
    for row in timed:
        assert math.isfinite(row["events_per_s"]) and row["events_per_s"] > 0
        v = row["validation"]
        assert v["weight_ok"] and v["kinematics_ok"], (row["peer"], row["algo"], row["n"], v)
        # Massless: the weight is the volume event by event (float32: rounding of the log).
        assert v["mean_over_reference"] == pytest.approx(1.0, rel=1e-4)
    assert all(r["setup_s"] > 0 for r in timed if r["peer"] == "jaxnis")

    # Re-rendering the markdown from the JSON reproduces it (nan/inf survive the round trip).
    md = (tmp_path / "smoke.md").read_text()
    phase_space.main(["--render-only", "--out", str(tmp_path), "--name", "smoke"])
    assert (tmp_path / "smoke.md").read_text() == md


def test_rows_filter():
    case = phase_space.Case("diet", 4, False, "float64", 10)
    assert phase_space.row_selected(case, None)
    assert phase_space.row_selected(case, [phase_space.parse_row("target")])
    assert phase_space.row_selected(case, [phase_space.parse_row("*:4:*:float64")])
    assert not phase_space.row_selected(case, [phase_space.parse_row("diet:4:massive:*")])
    for bad in ("diet:4:massless", "diet:x:massless:float64", "rambo:4:light:float64"):
        with pytest.raises(ValueError, match="is not ALGO:N:MASSES:DTYPE"):
            phase_space.parse_row(bad)


def test_massive_validation_catches_a_wrong_weight():
    """The equal-work check fails a mean weight 1% off the massive reference volume."""
    case = phase_space.Case("diet", 4, True, "float64", 100_000)
    r = phase_space.make_inputs(case, 1)
    p, logw = numpy_rambo.rambo_on_diet(r, phase_space.SQRT_S, case.masses)
    good = phase_space.validate(case, np.exp(logw), p)
    bad = phase_space.validate(case, 1.01 * np.exp(logw), p)
    assert good["weight_ok"] and good["kinematics_ok"]
    assert not bad["weight_ok"] and abs(bad["pull"]) > phase_space.PULL_LIMIT


def test_accelerator_path_runs_on_cpu():
    """The GPU code path (bandwidth fraction) runs; exercised here on the CPU device."""
    pytest.importorskip("jaxnis.phasespace.rambo")
    case = phase_space.Case("diet", 3, False, "float32", 1000)
    out = phase_space.accelerator_rows(jax.devices("cpu")[0], [case], repeats=1, seed=0,
                                       bandwidth_bytes=1 << 20, log=lambda *_: None)
    (row,) = out["rows"]
    assert out["copy_bandwidth_bytes_per_s"] > 0
    assert row["validation"]["kinematics_ok"]
    item = np.dtype(case.dtype).itemsize
    assert row["bytes_written_per_event"] == (4 * 3 + 1) * item
    assert 0 < row["write_bandwidth_fraction"] < row["total_bandwidth_fraction"]
