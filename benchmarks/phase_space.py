"""Phase-space generation speed: jaxnis vs MadSpace vs plain NumPy, side by side.

Usage (from the repository root)::

    .venv/bin/python benchmarks/phase_space.py            # full grid, batches of 1e6
    .venv/bin/python benchmarks/phase_space.py --quick    # small batches, checks the harness
    .venv/bin/python benchmarks/phase_space.py --n 4 --algos diet --dtypes float64
    .venv/bin/python benchmarks/phase_space.py --rows target --variant-n 4   # the target row

Writes ``benchmarks/results/phase_space.json`` and ``phase_space.md`` (``--out`` elsewhere).

What is compared, for RAMBO (``4 n`` random numbers) and RAMBO-on-diet (``3 n - 4``),
``n = 3..8``, massless and massive, float32 and float64, at ``sqrt(s) = 1000`` GeV:

* **jaxnis**: ``jax.vmap(m.forward, in_axes=(0, None))`` of
  ``jaxnis.phasespace.rambo.Rambo`` / ``RamboOnDiet``, evaluated by the library's chunked
  evaluator ``jaxnis.batching.BatchEvaluator`` (``--jax-chunk`` events per jitted call,
  default ``jaxnis.batching.DEFAULT_CHUNK``), and, as the row **jaxnis 1 call**, by one
  ``jax.jit`` call on the whole batch.
* **MadSpace** (C++): the ``fast_rambo_massless_com`` / ``fast_rambo_massive_com``
  instruction that ``FastRamboMapping(n, massless).forward_function()`` records, built
  with a ``FunctionBuilder`` that takes ``r`` as one ``[N, 3n-4]`` array and returns
  momenta ``[N, n, 4]`` (the layout jaxnis uses; the Mapping interface adds per-column
  stack/unstack copies). It is checked to give the same numbers as ``map_forward``.
  MadSpace has no plain RAMBO and its runtime takes float64 only, so it appears in the
  float64 RAMBO-on-diet rows. Its FastRambo replaces the exact RAMBO-on-diet mass
  inversion by a fitted rational-quadratic map, so its weight is not constant; it maps
  the same random-number count to momenta and a weight, which is the same work.
* **NumPy**: ``benchmarks/numpy_rambo.py``, batch-vectorised, chunks of the batch run in
  a thread pool of the same size as the other peers' (ufuncs release the GIL).

Fairness: the uniform random numbers are generated once, before timing, and all peers
read the same array (random-number generation is **excluded** from the main table; a
separate table times each library's own generator plus the map, RAMBO-on-diet massless).
Every peer runs on the same cores: the process is pinned to ``--threads`` cores before
JAX starts, which sizes XLA's CPU thread pool; MadSpace's ``Context`` gets that thread
count and NumPy that many worker threads. Timed: the median of ``--repeats`` calls (3;
``--target-repeats`` 7 for the target row) after one warm-up call, the peers' calls
interleaved round-robin so that a shared machine loads them alike; JAX results are waited
for with ``block_until_ready``. The process CPU time of each call is recorded too. The JAX
compile time (``lower(...).compile()``) and MadSpace's graph/runtime set-up are reported
separately. A third table calls jaxnis with other chunk sizes (``--chunk-sweep``), as one
call, and in the batch-minor layout (see :class:`JaxnisPeer`). ``--rows`` selects rows of
the main table (``--rows target`` is the target row).

Equal work is checked on the warm-up outputs of every peer: the mean weight against the
massless volume of ``REFERENCES.md`` (massive: the quadrature value for n = 3, else a
high-statistics NumPy estimate), momentum conservation and mass shells. MadSpace's
weight omits the ``(2 pi)^(4 - 3n)`` of the ``REFERENCES.md`` convention; it is
converted here.

On a GPU (``jax.devices('gpu')``), jaxnis is also timed there and the bytes written per
event (momenta and log weight) give the fraction of the measured copy bandwidth.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
import numpy_rambo  # noqa: E402

SQRT_S = 1000.0
# Top pair, gluon, W pair, b pair, gluon: the first n are used; (173, 173, 0) matches REFERENCES.md.
MASSES = (173.0, 173.0, 0.0, 80.4, 80.4, 4.7, 4.7, 0.0)
# Massive volumes (value, standard error, source) at SQRT_S with MASSES[:n], REFERENCES.md
# convention. n >= 4 from `python benchmarks/numpy_rambo.py`: RAMBO (xi rescaling) and
# RAMBO-on-diet (mass shift), two constructions, 1.6e7 events each on independent streams,
# inverse-variance combined (they agree within 1.3 sigma for every n; for n = 3 the same run
# gives 74.8527 +- 0.0030, -1.2 sigma from the quadrature value used here).
_MC = "NumPy RAMBO + RAMBO-on-diet (mass shift), 2 x 1.6e7 events"
MASSIVE_REFERENCE: dict[int, tuple[float, float, str]] = {
    3: (74.856206, 0.0, "REFERENCES.md quadrature"),
    4: (35204.15283, 2.4, _MC),
    5: (5327121.424, 582.0, _MC),
    6: (579066327.8, 6.96e4, _MC),
    7: (3.946798751e10, 5.74e6, _MC),
    8: (1.861327262e12, 3.07e8, _MC),
}
ALGOS = {"rambo": "RAMBO", "diet": "RAMBO-on-diet"}
PEERS = ("jaxnis", "jaxnis_single", "madspace", "numpy")
PEER_LABELS = {"jaxnis": "jaxnis", "jaxnis_single": "jaxnis 1 call", "madspace": "MadSpace",
               "numpy": "NumPy"}
TARGET = ("diet", 4, False, "float64")  # jaxnis vs MadSpace: aim >= 1 (1.5)
PULL_LIMIT = 5.0  # |pull| of a mean weight; 5 sigma as ~100 rows are compared per run
# Max over the batch of |sum p - P| / sqrt(s) and |p^2 - m^2| / s. float64: far above
# rounding (1e-13 seen) yet catches any wrong boost; float32: RAMBO's sums of ~n
# exponential energies lose ~1e-4 relative over 1e6 events.
TOLERANCE = {"float64": {"momentum": 1e-8, "mass_shell": 1e-8, "constant_weight": 1e-10},
             "float32": {"momentum": 2e-3, "mass_shell": 2e-3, "constant_weight": 1e-4}}


def random_dim(algo: str, n: int) -> int:
    """Random numbers per event: ``4 n`` (RAMBO) or ``3 n - 4`` (RAMBO-on-diet)."""
    return 4 * n if algo == "rambo" else 3 * n - 4


@dataclass(frozen=True)
class Case:
    algo: str
    n: int
    massive: bool
    dtype: str
    batch: int

    @property
    def d(self) -> int:
        return random_dim(self.algo, self.n)

    @property
    def masses(self) -> np.ndarray:
        return np.asarray(MASSES[:self.n] if self.massive else (0.0,) * self.n, dtype=self.dtype)

    def label(self) -> str:
        return (f"{ALGOS[self.algo]} n={self.n} {'massive' if self.massive else 'massless'} "
                f"{self.dtype}")


def make_inputs(case: Case, seed: int) -> np.ndarray:
    """Uniform ``r [batch, d]`` in ``[eps, 1 - eps]`` of the case dtype (open at 0 for logs)."""
    rng = np.random.default_rng([seed, case.n, case.d])
    r = rng.random((case.batch, case.d), dtype=np.float64).astype(case.dtype)
    eps = np.finfo(case.dtype).eps
    np.clip(r, eps, 1 - eps, out=r)
    return r


# --------------------------------------------------------------------------- peers


class Skip(Exception):
    """A peer cannot run a case; the message says why."""


@dataclass
class Prepared:
    """A ready-to-time peer: ``call()`` runs one batch and waits for it."""

    call: Any
    weights_and_momenta: Any  # outputs of call() -> (w [N] float64 REFERENCES convention, p)
    setup_s: float | None
    info: dict[str, Any]


class NumpyPeer:
    name = "numpy"

    def __init__(self, threads: int, chunk: int):
        self.threads, self.chunk = threads, chunk

    def prepare(self, case: Case, r: np.ndarray) -> Prepared:
        fn = numpy_rambo.rambo if case.algo == "rambo" else numpy_rambo.rambo_on_diet
        masses = case.masses if case.massive else None

        def call():
            return numpy_rambo.run_chunked(fn, r, SQRT_S, masses, threads=self.threads,
                                           chunk=self.chunk)

        def convert(out):
            p, lw = out
            return np.exp(lw.astype(np.float64)), p

        return Prepared(call, convert, None,
                        {"threads": self.threads, "chunk": self.chunk})

    def with_rng(self, case: Case, seed: int) -> Prepared:
        fn = numpy_rambo.rambo if case.algo == "rambo" else numpy_rambo.rambo_on_diet
        masses = case.masses if case.massive else None
        eps = np.finfo(case.dtype).eps
        dt = np.dtype(case.dtype).type

        def block(start, stop):
            rng = np.random.default_rng([seed, start])  # one stream per block
            r = rng.random((stop - start, case.d), dtype=dt)
            np.clip(r, eps, 1 - eps, out=r)
            return fn(r, SQRT_S, masses)

        def call():
            return numpy_rambo.run_blocks(block, case.batch, threads=self.threads,
                                          chunk=self.chunk)

        return Prepared(call, lambda out: (np.exp(out[1].astype(np.float64)), out[0]), None,
                        {"rng": "numpy default_rng (PCG64), one stream per block"})


class JaxnisPeer:
    """jaxnis maps, ``m.forward`` batched by ``jax.vmap(m.forward, in_axes=(0, None))``.

    Modes (same per-event code):

    * ``"chunked"`` (the ``jaxnis`` rows): the library's chunked evaluator,
      ``jaxnis.batching.BatchEvaluator(batched, chunk=chunk, in_axes=(0, None))``: jitted
      calls on ``chunk`` events each, dispatched asynchronously and concatenated into one
      ``[N, n, 4]`` array; XLA's CPU intermediates then stay in cache. Compile time:
      ``evaluator.lower(r, cond).compile()`` (the chunk-shaped program).
    * ``"single"`` (the ``jaxnis_single`` rows): one ``jax.jit(batched)`` call on the whole
      batch, compile time ``lower(...).compile()`` at the batch shape.
    * ``"batch_minor"`` (call-variants table only): one call on ``r [d, N]`` returning
      momenta ``[n, 4, N]`` (``in_axes=(1, None), out_axes=-1``), a different contract.
    """

    name = "jaxnis"
    MODES = ("chunked", "single", "batch_minor")

    def __init__(self, mode: str = "chunked", chunk: int | None = None, device=None):
        import jax

        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.jax = jax
        self.device = device if device is not None else jax.devices("cpu")[0]
        try:
            from jaxnis.phasespace import rambo as rambo_module
        except ImportError as exc:  # the module is optional while it is being written
            raise Skip(f"jaxnis.phasespace.rambo not importable: {exc}") from exc
        self.module = rambo_module
        if mode == "chunked":
            from jaxnis import batching

            self.batching = batching
            self.chunk = batching.DEFAULT_CHUNK if chunk is None else chunk
        else:
            self.chunk = None

    def _map(self, case: Case):
        cls = self.module.Rambo if case.algo == "rambo" else self.module.RamboOnDiet
        m = cls(case.n, massive=case.massive)
        if m.n_random != case.d:
            raise Skip(f"{cls.__name__}.n_random = {m.n_random}, expected {case.d}")
        return m

    def _cond(self, case: Case):
        jnp = self.jax.numpy
        cond = {"sqrt_s": jnp.asarray(SQRT_S, dtype=case.dtype),
                "masses": jnp.asarray(case.masses, dtype=case.dtype)}
        return self.jax.device_put(cond, self.device)

    def _check_dtype(self, case: Case):
        if case.dtype == "float64" and not self.jax.config.read("jax_enable_x64"):
            raise Skip("float64 needs jax_enable_x64")

    def prepare(self, case: Case, r: np.ndarray) -> Prepared:
        jax = self.jax
        self._check_dtype(case)
        m = self._map(case)
        cond = self._cond(case)
        minor = self.mode == "batch_minor"
        r_dev = jax.device_put(np.ascontiguousarray(r.T) if minor else r, self.device)
        batched = jax.vmap(m.forward, in_axes=(1 if minor else 0, None),
                           out_axes=-1 if minor else 0)
        info: dict[str, Any] = {"device": str(self.device), "mode": self.mode}
        if self.mode == "chunked":
            evaluator = self.batching.BatchEvaluator(batched, chunk=self.chunk,
                                                     in_axes=(0, None))
            t0 = time.perf_counter()
            compiled = evaluator.lower(r_dev, cond).compile()
            setup = time.perf_counter() - t0
            info["chunk"] = self.chunk
            run = evaluator
        else:
            t0 = time.perf_counter()
            compiled = jax.jit(batched).lower(r_dev, cond).compile()
            setup = time.perf_counter() - t0
            run = compiled
        info.update(cost_analysis=_cost(compiled), hlo=hlo_summary(compiled.as_text()))

        def call():
            return jax.block_until_ready(run(r_dev, cond))

        def convert(out):
            p, lw = out
            p = np.moveaxis(np.asarray(p), -1, 0) if minor else np.asarray(p)
            return np.exp(np.asarray(lw, dtype=np.float64)), p

        return Prepared(call, convert, setup, info)

    def with_rng(self, case: Case, seed: int) -> Prepared:
        """The map and its random numbers in one program. Single call: one
        ``jax.random.uniform`` ``[N, d]``; chunked: event ``i`` draws its ``d`` numbers
        from ``fold_in(key, i)`` inside the evaluator (a counter-based stream, so each
        chunk generates its own numbers)."""
        jax = self.jax
        self._check_dtype(case)
        m = self._map(case)
        cond = self._cond(case)
        key = jax.device_put(jax.random.key(seed), self.device)
        impl = jax.config.jax_default_prng_impl

        if self.mode == "chunked":
            def event(i, key, cond):
                r = jax.random.uniform(jax.random.fold_in(key, i), (case.d,), dtype=case.dtype)
                return m.forward(r, cond)

            evaluator = self.batching.BatchEvaluator(
                jax.vmap(event, in_axes=(0, None, None)), chunk=self.chunk,
                in_axes=(0, None, None))
            index = jax.device_put(np.arange(case.batch, dtype=np.uint32), self.device)
            args = (index, key, cond)
            t0 = time.perf_counter()
            evaluator.lower(*args).compile()
            run, rng = evaluator, f"jax.random.uniform(fold_in(key, event index)) ({impl})"
        else:
            def draw_and_map(key, cond):
                r = jax.random.uniform(key, (case.batch, case.d), dtype=case.dtype)
                return jax.vmap(m.forward, in_axes=(0, None))(r, cond)

            args = (key, cond)
            t0 = time.perf_counter()
            run = jax.jit(draw_and_map).lower(*args).compile()
            rng = f"jax.random.uniform ({impl})"
        setup = time.perf_counter() - t0
        return Prepared(lambda: jax.block_until_ready(run(*args)),
                        lambda out: (np.exp(np.asarray(out[1], dtype=np.float64)),
                                     np.asarray(out[0])),
                        setup, {"rng": rng})


def _cost(compiled) -> dict[str, float]:
    """Flops, transcendentals and bytes accessed of a compiled executable (XLA's estimate)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001  # not every backend/version provides it
        return {}
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else {}
    keys = ("flops", "transcendentals", "bytes accessed")
    return {k: float(cost[k]) for k in keys if k in cost}


HLO_OPS = ("exponential", "log", "sine", "cosine", "sqrt", "rsqrt", "power", "divide",
           "atan2", "while", "fusion", "copy", "transpose", "concatenate", "select", "sort")


def hlo_summary(text: str) -> dict[str, int]:
    """Count selected op kinds in optimised HLO text: transcendentals, loops, fusions, copies."""
    counts = dict.fromkeys(HLO_OPS, 0)
    for line in text.splitlines():
        line = line.strip()
        if "=" not in line or line.startswith(("HloModule", "ROOT %tuple", "//")):
            continue
        rhs = line.split("=", 1)[1]
        for op in HLO_OPS:
            if f" {op}(" in rhs:
                counts[op] += 1
    return counts


class MadSpacePeer:
    name = "madspace"

    def __init__(self, threads: int):
        try:
            import madspace
        except ImportError as exc:  # optional extra "bench"
            raise Skip(f"madspace not importable: {exc}") from exc
        self.ms = madspace
        self.threads = threads
        self.context = madspace.Context(madspace.cpu_device(), threads)

    def _check(self, case: Case):
        if case.algo != "diet":
            raise Skip("MadSpace has no plain RAMBO (FastRamboMapping is RAMBO-on-diet-like)")
        if case.dtype != "float64":
            raise Skip("MadSpace's runtime takes float64 inputs only")

    def _function(self, case: Case, with_rng: bool):
        ms = self.ms
        inputs = [] if with_rng else [("r", ms.batch_float_array(case.d))]
        inputs.append(("e_cm", ms.batch_float))
        if case.massive:
            inputs.append(("masses", ms.batch_float_array(case.n)))
        fb = ms.FunctionBuilder(ms.NamedTypes(inputs),
                                ms.NamedTypes([("p", ms.batch_four_vec_array(case.n)),
                                               ("det", ms.batch_float)]))
        k = 0 if with_rng else 1
        e_cm = fb.input(k)
        if with_rng:
            r = fb.random(fb.batch_size([e_cm]), ms.Value(case.d))
        else:
            r = fb.input(0)
        if case.massive:
            p, det = fb.fast_rambo_massive_com(r, e_cm, fb.input(k + 1))
        else:
            p, det = fb.fast_rambo_massless_com(r, e_cm)
        fb.output(0, p)
        fb.output(1, det)
        return fb.function()

    def _args(self, case: Case, r: np.ndarray | None):
        args = [] if r is None else [np.ascontiguousarray(r, dtype=np.float64)]
        args.append(np.full(case.batch, SQRT_S))
        if case.massive:
            args.append(np.ascontiguousarray(np.broadcast_to(case.masses, (case.batch, case.n)),
                                             dtype=np.float64))
        return args

    def _same_as_mapping(self, case: Case, args, runtime) -> bool:
        """The builder graph reproduces ``FastRamboMapping.map_forward`` on 100 events."""
        k = min(100, case.batch)
        small = [a[:k] for a in args]
        p, det = (np.from_dlpack(t) for t in runtime.call(small))
        mapping = self.ms.FastRamboMapping(case.n, not case.massive)
        r_cols = [np.ascontiguousarray(small[0][:, i]) for i in range(case.d)]
        conds = [small[1]]
        if case.massive:
            conds += [np.ascontiguousarray(small[2][:, i]) for i in range(case.n)]
        ref = mapping.map_forward(r_cols, conds)
        p_ref = np.stack([np.asarray(ref[i]) for i in range(case.n)], axis=1)
        return bool(np.allclose(p, p_ref, rtol=1e-12, atol=1e-9)
                    and np.allclose(det, np.asarray(ref[-1]), rtol=1e-12))

    def _convert(self, case: Case):
        scale = (2.0 * math.pi) ** (4 - 3 * case.n)  # MadSpace omits (2 pi)^(4 - 3n)

        def convert(out):
            p, det = out
            return np.asarray(det, dtype=np.float64) * scale, p

        return convert

    def prepare(self, case: Case, r: np.ndarray) -> Prepared:
        self._check(case)
        ms = self.ms
        args = self._args(case, r)
        t0 = time.perf_counter()
        runtime = ms.FunctionRuntime(self._function(case, with_rng=False), self.context)
        setup = time.perf_counter() - t0

        def call():
            return tuple(np.from_dlpack(t) for t in runtime.call(args))

        info = {"threads": self.threads, "same_as_mapping_api": self._same_as_mapping(
            case, args, runtime)}
        return Prepared(call, self._convert(case), setup, info)

    def with_rng(self, case: Case, seed: int) -> Prepared:
        self._check(case)
        ms = self.ms
        args = self._args(case, None)
        t0 = time.perf_counter()
        runtime = ms.FunctionRuntime(self._function(case, with_rng=True), self.context)
        setup = time.perf_counter() - t0
        return Prepared(lambda: tuple(np.from_dlpack(t) for t in runtime.call(args)),
                        self._convert(case), setup,
                        {"rng": "MadSpace graph instruction random (its own generator)"})


# --------------------------------------------------------------------------- validation


def reference_volume(case: Case) -> tuple[float, float, str]:
    """(volume, standard error, source) the mean weight of ``case`` must reproduce."""
    if not case.massive:
        return numpy_rambo.massless_volume(case.n, SQRT_S), 0.0, "massless formula"
    if case.n in MASSIVE_REFERENCE:
        return MASSIVE_REFERENCE[case.n]
    return float("nan"), float("nan"), "none"


def validate(case: Case, w: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """Mean weight vs the reference volume, momentum conservation and mass shells."""
    p = np.asarray(p, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    tol = TOLERANCE[case.dtype]
    finite = np.isfinite(w) & np.all(np.isfinite(p), axis=(1, 2))
    n_bad = int(np.size(w) - np.count_nonzero(finite))
    wf = w[finite]
    mean = float(wf.mean()) if wf.size else float("nan")
    err = float(wf.std(ddof=1) / math.sqrt(wf.size)) if wf.size > 1 else float("nan")
    ref, ref_err, source = reference_volume(case)
    total = np.array([SQRT_S, 0.0, 0.0, 0.0])
    cons = float(np.max(np.abs(p.sum(axis=1) - total)) / SQRT_S)
    m2 = p[..., 0] ** 2 - np.sum(p[..., 1:] ** 2, axis=-1)
    shell = float(np.max(np.abs(m2 - case.masses.astype(np.float64) ** 2)) / SQRT_S**2)
    out: dict[str, Any] = {
        "mean_weight": mean, "mean_weight_err": err, "reference": ref,
        "reference_err": ref_err, "reference_source": source,
        "mean_over_reference": mean / ref if math.isfinite(ref) else float("nan"),
        "max_momentum_violation_rel": cons, "max_mass_shell_violation_rel": shell,
        "non_finite": n_bad,
    }
    sigma = math.hypot(err, ref_err) if math.isfinite(ref) else float("nan")
    if not math.isfinite(ref):
        weight_ok = None  # decided later against the other peers
        out["pull"] = float("nan")
    elif sigma < tol["constant_weight"] * abs(ref):
        # (Nearly) constant weight: the standard error says nothing; compare to the volume.
        out["pull"] = float("nan")
        weight_ok = abs(mean - ref) <= tol["constant_weight"] * abs(ref)
    else:
        out["pull"] = (mean - ref) / sigma
        weight_ok = abs(out["pull"]) < PULL_LIMIT
    out["weight_ok"] = weight_ok
    out["kinematics_ok"] = (n_bad == 0 and cons <= tol["momentum"]
                            and shell <= tol["mass_shell"])
    return out


def cross_check(rows: list[dict[str, Any]]) -> None:
    """Rows without a reference volume: compare each mean to the combination of the others.

    Used for massive n >= 4 when MASSIVE_REFERENCE has no entry; the other rows of the
    same n (every algorithm, dtype and peer) are combined by inverse variance.
    """
    groups: dict[int, list[dict]] = {}
    for row in rows:
        v = row.get("validation")
        if v and row["massive"] and not math.isfinite(v["reference"]):
            groups.setdefault(row["n"], []).append(row)
    for members in groups.values():
        for row in members:
            v = row["validation"]
            others = [o["validation"] for o in members if o is not row
                      and math.isfinite(o["validation"]["mean_weight_err"])
                      and o["validation"]["mean_weight_err"] > 0]
            if not others:
                v["weight_ok"] = bool(math.isfinite(v["mean_weight"]))
                v["reference_source"] = "none (no other estimate)"
                continue
            wts = [1 / o["mean_weight_err"] ** 2 for o in others]
            ref = sum(wt * o["mean_weight"] for wt, o in zip(wts, others, strict=True)) / sum(wts)
            ref_err = 1 / math.sqrt(sum(wts))
            v.update(reference=ref, reference_err=ref_err,
                     reference_source="combination of the other rows (same n, masses)",
                     mean_over_reference=v["mean_weight"] / ref,
                     pull=(v["mean_weight"] - ref) / math.hypot(v["mean_weight_err"], ref_err))
            v["weight_ok"] = abs(v["pull"]) < PULL_LIMIT


# --------------------------------------------------------------------------- timing


def time_peers(prepared: dict[str, Prepared], repeats: int) -> dict[str, dict[str, list]]:
    """Interleave the peers' calls round-robin (rotating the start); wall and CPU times.

    The process CPU time of a call (all its threads) is less sensitive than the wall time
    to other jobs on a shared machine; both are recorded.
    """
    names = list(prepared)
    times: dict[str, dict[str, list]] = {k: {"wall": [], "cpu": []} for k in names}
    for rep in range(repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            c0, t0 = time.process_time(), time.perf_counter()
            out = prepared[name].call()
            times[name]["wall"].append(time.perf_counter() - t0)
            times[name]["cpu"].append(time.process_time() - c0)
            del out
    return times


def _store_times(row: dict[str, Any], times: dict[str, list], batch: int) -> None:
    row.update(_common.summarize_times(times["wall"]))
    row["events_per_s"] = batch / row["median_s"]
    row["cpu_samples_s"] = times["cpu"]
    row["events_per_cpu_s"] = batch / float(np.median(times["cpu"]))


def run_case(case: Case, peers: dict[str, Any], repeats: int, seed: int,
             log=print) -> list[dict[str, Any]]:
    """Prepare, validate (warm-up outputs) and time every peer on one case."""
    r = make_inputs(case, seed)
    rows, prepared = [], {}
    for name, peer in peers.items():
        row = {"algo": case.algo, "n": case.n, "massive": case.massive, "dtype": case.dtype,
               "batch": case.batch, "peer": name}
        try:
            prep = peer.prepare(case, r)
        except Skip as exc:
            row["skipped"] = str(exc)
            rows.append(row)
            continue
        w, p = prep.weights_and_momenta(prep.call())  # warm-up call, also validated
        row["validation"] = validate(case, w, p)
        del w, p
        row["setup_s"] = prep.setup_s
        row["info"] = prep.info
        prepared[name] = prep
        rows.append(row)
    gc.collect()
    times = time_peers(prepared, repeats)
    for row in rows:
        if row["peer"] in times:
            _store_times(row, times[row["peer"]], case.batch)
    log(case.label() + ": " + ", ".join(
        f"{row['peer']} {_common.si(row['events_per_s'])}/s" for row in rows
        if "events_per_s" in row))
    return rows


def run_rng_case(case: Case, peers: dict[str, Any], repeats: int, seed: int,
                 log=print) -> list[dict[str, Any]]:
    """Like :func:`run_case`, but each peer draws its own random numbers inside the call."""
    rows, prepared = [], {}
    for name, peer in peers.items():
        row = {"algo": case.algo, "n": case.n, "massive": case.massive, "dtype": case.dtype,
               "batch": case.batch, "peer": name, "rng_included": True}
        try:
            prep = peer.with_rng(case, seed)
        except Skip as exc:
            row["skipped"] = str(exc)
            rows.append(row)
            continue
        w, p = prep.weights_and_momenta(prep.call())
        row["validation"] = validate(case, w, p)
        del w, p
        row["setup_s"], row["info"] = prep.setup_s, prep.info
        prepared[name] = prep
        rows.append(row)
    times = time_peers(prepared, repeats)
    for row in rows:
        if row["peer"] in times:
            _store_times(row, times[row["peer"]], case.batch)
    log("[rng included] " + case.label() + ": " + ", ".join(
        f"{row['peer']} {_common.si(row['events_per_s'])}/s" for row in rows
        if "events_per_s" in row))
    return rows


# --------------------------------------------------------------------------- accelerator


def gpu_devices() -> list:
    """JAX's GPU devices, or ``[]``."""
    import jax

    try:
        return list(jax.devices("gpu"))
    except RuntimeError:
        return []


def copy_bandwidth(device, repeats: int = 5, nbytes: int = 1 << 30) -> float:
    """Achieved bytes/s (read + write) of ``x + 1`` over a float32 array on ``device``."""
    import jax
    import jax.numpy as jnp

    x = jax.device_put(jnp.zeros(nbytes // 4, dtype=jnp.float32), device)
    f = jax.jit(lambda a: a + 1).lower(x).compile()
    jax.block_until_ready(f(x))
    times = [_common.time_call(lambda: f(x), jax.block_until_ready) for _ in range(repeats)]
    return 2 * nbytes / float(np.median(times))


def accelerator_rows(device, cases: list[Case], repeats: int, seed: int,
                     bandwidth_bytes: int = 1 << 30, log=print) -> dict[str, Any]:
    """jaxnis events/s on ``device`` and the implied fraction of its copy bandwidth.

    Bytes per event: read ``d`` random numbers, write ``4 n`` momentum components and one
    log weight, all of the case dtype. The fraction compares ``events/s * bytes`` with the
    bandwidth of an elementwise ``x + 1`` (read + write) on the same device.
    """
    peer = JaxnisPeer("single", device=device)  # a GPU wants the whole batch at once
    bw = copy_bandwidth(device, nbytes=bandwidth_bytes)
    rows = []
    for case in cases:
        row = {"algo": case.algo, "n": case.n, "massive": case.massive, "dtype": case.dtype,
               "batch": case.batch, "peer": "jaxnis", "device": str(device)}
        try:
            prep = peer.prepare(case, make_inputs(case, seed))
        except Skip as exc:
            row["skipped"] = str(exc)
            rows.append(row)
            continue
        w, p = prep.weights_and_momenta(prep.call())
        row["validation"] = validate(case, w, p)
        del w, p
        _store_times(row, time_peers({"jaxnis": prep}, repeats)["jaxnis"], case.batch)
        row["setup_s"] = prep.setup_s
        eps = case.batch / row["median_s"]
        item = np.dtype(case.dtype).itemsize
        written, read = (4 * case.n + 1) * item, case.d * item
        row.update(events_per_s=eps, bytes_written_per_event=written,
                   bytes_read_per_event=read,
                   write_bandwidth_fraction=eps * written / bw,
                   total_bandwidth_fraction=eps * (written + read) / bw)
        rows.append(row)
        log(f"[{device}] {case.label()}: {_common.si(eps)}/s, "
            f"{100 * row['total_bandwidth_fraction']:.1f}% of copy bandwidth")
        del prep
        gc.collect()
    return {"device": str(device), "device_kind": getattr(device, "device_kind", "?"),
            "copy_bandwidth_bytes_per_s": bw, "rows": rows}


# --------------------------------------------------------------------------- report


def _fmt_ratio(a, b) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def _rate(row) -> float | None:
    return row.get("events_per_s") if row else None


def _table_rows(rows: list[dict[str, Any]]):
    """Group rows by case: {(algo, n, massive, dtype): {peer: row}}."""
    table: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        key = (row["algo"], row["n"], row["massive"], row["dtype"])
        table.setdefault(key, {})[row["peer"]] = row
    return table


def _case_order(key):
    algo, n, massive, dtype = key
    return (list(ALGOS).index(algo), dtype, massive, n)


def speed_table(rows: list[dict[str, Any]]) -> str:
    out = []
    for key, by_peer in sorted(_table_rows(rows).items(), key=lambda kv: _case_order(kv[0])):
        algo, n, massive, dtype = key
        j, j1, m, p = (by_peer.get(k) for k in PEERS)
        out.append([
            ALGOS[algo], n, "massive" if massive else "massless", dtype,
            _common.si(_rate(j)), _common.si(_rate(j1)) if _rate(j1) else "-",
            _common.si(_rate(m)) if _rate(m) else "n/a",
            _common.si(_rate(p)), _fmt_ratio(_rate(j), _rate(m)), _fmt_ratio(_rate(j1), _rate(m)),
            _fmt_ratio(_rate(j), _rate(p)),
            f"{j['setup_s']:.2f}" if j and j.get("setup_s") is not None else "-",
            f"{m['setup_s']:.4f}" if m and m.get("setup_s") is not None else "-",
        ])
    return _common.markdown_table(
        ["algorithm", "n", "masses", "dtype", "jaxnis ev/s", "jaxnis 1 call ev/s",
         "MadSpace ev/s", "NumPy ev/s", "jaxnis/MadSpace", "1 call/MadSpace", "jaxnis/NumPy",
         "jaxnis compile s", "MadSpace setup s"],
        out, "llll" + "r" * 9)


def validation_table(rows: list[dict[str, Any]]) -> str:
    out = []
    for key, by_peer in sorted(_table_rows(rows).items(), key=lambda kv: _case_order(kv[0])):
        algo, n, massive, dtype = key
        cells = [ALGOS[algo], n, "massive" if massive else "massless", dtype]
        ref = None
        ok = True
        for peer in PEERS:
            row = by_peer.get(peer)
            v = row.get("validation") if row else None
            if not v:
                cells += ["n/a", "n/a"]
                continue
            ref = ref or v
            pull = v["pull"]
            ratio = v["mean_over_reference"]
            cells.append(f"{ratio:.6f}" + (f" ({pull:+.1f}σ)" if math.isfinite(pull) else ""))
            cells.append(f"{v['max_momentum_violation_rel']:.1e} / "
                         f"{v['max_mass_shell_violation_rel']:.1e}")
            ok = ok and bool(v["weight_ok"]) and bool(v["kinematics_ok"])
        cells.insert(4, f"{ref['reference']:.8g}" if ref else "-")
        cells.append("yes" if ok else "**NO**")
        out.append(cells)
    head = ["algorithm", "n", "masses", "dtype", "volume"]
    for peer in PEERS:
        head += [f"{PEER_LABELS[peer]} <w>/vol", f"{PEER_LABELS[peer]} max Δp / Δm²"]
    return _common.markdown_table(head + ["ok"], out, "llll" + "r" * (1 + 2 * len(PEERS)) + "c")


def variant_label(name: str) -> str:
    """Readable name of a call-variants peer."""
    fixed = {"madspace": "MadSpace FastRambo", "jaxnis": "jaxnis (library chunked evaluator)",
             "jaxnis_single": "jaxnis, 1 call on the whole batch",
             "jaxnis_batch_minor": "jaxnis, 1 call, batch-minor layout"}
    if name in fixed:
        return fixed[name]
    return f"jaxnis, chunks of {int(name.rsplit('_', 1)[1]):,}"


def variants_section(rows: list[dict[str, Any]], chunk) -> str:
    """jaxnis called several ways (chunk sizes, one call, batch-minor) next to MadSpace."""
    out = []
    for key, by_peer in sorted(_table_rows(rows).items(), key=lambda kv: _case_order(kv[0])):
        algo, n, massive, dtype = key
        m = by_peer.get("madspace")

        def order(name):
            if name.startswith("jaxnis_chunk_"):
                return (1, int(name.rsplit("_", 1)[1]))
            return ({"madspace": 0, "jaxnis": 2, "jaxnis_single": 3}.get(name, 4), 0)

        for name in sorted(by_peer, key=order):
            row = by_peer[name]
            if "events_per_s" not in row:
                continue
            out.append([ALGOS[algo], n, dtype, variant_label(name),
                        _common.si(row["events_per_s"]),
                        _fmt_ratio(row["events_per_s"], _rate(m)),
                        _fmt_ratio(row.get("events_per_cpu_s"),
                                   m.get("events_per_cpu_s") if m else None),
                        f"{row['setup_s']:.4g}" if row.get("setup_s") is not None else "-"])
    return ("## jaxnis call variants (massless RAMBO-on-diet)\n\n"
            "The same per-event code called several ways, interleaved with MadSpace in this "
            f"run. The main table's `jaxnis` rows use the library's chunked evaluator "
            f"(`jaxnis.batching.BatchEvaluator`, chunks of {chunk} events, dispatched "
            "asynchronously and concatenated into one `[N, n, 4]` array); the chunk-size rows "
            "are the same evaluator with other chunks; **1 call**: one `jit(vmap)` call on the "
            "whole batch; **batch-minor**: one call of `vmap(m.forward, in_axes=(1, None), "
            "out_axes=-1)` on `r [d, N]`, momenta `[n, 4, N]` (a different output layout). "
            "XLA's CPU backend writes every intermediate with several uses to memory as a "
            "full-batch array; in chunks of ~1e4 events they stay in cache.\n\n"
            + _common.markdown_table(
                ["algorithm", "n", "dtype", "call", "ev/s", "/MadSpace",
                 "/MadSpace (CPU time)", "compile s"], out, "llll" + "r" * 4))


def target_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    algo, n, massive, dtype = TARGET
    by_peer = _table_rows(rows).get((algo, n, massive, dtype), {})
    j, m = _rate(by_peer.get("jaxnis")), _rate(by_peer.get("madspace"))
    j1 = _rate(by_peer.get("jaxnis_single"))
    out = {"case": {"algo": algo, "n": n, "massive": massive, "dtype": dtype},
           "jaxnis_events_per_s": j, "madspace_events_per_s": m,
           "jaxnis_single_events_per_s": j1,
           "single_ratio": j1 / m if j1 and m else None,
           "chunk": (by_peer.get("jaxnis", {}).get("info") or {}).get("chunk")}
    if j and m:
        ratio = j / m
        jt = by_peer["jaxnis"]["samples_s"]
        mt = by_peer["madspace"]["samples_s"]
        out.update(ratio=ratio, met=ratio >= 1.0, aim_1p5_met=ratio >= 1.5,
                   ratio_from_min_times=min(mt) / min(jt),
                   ratio_cpu_time=(by_peer["jaxnis"]["events_per_cpu_s"]
                                   / by_peer["madspace"]["events_per_cpu_s"]))
    return out


def _source_line(source: dict[str, Any]) -> str:
    rambo = source.get("jaxnis/phasespace/rambo.py")
    if not rambo:
        return ""
    state = ("as committed at HEAD" if rambo.get("same_as_head")
             else "**differs from HEAD** (uncommitted edits)")
    return (f"- Measured source: `jaxnis/phasespace/rambo.py` blob `{rambo['blob'][:10]}`, "
            f"{state}; HEAD `{source.get('head', '?')[:10]}`.")


def markdown_report(payload: dict[str, Any]) -> str:
    s = payload["settings"]
    rows = payload["cpu"]
    sections = [_common.metadata_markdown(payload)]
    sections.append(
        "## What is measured\n\n"
        f"- Events per second = batch ({s['batch']:,}) / median of {s['repeats']} calls "
        f"({s['target_repeats']} for the target row) after one warm-up call; the peers' calls "
        "are interleaved round-robin. "
        + ("**The machine was shared with other jobs during this run** "
           f"(load average {payload['machine'].get('load_average_1_5_15min')} at the start, "
           f"{payload.get('load_average_end')} at the end): absolute rates are noisy, the "
           "ratios of interleaved calls are the comparison.\n" if s.get("shared_machine")
           else "\n")
        + (f"- The whole run took {payload['wall_s'] / 60:.0f} min of wall time.\n"
           if isinstance(payload.get("wall_s"), float | int) else "")
        + f"- Cores: the process is pinned to {s['threads']} core(s); XLA's CPU thread pool "
        f"sizes itself from that, MadSpace `Context(cpu_device(), {s['threads']})`, NumPy "
        f"{s['threads']} worker thread(s) over chunks of {s['numpy_chunk']:,} events.\n"
        "- Random numbers are **not** included: one uniform array `[N, d]` per case, generated "
        "before timing and read by every peer (values in `[eps, 1 - eps]`). The table "
        "'random numbers included' below adds each library's own generator.\n"
        "- Each call produces momenta `[N, n, 4]` and a weight per event from the same "
        f"`r`, `sqrt(s) = {SQRT_S:g}` GeV and masses `{list(MASSES)}[:n]` (massive rows). "
        "MadSpace: builder graph around `fast_rambo_*_com` (the instruction "
        "`FastRamboMapping.forward_function()` records), float64 only, RAMBO-on-diet only; "
        "its rows were checked to equal `map_forward`: "
        f"{s.get('madspace_same_as_mapping_api', 'n/a')}.\n"
        "- jaxnis: `jax.vmap(m.forward, in_axes=(0, None))` evaluated by the library's "
        "chunked evaluator `jaxnis.batching.BatchEvaluator` (chunks of "
        f"{s.get('jax_chunk')} events, one compiled program, outputs concatenated into "
        "`[N, n, 4]`); compile time = `evaluator.lower(r, cond).compile()`, reported apart "
        "and not in the rate. **jaxnis 1 call**: the same function as one `jax.jit` call on "
        "the whole batch (compile time of that program in the JSON). MadSpace set-up = graph "
        "build + `FunctionRuntime`.\n"
        + _source_line(payload.get("source", {})))
    t = payload.get("target", {})
    if t.get("ratio") is not None:
        sections.append(
            "## Target\n\n"
            "jaxnis RAMBO-on-diet, n = 4, massless, float64: "
            f"{_common.si(t['jaxnis_events_per_s'])} events/s vs MadSpace "
            f"{_common.si(t['madspace_events_per_s'])} events/s: ratio "
            f"**{t['ratio']:.2f}** (median wall times; {t['ratio_from_min_times']:.2f} from the "
            f"fastest calls, {t['ratio_cpu_time']:.2f} from process CPU time per call), "
            f"jaxnis through `BatchEvaluator` in chunks of {t.get('chunk')} events. "
            f"Target >= 1: {'met' if t['met'] else 'NOT met'}; aim 1.5: "
            f"{'met' if t['aim_1p5_met'] else 'not met'}."
            + (" The same map as one jitted call on the whole batch: "
               f"{_common.si(t['jaxnis_single_events_per_s'])} events/s, ratio "
               f"{t['single_ratio']:.2f}." if t.get("single_ratio") else ""))
    sections.append("## Events per second (CPU)\n\n" + speed_table(rows))
    sections.append(
        "## Equal work: validation\n\n"
        "`<w>/vol`: mean weight over the phase-space volume (massless: the formula of "
        "REFERENCES.md; massive n = 3: its quadrature value; massive n >= 4: a NumPy "
        "estimate with 3.2e7 events, see MASSIVE_REFERENCE), with the pull in standard errors "
        f"where the weight varies (limit {PULL_LIMIT:g}σ). `max Δp / Δm²`: max over the batch of "
        "|Σp − P|/√s and |p² − m²|/s.\n\n" + validation_table(rows))
    if payload.get("rng"):
        sections.append("## Random numbers included (each library's own generator)\n\n"
                        + speed_table(payload["rng"]) + "\n\nGenerators: "
                        + "; ".join(sorted({f"{r['peer']}: {r['info']['rng']}"
                                            for r in payload["rng"] if r.get("info")})) + ".")
    if payload.get("variants"):
        sections.append(variants_section(payload["variants"], s.get("jax_chunk")))
    gpu = payload.get("gpu")
    if gpu and gpu.get("rows"):
        g_rows = []
        for row in gpu["rows"]:
            if "events_per_s" not in row:
                continue
            g_rows.append([ALGOS[row["algo"]], row["n"],
                           "massive" if row["massive"] else "massless", row["dtype"],
                           _common.si(row["events_per_s"]), row["bytes_written_per_event"],
                           f"{100 * row['write_bandwidth_fraction']:.1f}%",
                           f"{100 * row['total_bandwidth_fraction']:.1f}%"])
        sections.append(
            f"## GPU: {gpu['device_kind']}\n\nCopy bandwidth (x + 1, read + write): "
            f"{gpu['copy_bandwidth_bytes_per_s'] / 1e9:.0f} GB/s.\n\n"
            + _common.markdown_table(["algorithm", "n", "masses", "dtype", "jaxnis ev/s",
                                      "bytes written/ev", "write bw", "read+write bw"],
                                     g_rows, "llll" + "r" * 4))
    else:
        sections.append("## GPU\n\n" + payload.get("gpu_note", "No GPU visible to JAX."))
    skipped = sorted({f"{r['peer']}: {r['skipped']}" for r in rows if r.get("skipped")})
    if skipped:
        sections.append("## Not run\n\n" + "\n".join(f"- {s}" for s in skipped))
    return sections


# --------------------------------------------------------------------------- main


def _write_markdown(path: Path, payload: dict[str, Any]) -> Path:
    return _common.write_markdown(
        path, "Phase-space generation speed: jaxnis vs MadSpace vs NumPy",
        markdown_report(payload))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=1_000_000, help="events per call")
    ap.add_argument("--quick", action="store_true",
                    help="batch 20000 (unless given): checks the harness fast")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per peer (3)")
    ap.add_argument("--target-repeats", type=int, default=None,
                    help="timed calls for the target row, RAMBO-on-diet n=4 massless float64 (7)")
    ap.add_argument("--rng-n", type=int, nargs="+", default=[4],
                    help="n of the random-numbers-included table")
    ap.add_argument("--variant-n", type=int, nargs="+", default=[4, 8],
                    help="n of the jaxnis call-variants table")
    ap.add_argument("--chunk-sweep", type=int, nargs="*", default=[4096, 8192, 32768, 65536],
                    help="other chunk sizes timed in the call-variants table")
    ap.add_argument("--rows", nargs="+", default=None, metavar="ALGO:N:MASSES:DTYPE",
                    help="only these rows of the main table, e.g. diet:4:massless:float64 "
                         "('*' matches anything; 'target' is the target row); the tables of "
                         "random numbers and call variants follow --n and --variant-n")
    ap.add_argument("--n", type=int, nargs="+", default=[3, 4, 5, 6, 7, 8])
    ap.add_argument("--algos", nargs="+", choices=list(ALGOS), default=list(ALGOS))
    ap.add_argument("--masses", nargs="+", choices=["massless", "massive"],
                    default=["massless", "massive"])
    ap.add_argument("--dtypes", nargs="+", choices=["float32", "float64"],
                    default=["float32", "float64"])
    ap.add_argument("--peers", nargs="+", choices=list(PEERS), default=list(PEERS))
    ap.add_argument("--threads", type=int, default=None,
                    help="cores for every peer (default: all this process may use)")
    ap.add_argument("--numpy-chunk", type=int, default=1 << 14)
    ap.add_argument("--no-rng", action="store_true", help="skip the RNG-included table")
    ap.add_argument("--no-variants", action="store_true",
                    help="skip the jaxnis call-variants table (chunked, batch-minor layout)")
    ap.add_argument("--jax-chunk", type=int, default=None,
                    help="events per chunk of the jaxnis evaluator (default: the library's "
                         "DEFAULT_CHUNK)")
    ap.add_argument("--no-gpu", action="store_true", help="skip the GPU measurement")
    ap.add_argument("--gpu-batch", type=int, default=None, help="GPU batch (default 1e7)")
    ap.add_argument("--seed", type=int, default=20240607)
    ap.add_argument("--out", type=Path, default=_common.RESULTS_DIR)
    ap.add_argument("--name", default="phase_space", help="output file stem")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite <out>/<name>.md from the existing JSON without measuring")
    args = ap.parse_args(argv)
    if args.quick and "--batch" not in (argv if argv is not None else sys.argv):
        args.batch = 20_000
    if args.repeats is None:
        args.repeats = 3
    if args.target_repeats is None:
        args.target_repeats = args.repeats if args.quick else max(7, args.repeats)
    if args.gpu_batch is None:
        args.gpu_batch = args.batch if args.quick else 10_000_000
    bad = [n for n in args.n if n < 3 or n > len(MASSES)]
    if bad:
        ap.error(f"--n values {bad} outside 3..{len(MASSES)}")
    try:
        args.rows = None if args.rows is None else [parse_row(x) for x in args.rows]
    except ValueError as exc:
        ap.error(str(exc))
    return args


def parse_row(spec: str) -> tuple[str, str, str, str]:
    """``"algo:n:masses:dtype"`` (``*`` for any) or ``"target"`` -> a 4-tuple of strings."""
    if spec == "target":
        algo, n, massive, dtype = TARGET
        return algo, str(n), "massive" if massive else "massless", dtype
    parts = tuple(spec.split(":"))
    allowed = (set(ALGOS), None, {"massless", "massive"}, {"float32", "float64"})
    ok = len(parts) == 4 and all(
        p == "*" or (p.isdigit() if choices is None else p in choices)
        for p, choices in zip(parts, allowed, strict=True))
    if not ok:
        raise ValueError(f"--rows entry {spec!r} is not ALGO:N:MASSES:DTYPE, e.g. "
                         "diet:4:massless:float64 ('*' for any), or 'target'")
    return parts


def row_selected(case: Case, rows) -> bool:
    """Whether ``case`` matches one of the ``--rows`` patterns (``None``: every case)."""
    if rows is None:
        return True
    have = (case.algo, str(case.n), "massive" if case.massive else "massless", case.dtype)
    return any(all(p in ("*", h) for p, h in zip(pat, have, strict=True)) for pat in rows)


def main(argv=None, log=print) -> dict[str, Any]:
    """Run the benchmark; write ``<out>/<name>.json`` and ``.md``; return the payload."""
    args = parse_args(argv)
    if args.render_only:
        payload = _common.read_json(args.out / f"{args.name}.json")
        _write_markdown(args.out / f"{args.name}.md", payload)
        return payload
    threads = _common.limit_cores(args.threads)  # before JAX starts its thread pool
    import jax

    if args.jax_chunk is None:
        from jaxnis.batching import DEFAULT_CHUNK

        args.jax_chunk = DEFAULT_CHUNK

    if "float64" in args.dtypes and not jax.config.read("jax_enable_x64"):
        jax.config.update("jax_enable_x64", True)  # scripts may; the library never does
    machine = _common.machine_info()
    settings = {
        "batch": args.batch, "repeats": args.repeats, "target_repeats": args.target_repeats,
        "n": args.n, "algos": args.algos, "rows": args.rows, "chunk_sweep": args.chunk_sweep,
        "masses": args.masses, "dtypes": args.dtypes, "peers": args.peers,
        "threads": threads, "numpy_chunk": args.numpy_chunk, "jax_chunk": args.jax_chunk,
        "sqrt_s": SQRT_S,
        "massive_masses": list(MASSES), "rng_in_main_table": False, "seed": args.seed,
        "jax_backend": jax.default_backend(), "x64": bool(jax.config.read("jax_enable_x64")),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "shared_machine": machine.get("load_average_1_5_15min", [0])[0] > 0.5 * threads,
    }
    peers: dict[str, Any] = {}
    skipped_peers: dict[str, str] = {}
    for name in args.peers:
        try:
            peers[name] = {"jaxnis": lambda: JaxnisPeer("chunked", args.jax_chunk),
                           "jaxnis_single": lambda: JaxnisPeer("single"),
                           "madspace": lambda: MadSpacePeer(threads),
                           "numpy": lambda: NumpyPeer(threads, args.numpy_chunk)}[name]()
        except Skip as exc:
            skipped_peers[name] = str(exc)
            log(f"skipping {name}: {exc}")
    if "madspace" in peers:
        settings["madspace_backends"] = peers["madspace"].ms.available_backends()
    here = Path(__file__).resolve().parent
    used = {"benchmarks/phase_space.py": here / "phase_space.py",
            "benchmarks/numpy_rambo.py": here / "numpy_rambo.py"}
    if "jaxnis" in peers:
        used["jaxnis/phasespace/rambo.py"] = peers["jaxnis"].module.__file__
    source = _common.git_state(used)  # at the start: the code that is imported and timed
    cases = [Case(algo, n, mass == "massive", dtype, args.batch)
             for algo in args.algos for dtype in args.dtypes for mass in args.masses
             for n in args.n]
    cases = [c for c in cases if row_selected(c, args.rows)]
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for case in cases:
        is_target = (case.algo, case.n, case.massive, case.dtype) == TARGET
        rows += run_case(case, peers, args.target_repeats if is_target else args.repeats,
                         args.seed, log)
        gc.collect()
    for name, why in skipped_peers.items():
        rows.append({"peer": name, "skipped": why, "algo": "-", "n": 0, "massive": False,
                     "dtype": "-"})
    rows_ok = [r for r in rows if r.get("algo") in ALGOS]
    cross_check(rows_ok)
    rng_rows: list[dict[str, Any]] = []
    if not args.no_rng and "diet" in args.algos and "massless" in args.masses:
        dtype = "float64" if "float64" in args.dtypes else args.dtypes[0]
        for n in [n for n in args.n if n in args.rng_n] or args.n[:1]:
            rng_rows += run_rng_case(Case("diet", n, False, dtype, args.batch), peers,
                                     args.repeats, args.seed, log)
    variant_rows: list[dict[str, Any]] = []
    if (not args.no_variants and "jaxnis" in peers and "diet" in args.algos
            and "massless" in args.masses):
        dtype = "float64" if "float64" in args.dtypes else args.dtypes[0]
        vpeers = {k: v for k, v in peers.items() if k in ("jaxnis", "jaxnis_single", "madspace")}
        for c in args.chunk_sweep:
            if c != args.jax_chunk:
                vpeers[f"jaxnis_chunk_{c}"] = JaxnisPeer("chunked", c)
        vpeers["jaxnis_batch_minor"] = JaxnisPeer("batch_minor")
        for n in [n for n in args.n if n in args.variant_n] or args.n[:1]:
            variant_rows += run_case(Case("diet", n, False, dtype, args.batch), vpeers,
                                     args.repeats, args.seed, log)
    checks = [r["validation"] for r in rows_ok + rng_rows + variant_rows if r.get("validation")]
    passed = bool(checks) and all(bool(v["weight_ok"]) and v["kinematics_ok"] for v in checks)
    ms_checks = [r["info"]["same_as_mapping_api"] for r in rows_ok
                 if r["peer"] == "madspace" and r.get("info")]
    settings["madspace_same_as_mapping_api"] = all(ms_checks) if ms_checks else "n/a"
    payload: dict[str, Any] = {
        "benchmark": "phase_space", "date": _common.utc_now(), "machine": machine,
        "versions": _common.versions(), "settings": settings,
        "source": source,
        "cpu": rows,
        "rng": rng_rows, "variants": variant_rows, "target": target_summary(rows_ok),
        "validation_passed": passed,
    }
    gpus = [] if args.no_gpu else gpu_devices()
    if gpus and "jaxnis" in peers:
        gpu_cases = [Case(c.algo, c.n, c.massive, c.dtype, args.gpu_batch) for c in cases]
        payload["gpu"] = accelerator_rows(gpus[0], gpu_cases, args.repeats, args.seed, log=log)
    else:
        payload["gpu_note"] = ("GPU measurement skipped (--no-gpu)." if args.no_gpu else
                               "No GPU visible to JAX in this run: GPU rows not measured.")
    payload["wall_s"] = time.perf_counter() - t_start
    if hasattr(os, "getloadavg"):
        payload["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    json_path = _common.write_json(args.out / f"{args.name}.json", payload)
    md_path = _write_markdown(args.out / f"{args.name}.md", payload)
    log(f"wrote {json_path} and {md_path}; validation {'passed' if passed else 'FAILED'}; "
        f"{payload['wall_s']:.0f} s")
    return payload


if __name__ == "__main__":
    sys.exit(0 if main()["validation_passed"] else 1)
