"""Execute the code cells of ``notebooks/zprime_study.ipynb`` in quick mode (tiny samples),
so the notebook cannot rot.

The run imitates CI, which installs only the dev extra: matplotlib is hidden, so the plot
code is skipped (the notebook prints tables without it). XLA's optimisation passes are
switched off for the notebook's own compilations (``jax_disable_most_optimizations``): at
quick-mode sizes compiling dominates, and the unoptimised code computes the same numbers.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import jax
import numpy as np

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "zprime_study.ipynb"


def test_zprime_notebook_runs_in_quick_mode(monkeypatch):
    monkeypatch.setenv("JAXNIS_NOTEBOOK_QUICK", "1")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    code = [("".join(c["source"]), i) for i, c in enumerate(cells) if c["cell_type"] == "code"]
    assert len(code) >= 8
    namespace: dict = {"__name__": "__notebook__"}
    out = io.StringIO()
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        with contextlib.redirect_stdout(out):
            for source, i in code:
                exec(compile(source, f"{NOTEBOOK.name}[cell {i}]", "exec"), namespace)
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)
    text = out.getvalue()
    assert "quick mode | plots: False" in text and "E[r(theta0, theta1)]" in text
    ns = namespace
    # the reweighted and direct cross sections agree (the notebook's own claim)
    rw, direct = ns["rw"], ns["direct"]
    assert abs(float(rw.value) - float(direct.value)) < 4 * np.hypot(float(rw.error),
                                                                      float(direct.error))
    # the pathwise gradients agree with the central differences on the same points
    for name, fd in ns["fds"].items():
        both = np.hypot(float(fd.error), float(ns["est"].grad_error[name]))
        assert abs(float(fd.value) - float(ns["est"].grad[name])) < 4 * both, name
    assert np.all(np.isfinite(np.asarray(ns["fits"].errors["M_Zp"])))
    assert np.all(np.diff(np.asarray(ns["masses"])) > 0)
    for scan in (ns["scan"], ns["rw_scan"]):
        assert np.all(np.isfinite(np.asarray(scan.value)) & (np.asarray(scan.value) > 0))
