"""Shared helpers of the benchmark scripts: machine and version metadata, timing, output.

Each benchmark writes ``<name>.json`` (everything measured, with the settings, machine and
versions needed to reproduce it) and ``<name>.md`` (a human-readable summary) into
``benchmarks/results/`` unless told otherwise.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"

DEFAULT_PACKAGES = ("jax", "jaxlib", "numpy", "madspace", "torch")


def cpu_model() -> str:
    """CPU model name from ``/proc/cpuinfo`` (Linux), else :func:`platform.processor`."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), or ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def limit_cores(count: int | None) -> int:
    """Pin this process (and the threads it starts later) to ``count`` of its cores.

    XLA's CPU thread pool, MadSpace's workers and NumPy worker threads are all created
    after this call, so every library sees the same number of cores. Call it before JAX
    runs its first computation. ``None`` keeps the current affinity. Returns the count.
    """
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if count is None or not available:
        return usable_cores()
    if count < 1 or count > len(available):
        raise ValueError(f"threads={count} outside 1..{len(available)}")
    os.sched_setaffinity(0, available[:count])
    return count


def reuse_host_memory() -> str:
    """Apply ``jaxnis.host_memory.reuse_freed_memory`` for this benchmark process (every peer
    in it runs with the same allocator settings); returns what happened, for the JSON.

    Call it before JAX's first computation; in a process where JAX has already started (a
    benchmark's smoke test), or with ``JAXNIS_REUSE_MEMORY=0`` set, it changes nothing and
    says so.
    """
    import warnings

    import jax

    from jaxnis.host_memory import reuse_freed_memory

    if os.environ.get("JAXNIS_REUSE_MEMORY") == "0":
        return "allocator defaults (JAXNIS_REUSE_MEMORY=0)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        options = reuse_freed_memory()
    for name, value in options.items():
        jax.config.update(name, value)
    if options:
        return ("jaxnis.host_memory.reuse_freed_memory: glibc malloc without mmap or trimming "
                "(every peer in this process), JAX's CPU dispatch synchronous")
    reasons = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    reason = reasons[0] if reasons else "not glibc"
    return f"allocator defaults (reuse_freed_memory not applied: {reason})"


def machine_info() -> dict[str, Any]:
    """CPU model, logical/usable core counts, memory, OS and the load average at the call."""
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if hasattr(os, "getloadavg"):
        info["load_average_1_5_15min"] = [round(v, 2) for v in os.getloadavg()]
    return info


def versions(packages: Iterable[str] = DEFAULT_PACKAGES) -> dict[str, str]:
    """Python and package versions from the installed metadata (``"not installed"`` if absent).

    Reads metadata only, so nothing heavy (torch) is imported.
    """
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_state(files: dict[str, str | os.PathLike]) -> dict[str, Any]:
    """HEAD commit and, per file, its blob hash next to the blob of the same path at HEAD.

    ``files`` maps a repository path to the file actually used (it may live elsewhere, e.g.
    an export of HEAD), so a result records exactly which source it measured, committed
    or not.
    """
    import subprocess

    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                 timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    state: dict[str, Any] = {"head": git("rev-parse", "HEAD") or "unknown"}
    for repo_path, used in files.items():
        blob = git("hash-object", str(used)) or "missing"
        head_blob = git("rev-parse", f"HEAD:{repo_path}") or "not in HEAD"
        state[repo_path] = {"file": str(used), "blob": blob, "blob_at_head": head_blob,
                            "same_as_head": blob == head_blob}
    return state


def utc_now() -> str:
    """Current UTC date and time, ISO 8601, to the second."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def time_call(fn: Callable[[], Any], sync: Callable[[Any], Any] = lambda x: x) -> float:
    """Wall time in seconds of ``sync(fn())`` (``sync`` waits for asynchronous results)."""
    t0 = time.perf_counter()
    sync(fn())
    return time.perf_counter() - t0


def summarize_times(times: Sequence[float]) -> dict[str, Any]:
    """Median, minimum, maximum and all samples of a list of timings (seconds)."""
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "samples_s": list(times),
    }


def _clean(obj: Any) -> Any:
    """Make ``obj`` JSON-safe: NumPy scalars to Python, non-finite floats to strings."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "shape", None) == ():
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON (creating the folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(payload), indent=1) + "\n", encoding="utf-8")
    return path


def _restore(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _restore(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore(v) for v in obj]
    if obj in ("nan", "inf", "-inf"):
        return float(obj)
    return obj


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a file written by :func:`write_json`, turning ``"nan"``/``"inf"`` back into floats."""
    return _restore(json.loads(Path(path).read_text(encoding="utf-8")))


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
                   align: str | None = None) -> str:
    """A GitHub-flavoured markdown table; ``align`` is one of ``l``/``r``/``c`` per column."""
    headers = [str(h) for h in headers]
    align = align or "l" + "r" * (len(headers) - 1)
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(headers) + " |",
             "| " + " | ".join(marks[a] for a in align) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def metadata_markdown(meta: dict[str, Any]) -> str:
    """Markdown bullet list of the ``machine``, ``versions``, ``date`` and ``settings`` entries."""
    lines = [f"- date (UTC): {meta.get('date', '?')}"]
    machine = meta.get("machine", {})
    if machine:
        lines.append(
            f"- machine: {machine.get('cpu_model')}, {machine.get('usable_cores')} usable of "
            f"{machine.get('logical_cores')} logical cores, {machine.get('memory_gib', '?')} GiB, "
            f"{machine.get('platform')}")
    vers = meta.get("versions", {})
    if vers:
        lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()))
    settings = meta.get("settings", {})
    if settings:
        lines.append("- settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    return "\n".join(lines)


def write_markdown(path: str | os.PathLike, title: str, sections: Sequence[str]) -> Path:
    """Write ``# title`` followed by the given markdown sections; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = f"# {title}\n\n" + "\n\n".join(s.strip("\n") for s in sections) + "\n"
    path.write_text(body, encoding="utf-8")
    return path


def write_report(out: str | os.PathLike, name: str, title: str, payload: dict[str, Any],
                 sections: Sequence[str]) -> tuple[Path, Path]:
    """Write a benchmark's ``<out>/<name>.json`` (:func:`write_json`) and ``<out>/<name>.md``
    (:func:`write_markdown`); returns both paths."""
    out = Path(out)
    return (write_json(out / f"{name}.json", payload),
            write_markdown(out / f"{name}.md", title, sections))


def si(value: float, digits: int = 3) -> str:
    """Compact engineering notation: ``2.35M``, ``812k``; ``-`` for missing values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"
