"""The GPU figures of the benchmarks in one call of a GPU machine that has no network.

Two steps. Here, on a machine with the ``bench`` extra installed and network access, fetch
the Python 3.12 wheels of what the GPU machine lacks (its image has JAX with CUDA, PyTorch,
flax, optax, chex, NumPy and SciPy, but not madnis or vegas)::

    .venv/bin/python benchmarks/gpu_run.py --fetch-wheels      # into .whl/ (about 13 MB)

Then, on the GPU machine, from a copy of the repository with ``.whl/`` beside it::

    python3 benchmarks/gpu_run.py --out "$OUT" --deadline-s 540

That installs the wheels into ``/tmp/site`` (``--no-deps``, nothing fetched), records the
machine (``nvidia-smi``, JAX's devices, versions) and runs, each in its own process and
within the deadline, most important first:

1. ``benchmarks/nis.py`` one integrand per process (so that a deadline keeps the finished
   ones), jaxnis on the GPU against madnis on CUDA (``--torch-device cuda``) and vegas, at
   the default budgets; the parts are merged into ``<out>/nis_gpu.json`` and ``.md``;
2. ``benchmarks/flows.py`` at d = 4 and 16 (CPU rows at batch 1024, GPU rows at batches
   1024 to 262144) into ``<out>/flows_gpu.json`` and ``.md``;
3. a few statistical tests of ``tests/`` on the GPU (camel within three sigma, pulls over
   400 seeds, Drell-Yan's channels).

Every step's command, exit status, wall time and output tail go to ``<out>/gpu_run.json``,
the whole output to ``<out>/gpu_run.log``: six files, within what the machine sends back. A
step that would start with less than ``--min-step-s`` left is skipped and recorded as such;
a running step is stopped at the deadline. Copy the results into ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
WHEEL_DIR = ROOT / ".whl"
SITE = Path("/tmp/site")

#: What the run needs and the GPU machine's image lacks, as distributions of this
#: environment (fetched at the versions installed here, the ones the test suite ran with).
#: distrax is not among them: only ``jaxnis.flows.distrax_interop`` imports it.
WHEELS = ("madnis", "vegas", "gvar")
#: The GPU machine's Python and platform tags for ``pip download``.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")

#: The integrands of ``nis.py``'s default suite, in the order they are run.
NIS_SUITE = ("camel4", "annulus", "two_circles", "gauss16", "drell_yan", "camel8", "camel16",
             "three_jets", "mumugamma")
#: Tests run on the GPU (node ids relative to the repository root).
GPU_TESTS = (
    "tests/test_integrate.py::test_camel_within_three_sigma",
    "tests/test_integrate.py::test_pulls_over_400_seeds_are_standard_normal",
    "tests/test_integrate_processes.py::test_multichannel_drell_yan_beats_the_best_single_channel",
)


def fetch_wheels(dest: Path = WHEEL_DIR, python_version: str = "3.12", log=print) -> list[str]:
    """Download the wheels of :data:`WHEELS` at this environment's versions into ``dest``;
    returns the requirements fetched. Raises if one is not installed here."""
    reqs = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--python-version", python_version, "--implementation", "cp", "-d", str(dest)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    log(" ".join(cmd + reqs))
    subprocess.run(cmd + reqs, check=True)
    return reqs


def install_wheels(wheels: Path = WHEEL_DIR, site: Path = SITE) -> str:
    """Install the carried wheels into ``site`` (no index, no dependencies); returns what
    happened, in words."""
    found = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    if not found:
        return f"no wheels in {wheels}: using the installed packages"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(site),
                    *map(str, found)], check=True)
    return f"installed {len(found)} wheels into {site}"


def plan(out: Path, parts: Path, integrands=NIS_SUITE, nis_args=(), flows_args=None,
         tests=GPU_TESTS) -> list[dict[str, Any]]:
    """The steps, in order: ``{"name", "argv", "cap_s"}`` with ``cap_s`` the most a step may
    take (``None``: until the deadline)."""
    py = sys.executable
    steps = [{"name": "check", "cap_s": 120, "argv": [py, "-c", (
        "import jax, jaxnis; print(jax.devices()); "
        "r = jaxnis.Integrator(lambda x: 8 * x[0] * x[1] * x[2], dim=3, batch_size=512, "
        "progress=False).integrate(key=0, n_survey=20, n_refine=2); "
        "print(r); assert abs(r.value - 1) < 5 * r.error, r")]}]
    for name in integrands:
        steps.append({"name": f"nis {name}", "cap_s": None, "argv": [
            py, str(BENCHMARKS / "nis.py"), "--integrands", name, "--torch-device", "cuda",
            "--out", str(parts), "--name", f"nis_{name}", *nis_args]})
    steps.append({"name": "nis merge", "cap_s": 60, "merge": True, "argv": [
        py, str(BENCHMARKS / "nis.py"), "--out", str(out), "--name", "nis_gpu",
        "--note", "GPU run: benchmarks/gpu_run.py, one process per integrand.", "--merge"]})
    if flows_args is None:
        flows_args = ["--dims", "4", "16", "--batches", "1024", "--repeats", "5",
                      "--no-breakdown", "--gpu-batches", "1024", "16384", "262144"]
    steps.append({"name": "flows", "cap_s": None, "argv": [
        py, str(BENCHMARKS / "flows.py"), *flows_args, "--out", str(out),
        "--name", "flows_gpu"]})
    if tests:
        steps.append({"name": "tests", "cap_s": None, "argv": [
            py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W",
            "ignore::DeprecationWarning", *tests]})
    return steps


def run_steps(steps, deadline: float, log_file, min_step_s: float = 30.0,
              env: dict[str, str] | None = None, parts: Path | None = None) -> list[dict]:
    """Run ``steps`` in turn until ``deadline`` (a ``time.monotonic`` value); each step's
    output is appended to ``log_file``. A ``merge`` step gets the part files found in
    ``parts`` appended to its command (skipped when there are none)."""
    records = []
    for step in steps:
        argv = list(step["argv"])
        left = deadline - time.monotonic()
        record: dict[str, Any] = {"name": step["name"], "argv": argv}
        if step.get("merge"):
            found = sorted(parts.glob("*.json")) if parts and parts.is_dir() else []
            if not found:
                records.append(record | {"status": "skipped: no parts to merge"})
                continue
            argv += [str(p) for p in found]
            record["argv"] = argv
        if left < min_step_s:
            records.append(record | {"status": f"skipped: {left:.0f} s left"})
            continue
        limit = left if step["cap_s"] is None else min(left, step["cap_s"])
        log_file.write(f"\n=== {step['name']}: {' '.join(argv)}\n")
        log_file.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, cwd=ROOT)
        try:
            output, _ = proc.communicate(timeout=limit)
            status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            status = f"stopped after {limit:.0f} s"
        log_file.write(output)
        log_file.flush()
        records.append(record | {"status": status, "wall_s": round(time.perf_counter() - t0, 1),
                                 "tail": output[-2000:]})
        print(f"{step['name']}: {status} ({records[-1]['wall_s']} s)", flush=True)
    return records


def machine() -> dict[str, Any]:
    """The machine (:func:`_common.machine_info`), its GPU as ``nvidia-smi`` reports it, and
    the packages' versions (:func:`_common.versions`)."""
    info = _common.machine_info()
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    return info | {"versions": _common.versions(
        ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "madnis", "vegas"))}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fetch-wheels", action="store_true",
                   help="download the wheels into .whl/ and stop (run this where pip works)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_results")))
    p.add_argument("--deadline-s", type=float, default=540.0,
                   help="wall-clock budget of the whole run, in seconds")
    p.add_argument("--min-step-s", type=float, default=30.0,
                   help="do not start a step with less than this left")
    p.add_argument("--integrands", nargs="+", default=list(NIS_SUITE))
    p.add_argument("--nis-args", nargs=argparse.REMAINDER, default=[],
                   help="further nis.py arguments (last on the command line)")
    return p.parse_args(argv)


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.fetch_wheels:
        return {"fetched": fetch_wheels()}
    start = time.monotonic()
    deadline = start + args.deadline_s
    args.out.mkdir(parents=True, exist_ok=True)
    installed = install_wheels()
    if SITE.is_dir():  # the carried wheels' metadata, for the versions recorded below
        sys.path.insert(0, str(SITE))
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               # several JAX processes in turn: none keeps 75% of the GPU's memory
               XLA_PYTHON_CLIENT_PREALLOCATE="false",
               PYTHONPATH=os.pathsep.join(p for p in (
                   str(SITE) if SITE.is_dir() else "", str(ROOT),
                   os.environ.get("PYTHONPATH", "")) if p))
    parts = Path(os.environ.get("TMPDIR", "/tmp")) / "jaxnis_gpu_parts"
    shutil.rmtree(parts, ignore_errors=True)
    steps = plan(args.out, parts, args.integrands, args.nis_args)
    summary: dict[str, Any] = {"date": _common.utc_now(), "wheels": installed,
                               "deadline_s": args.deadline_s, "machine": machine()}
    with open(args.out / "gpu_run.log", "w", encoding="utf-8") as log_file:
        log_file.write(f"{summary}\n")
        summary["steps"] = run_steps(steps, deadline, log_file, args.min_step_s, env, parts)
    summary["total_s"] = round(time.monotonic() - start, 1)
    _common.write_json(args.out / "gpu_run.json", summary)
    return summary


if __name__ == "__main__":
    main()
