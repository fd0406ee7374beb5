"""Smoke tests of ``benchmarks/nis.py`` (two tiny integrands, tiny budgets) and of
``benchmarks/nis_seeds.py`` (that benchmark over two seeds).

Runs the benchmark's ``main`` into a temporary folder (never ``benchmarks/results/``) with
every tool that is importable here: jaxnis always; vegas and madnis only when the optional
``bench`` extra is installed (otherwise they are skipped and recorded as skipped). Checks that
the JSON and markdown are written and every value, error, pull and efficiency is finite.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import nis  # noqa: E402

import integrands  # noqa: E402


def _available(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def test_nis_benchmark_smoke(tmp_path):
    tools = ["jaxnis"] + [t for t, mods in (("vegas", ("vegas",)),
                                            ("madnis", ("madnis", "torch")))
                          if _available(*mods)]
    argv = ["--integrands", "camel2", "annulus", "--tools", *tools,
            "--train-budget", "3000", "--final-budget", "2000", "--budget-scale", "1",
            "--batch-size", "500",
            "--vegas-iterations", "3", "--out", str(tmp_path), "--name", "smoke"]
    payload = nis.main(argv, log=lambda *_: None)

    data = json.loads((tmp_path / "smoke.json").read_text())
    assert "camel2" in (tmp_path / "smoke.md").read_text()
    assert data["settings"]["train_budget"] == 3000 and data["settings"]["final_budget"] == 2000
    assert data["machine"]["usable_cores"] >= 1 and data["versions"]["jax"]
    assert {(r["integrand"], r["tool"]) for r in data["rows"]} == {
        (i, t) for i in ("camel2", "annulus") for t in tools}
    for row in payload["rows"]:
        for key in ("value", "error", "pull", "rel_error", "unweighting_efficiency", "wall_s"):
            assert math.isfinite(row[key]), (row["integrand"], row["tool"], key, row[key])
        assert row["error"] > 0 and 0 < row["unweighting_efficiency"] <= 1
        # Fixed seeds: a wrong estimator or reference would be many sigma off.
        assert abs(row["pull"]) < 5, (row["integrand"], row["tool"], row["pull"])
        # Equal budgets; vegas's neval is approximate (it fills whole hypercubes).
        assert row["n_eval_final"] == pytest.approx(2000, rel=0.1 if row["tool"] == "vegas"
                                                    else 0)
    assert len(data["targets"]) == 2
    # jaxnis ran twice, the second time from the compilation cache, drawing the same events
    # (the benchmark raises otherwise); its wall time is in the table.
    for row in payload["rows"]:
        if row["tool"] == "jaxnis":
            assert row["wall_warm_s"] > 0 and row["compile_warm_s"] >= 0, row
    assert "warm" in (tmp_path / "smoke.md").read_text()
    # jaxnis runs its defaults for d = 2 and madnis gets the same flow and learning rate.
    for row in payload["rows"]:
        if row["tool"] != "vegas":
            assert (row["layers"], row["bins"], row["learning_rate"]) == (8, 16, 1e-2), row

    # Parts of the suite run separately join into one report with the targets recomputed.
    (tmp_path / "part.json").write_text(json.dumps(
        dict(data, rows=[r for r in data["rows"] if r["integrand"] == "annulus"],
             integrands=[c for c in data["integrands"] if c["name"] == "annulus"])))
    (tmp_path / "first.json").write_text(json.dumps(
        dict(data, rows=[r for r in data["rows"] if r["integrand"] == "camel2"],
             integrands=[c for c in data["integrands"] if c["name"] == "camel2"])))
    merged = nis.main(["--merge", str(tmp_path / "first.json"), str(tmp_path / "part.json"),
                       "--out", str(tmp_path), "--name", "merged"], log=lambda *_: None)
    assert merged["rows"] == data["rows"] and merged["targets"] == data["targets"]
    assert "Merged from 2 runs" in (tmp_path / "merged.md").read_text()


def test_stratified_estimate_and_event_weights():
    """Two strata of different sizes: sum of the stratum means, errors in quadrature; the
    event weights N raw / N_c average to the same value."""
    rng = np.random.default_rng(0)
    raw = np.concatenate([rng.normal(1.0, 0.5, 300), rng.normal(2.0, 1.0, 100)])
    strata = np.repeat([0, 1], [300, 100])
    value, error = nis.stratified_estimate(raw, strata)
    assert value == pytest.approx(raw[:300].mean() + raw[300:].mean(), rel=1e-12)
    want = math.sqrt(raw[:300].var(ddof=1) / 300 + raw[300:].var(ddof=1) / 100)
    assert error == pytest.approx(want, rel=1e-12)
    events = nis.channel_event_weights(raw, strata)
    assert events.mean() == pytest.approx(value, rel=1e-12)


def test_vegas_final_estimate_is_vegas_own():
    """The hypercube-stratified estimate of the final sample equals vegas's own result of one
    non-adapting iteration drawn from the same random numbers."""
    vegas = pytest.importorskip("vegas")
    case = integrands.get("camel2")
    cfg = {"train_budget": 4000, "final_budget": 3000, "vegas_iterations": 4}
    ours = nis.run_vegas(case, cfg, seed=3)
    rng = np.random.default_rng(3)
    integ = vegas.Integrator([[0.0, 1.0]] * 2, ran_array_generator=rng.random)
    f = vegas.lbatchintegrand(case.numpy_fn)
    integ(f, nitn=4, neval=1000)
    res = integ(f, nitn=1, neval=3000, adapt=False)
    assert ours["value"] == pytest.approx(res.mean, rel=1e-12)
    assert ours["error"] == pytest.approx(res.sdev, rel=1e-9)
    assert ours["event_weights"].mean() == pytest.approx(res.mean, rel=1e-12)


def test_integrand_implementations_agree(dtype):
    """The JAX and NumPy versions of each toy integrand give the same values."""
    import jax
    import jax.numpy as jnp

    from tests.conftest import tol

    x = np.random.default_rng(1).random((256, 16))
    for name in ("camel4", "two_circles", "annulus", "gauss16"):
        case = integrands.get(name)
        xs = x[:, : case.dim]
        got = jax.vmap(case.jax_fn, in_axes=(0, None))(jnp.asarray(xs, dtype), None)
        assert got.dtype == dtype, name
        want = case.numpy_fn(np.asarray(jnp.asarray(xs, dtype), np.float64))
        # the same inputs (rounded to dtype); float32 arithmetic vs NumPy float64
        rtol = tol(dtype, 2e-5, 1e-11)
        np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol,
                                   atol=rtol * float(np.max(want)), err_msg=name)


def test_nis_seeds_smoke(tmp_path):
    """``benchmarks/nis_seeds.py``: one tiny run of ``nis.py`` per seed, then the statistics
    over the seeds, recomputed here from the runs it lists."""
    import nis_seeds

    tools = ["jaxnis"] + [t for t, mods in (("vegas", ("vegas",)),) if _available(*mods)]
    argv = ["--seeds", "0", "1", "--integrands", "annulus", "--tools", *tools,
            "--train-budget", "2000", "--final-budget", "2000", "--budget-scale", "1",
            "--batch-size", "500", "--vegas-iterations", "2",
            "--out", str(tmp_path), "--name", "seeds"]
    payload = nis_seeds.main(argv, log=lambda *_: None)

    data = json.loads((tmp_path / "seeds.json").read_text())
    assert "## Over the seeds" in (tmp_path / "seeds.md").read_text()
    assert data["settings"]["seeds"] == [0, 1] and data["settings"]["final_budget"] == 2000
    assert [(r["tool"], r["seed"]) for r in payload["rows"]] == [
        (t, s) for t in tools for s in (0, 1)]
    reference = integrands.get("annulus").reference
    for entry in payload["summary"]:
        runs = [r for r in payload["rows"] if r["tool"] == entry["tool"]]
        dev = np.array([r["value"] for r in runs]) - reference
        assert entry["rel_error_actual"] == pytest.approx(
            math.sqrt(np.mean(dev**2)) / reference, rel=1e-12)
        pulls = [r["pull"] for r in runs]
        assert entry["pull_mean"] == pytest.approx(np.mean(pulls), rel=1e-12)
        assert entry["pull_std"] == pytest.approx(np.std(pulls, ddof=1), rel=1e-12)
        assert entry["efficiency_min"] <= entry["efficiency_median"] <= entry["efficiency_max"]
        # two fixed seeds of a correct estimator: within a few of their own errors
        assert abs(entry["pull_mean"]) < 4, entry
    # each seed is its own run (jaxnis's seeds draw different events)
    assert payload["rows"][0]["value"] != payload["rows"][1]["value"]
    assert len(payload["targets"]) == (1 if len(tools) > 1 else 0)
    with pytest.raises(SystemExit):
        nis_seeds.main(["--seeds", "0", "--out", str(tmp_path)], log=lambda *_: None)
    for wrong in (["--seed", "3"], ["--seed=3"], ["--merge", "a.json"]):
        with pytest.raises(SystemExit, match="2"):
            nis_seeds.parse_args(["--seeds", "0", "1", *wrong])
    assert nis_seeds.parse_args(["--seeds", "0", "1", "--tools", "vegas"])[1] == [
        "--tools", "vegas"]
