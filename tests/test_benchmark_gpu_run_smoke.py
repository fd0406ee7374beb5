"""Smoke tests of ``benchmarks/gpu_run.py``, the driver of the one-call GPU run.

The GPU run itself needs a GPU machine; here its plan is checked against the scripts it
calls (every command parses with that script's own argument parser, every test it names
exists, the integrands are ``nis.py``'s suite), and its step runner is driven with small
stand-in commands: output logged, a step stopped at the deadline, later steps skipped, a
merge without parts skipped.
"""

from __future__ import annotations

import io
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import nis  # noqa: E402

import flows  # noqa: E402
import gpu_run  # noqa: E402
import integrands  # noqa: E402


def test_plan_commands_parse_with_the_scripts_own_parsers(tmp_path):
    steps = gpu_run.plan(tmp_path / "out", tmp_path / "parts")
    names = [s["name"] for s in steps]
    assert names[0] == "check" and names[-3:] == ["nis merge", "flows", "tests"]
    assert set(gpu_run.NIS_SUITE) == set(integrands.DEFAULT_SUITE)
    runs = [s for s in steps if s["name"].startswith("nis ") and not s.get("merge")]
    assert [s["name"][4:] for s in runs] == list(gpu_run.NIS_SUITE)
    for step in runs:
        args = nis.parse_args(step["argv"][2:])
        assert args.torch_device == "cuda" and args.out == tmp_path / "parts"
        assert args.integrands == [step["name"][4:]]
    merge = next(s for s in steps if s.get("merge"))
    parts = [str(tmp_path / "parts" / "a.json"), str(tmp_path / "parts" / "b.json")]
    args = nis.parse_args(merge["argv"][2:] + parts)
    assert args.merge == [Path(p) for p in parts] and args.name == "nis_gpu"
    (flow_step,) = [s for s in steps if s["name"] == "flows"]
    args = flows.parse_args(flow_step["argv"][2:])
    assert args.dims == [4, 16] and args.gpu_batches == [1024, 16384, 262144]
    assert not args.no_gpu and args.name == "flows_gpu"


def test_the_tests_it_names_exist():
    for node in gpu_run.GPU_TESTS:
        path, name = node.split("::")
        source = (ROOT / path).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), node


def test_steps_run_in_order_until_the_deadline(tmp_path):
    py = sys.executable
    steps = [
        {"name": "say", "cap_s": None, "argv": [py, "-c", "print('hello from a step')"]},
        {"name": "fail", "cap_s": None, "argv": [py, "-c", "raise SystemExit(3)"]},
        {"name": "merge", "cap_s": 10, "merge": True, "argv": [py, "-c", "pass"]},
        {"name": "long", "cap_s": 1.5, "argv": [py, "-c", "import time; time.sleep(30)"]},
        {"name": "late", "cap_s": None, "argv": [py, "-c", "pass"]},
    ]
    log = io.StringIO()
    t0 = time.monotonic()
    records = gpu_run.run_steps(steps, time.monotonic() + 8.0, log, min_step_s=0.5,
                                parts=tmp_path / "none")
    status = {r["name"]: r["status"] for r in records}
    assert status["say"] == "ok" and "hello from a step" in log.getvalue()
    assert status["fail"] == "exit 3"
    assert status["merge"] == "skipped: no parts to merge"
    assert status["long"].startswith("stopped after")  # its own cap, 1.5 s
    assert status["late"] == "ok"
    assert time.monotonic() - t0 < 8.0
    records = gpu_run.run_steps(steps[:1], time.monotonic() + 0.1, io.StringIO(),
                                min_step_s=0.5)
    assert records[0]["status"].startswith("skipped")


def test_merge_step_takes_the_parts_found(tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    for name in ("nis_b.json", "nis_a.json", "nis_a.md"):
        (parts / name).write_text("{}")
    py = sys.executable
    steps = [{"name": "merge", "cap_s": 10, "merge": True,
              "argv": [py, "-c", "import sys; print(sys.argv[1:])"]}]
    (record,) = gpu_run.run_steps(steps, time.monotonic() + 10, io.StringIO(), 0.5,
                                  parts=parts)
    assert record["status"] == "ok"
    assert record["argv"][-2:] == [str(parts / "nis_a.json"), str(parts / "nis_b.json")]
