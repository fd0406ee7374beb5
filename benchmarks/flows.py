"""Normalising-flow throughput: jaxnis vs MadNIS's PyTorch ``Flow``, side by side.

Usage (from the repository root)::

    .venv/bin/python benchmarks/flows.py             # d = 4, 8, 16; batches 1024, 16384
    .venv/bin/python benchmarks/flows.py --quick     # one small case, checks the harness
    .venv/bin/python benchmarks/flows.py --dims 8 --batches 16384 --repeats 7

Writes ``benchmarks/results/flows.json`` and ``flows.md`` (``--out`` elsewhere).

The flow (MadNIS-sized, arXiv:2212.06172): binary ("log") coupling masks, ``2 ceil(log2 d)``
coupling layers, rational-quadratic splines with 10 bins on ``[0, 1]``, conditioners with
three hidden layers of 32 units (ReLU) and a zero-initialised output layer, float32.

* **jaxnis**: ``jaxnis.flows.make_flow(d, masks="binary", transform="rqs", n_bins=10,
  hidden=(32, 32, 32))``.
* **MadNIS**: ``madnis.nn.Flow(d, permutations="log", layers=4, units=32, bins=10)``;
  MadNIS's ``layers`` counts the linear layers of a conditioner (3 hidden + output).
  Before timing, the script checks that both flows have the same masks (in the same order),
  hence the same number of coupling layers, and the same number of trainable parameters,
  and prints the counts.

Timed operations, per dimension ``d`` and batch ``N``:

* ``sample``: draw ``N`` uniform latent points and push them through the flow, returning
  the points and their ``log q`` (no gradient).
* ``train``: one training step of the score-function (MadNIS) kind: sample ``N`` points
  without gradient, evaluate a cheap integrand (a Gaussian of width ``0.2`` at the centre of
  the cube), ``log q`` of the current flow *with* its gradient at the fixed points, the
  variance loss, its gradient, and one Adam update (learning rate ``1e-3``). The same loss
  and gradient on both sides, computed differently: MadNIS recomputes ``log q`` through the
  inverse (density) pass with autograd; jaxnis uses ``Flow.sample_detached``, which gets the
  gradient at fixed points from the sampling pass alone (no inverse pass; equal to the
  two-pass gradient to rounding, see its tests; the breakdown times the two-pass step too).
  jaxnis uses ``jaxnis.losses.variance_loss`` on log weights and ``optax.adam``
  with the whole step in one ``jax.jit`` compiled with ``jaxnis.compiler``'s options (as
  ``jaxnis.compiler.jit`` and the Integrator compile; on the CPU the YNNPACK fusion is off,
  see that module); MadNIS uses its own
  ``madnis.integrator.losses.variance`` on probabilities (normalised by the squared integral,
  which changes the gradient's scale, not its cost) and ``torch.optim.Adam``, in eager mode
  as MadNIS runs it. The parameters are updated from step to step, as in training.

Fairness: the process is pinned to ``--threads`` cores before JAX starts (XLA's CPU thread
pool is sized from the process's CPU affinity) and PyTorch gets ``torch.set_num_threads``
of the same count. ``OMP_WAIT_POLICY=PASSIVE`` is set for PyTorch's OpenMP pool unless the
variable is already set: on a shared, oversubscribed machine the default spin-waiting made
PyTorch with 2 threads 5-10 times slower than with one; passive waiting removed that
penalty, so it is MadNIS's best setting here. Before JAX starts, the process applies
``jaxnis.host_memory.reuse_freed_memory`` (glibc's malloc without ``mmap`` or trimming,
JAX's CPU dispatch synchronous), for both peers alike; ``JAXNIS_REUSE_MEMORY=0`` runs with
the allocator defaults instead (the large-batch steps then fault their temporaries in on
every call). Timed: the median wall time of ``--repeats``
calls after ``--warmup`` calls, the two peers interleaved call by call so that a shared
machine loads them alike; JAX results are waited for with ``block_until_ready``. The
process CPU time of every call is recorded too (all threads): on a loaded machine the wall
time includes waiting for a core, and the CPU-time ratio is the steadier comparison. The
JAX trace/lower and XLA compile times are reported separately from the steady state.

Equal work is checked after the timed calls: on both sides the points lie in ``[0, 1]^d``
and the ``log q`` returned by sampling agrees with ``log q`` recomputed by the inverse pass
of the trained flow, and the losses are finite.

A breakdown (``--breakdown D N``) times the parts of a training step separately: for
jaxnis the sampling pass, the one-pass sample, loss and gradient, the inverse pass alone
and the two-pass loss and gradient at stopped samples (what the step computed before
``sample_detached``), the Adam update, and the two-pass gradient of the same flow with the
spline replaced by a one-parameter element-wise map (``transform="affine"``: conditioners,
scan and couplings without the spline); for MadNIS the stages of its step.

On a GPU (``jax.devices('gpu')``) jaxnis is also timed there (and MadNIS on CUDA when
PyTorch has it), at ``--gpu-batches``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

DIMS = (4, 8, 16)
BATCHES = (1024, 16384)
N_BINS = 10
HIDDEN = (32, 32, 32)
LEARNING_RATE = 1e-3
SIGMA = 0.2  # width of the Gaussian integrand, centred at 0.5 in every dimension
FAST_COMPILE = {"xla_backend_optimization_level": 0}
TARGET_RATIO = 5.0  # jaxnis training step vs MadNIS, CPU, samples per second
OPS = ("sample", "train")
# |log q(sample) - log q(inverse pass)| allowed in float32: a sum over <= 8 coupling layers
# of spline log-derivatives of order 1, each rounded to ~1e-7 relative, plus the inverse
# spline's root; 1e-3 is far above that yet catches a wrong Jacobian.
ROUND_TRIP_TOL = 1e-3
SOURCES = ("benchmarks/flows.py", "jaxnis/compiler.py", "jaxnis/flows/flow.py",
           "jaxnis/flows/coupling.py",
           "jaxnis/flows/splines.py", "jaxnis/flows/masks.py", "jaxnis/losses.py")


def log_gaussian_np(x: np.ndarray) -> np.ndarray:
    """The integrand's log, ``-|x - 1/2|^2 / (2 sigma^2)`` (unnormalised), for checks."""
    return -0.5 * np.sum(((x - 0.5) / SIGMA) ** 2, axis=-1)


def madnis_available() -> bool:
    """Whether PyTorch and MadNIS can be imported (the optional ``bench`` extra)."""
    try:
        import madnis.nn  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _cpu_times(fn, sync) -> tuple[float, float]:
    """Wall and process CPU time (all threads) of ``sync(fn())``."""
    t0, c0 = time.perf_counter(), time.process_time()
    sync(fn())
    return time.perf_counter() - t0, time.process_time() - c0


# ----------------------------------------------------------------------------------------
# peers


class JaxnisPeer:
    """jaxnis flow with a jitted sampler and a jitted training step on one device."""

    name = "jaxnis"

    def __init__(self, d: int, batch: int, seed: int, device=None, transform: str = "rqs",
                 compiler_options: dict[str, Any] | None = None):
        import jax
        import jax.numpy as jnp
        import optax

        from jaxnis import compiler as jaxnis_compiler
        from jaxnis.flows import make_flow
        from jaxnis.losses import variance_loss

        self.jax, self.d, self.batch = jax, d, batch
        self.flow = flow = make_flow(d, masks="binary", transform=transform, n_bins=N_BINS,
                                     hidden=HIDDEN)
        self.device = device or jax.devices("cpu")[0]
        # jaxnis's per-program options for this backend (what jaxnis.compiler.jit compiles
        # with), then any given here
        self.compiler_options = {**jaxnis_compiler.compiler_options(self.device.platform),
                                 **(compiler_options or {})}
        self.tx = tx = optax.adam(LEARNING_RATE)

        def init(key):
            key_init, key_run = jax.random.split(key)
            params = flow.init(key_init)
            return key_run, params, tx.init(params)

        # One jitted call (eager initialisation dispatches dozens of small compilations);
        # it runs where the committed key lives.
        self.key, self.params, self.opt_state = jax.jit(init)(
            jax.device_put(jax.random.key(seed), self.device))
        self.log_prob = jax.vmap(flow.log_prob, in_axes=(None, 0))

        def log_f(x):
            return -0.5 * jnp.sum(jnp.square((x - 0.5) / SIGMA), axis=-1)

        def sample(key, params):
            key, sub = jax.random.split(key)
            x, log_q = flow.sample(sub, params, batch)
            return key, x, log_q

        def loss(params, x):
            return variance_loss(log_f(x), self.log_prob(params, x))

        def one_pass_loss(params, key):
            x, log_q = flow.sample_detached(key, params, batch)
            return variance_loss(log_f(x), log_q)

        def train(key, params, opt_state):
            key, sub = jax.random.split(key)
            value, grads = jax.value_and_grad(one_pass_loss)(params, sub)
            updates, opt_state = tx.update(grads, opt_state, params)
            return key, optax.apply_updates(params, updates), opt_state, value

        self._fns = {"sample": sample, "train": train}
        self._loss, self._one_pass_loss = loss, one_pass_loss
        self.compiled: dict[str, Any] = {}
        self.compile_info: dict[str, dict[str, float]] = {}
        self.last_loss = None

    def n_params(self) -> int:
        return int(sum(leaf.size for leaf in self.jax.tree.leaves(self.params)))

    def masks(self) -> np.ndarray:
        return np.asarray(self.flow.masks, bool)

    def _args(self, op):
        if op == "sample":
            return (self.key, self.params)
        return (self.key, self.params, self.opt_state)

    def compile(self, op: str) -> dict[str, float]:
        """Trace/lower and compile ``op`` ahead of time; returns the two durations (s)."""
        t0 = time.perf_counter()
        lowered = self.jax.jit(self._fns[op]).lower(*self._args(op))
        t1 = time.perf_counter()
        self.compiled[op] = lowered.compile(compiler_options=self.compiler_options or None)
        t2 = time.perf_counter()
        self.compile_info[op] = {"trace_lower_s": t1 - t0, "compile_s": t2 - t1}
        return self.compile_info[op]

    def run(self, op: str):
        """One call of ``op``; updates the key (and the parameters for ``train``)."""
        out = self.compiled[op](*self._args(op))
        if op == "sample":
            self.key = out[0]
        else:
            self.key, self.params, self.opt_state, self.last_loss = out
        return out

    def sync(self, out):
        return self.jax.block_until_ready(out)

    def validate(self) -> dict[str, Any]:
        """Points in the cube, ``log q`` of sampling vs the inverse pass, finite loss."""
        jax = self.jax
        _, x, log_q = self.sync(self.compiled["sample"](self.key, self.params))
        n = min(self.batch, 4096)
        x_np = np.asarray(x[:n], np.float64)
        log_prob = jax.jit(self.log_prob).lower(self.params, x[:n]).compile(
            compiler_options=self.compiler_options or None)
        log_q_inv = np.asarray(log_prob(self.params, x[:n]), np.float64)
        loss = float(self.last_loss) if self.last_loss is not None else math.nan
        return _validation(x_np, np.asarray(log_q[:n], np.float64), log_q_inv, loss)


class MadnisPeer:
    """MadNIS ``Flow`` in PyTorch eager mode, with MadNIS's variance loss and Adam."""

    name = "madnis"

    def __init__(self, d: int, batch: int, seed: int, device: str = "cpu", **_):
        import torch
        from madnis.integrator.losses import variance
        from madnis.nn import Flow

        self.torch, self.d, self.batch, self.device = torch, d, batch, device
        torch.manual_seed(seed)
        self.flow = Flow(d, permutations="log", layers=len(HIDDEN) + 1, units=HIDDEN[0],
                         bins=N_BINS).to(device)
        if any(h != HIDDEN[0] for h in HIDDEN):
            raise ValueError(f"MadNIS conditioners have equal widths, got hidden={HIDDEN}")
        self.opt = torch.optim.Adam(self.flow.parameters(), lr=LEARNING_RATE)
        self.variance = variance
        self.last_loss = None
        self.stages: dict[str, list[tuple[float, float]]] = {}
        self.compile_info: dict[str, dict[str, float]] = {}

    def n_params(self) -> int:
        return int(sum(p.numel() for p in self.flow.parameters() if p.requires_grad))

    def masks(self) -> np.ndarray:
        return self.flow.condition_masks.cpu().numpy().astype(bool)

    def compile(self, op: str) -> dict[str, float]:
        return {}

    def _sample(self):
        with self.torch.no_grad():
            return self.flow.sample(self.batch, return_log_prob=True, device=self.device,
                                    dtype=self.torch.float32)

    def _log_f(self, x):
        return -0.5 * ((x - 0.5) / SIGMA).square().sum(dim=-1)

    def run(self, op: str, stages: bool = False):
        if op == "sample":
            return self._sample()
        marks = [(time.perf_counter(), time.process_time())]
        with self.torch.no_grad():
            x = self.flow.sample(self.batch, device=self.device, dtype=self.torch.float32)
        marks.append((time.perf_counter(), time.process_time()))
        f = self._log_f(x).exp()
        log_q = self.flow.log_prob(x)
        q = log_q.exp()
        loss = self.variance(f, q, q.detach())
        marks.append((time.perf_counter(), time.process_time()))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        marks.append((time.perf_counter(), time.process_time()))
        self.opt.step()
        marks.append((time.perf_counter(), time.process_time()))
        if stages:
            names = ("sample (no gradient)", "integrand, log_q via inverse pass, loss",
                     "backward", "Adam step")
            for name, t0, t1 in zip(names, marks[:-1], marks[1:], strict=True):
                self.stages.setdefault(name, []).append((t1[0] - t0[0], t1[1] - t0[1]))
        self.last_loss = loss
        return loss

    def sync(self, out):
        if self.device != "cpu":
            self.torch.cuda.synchronize()
        return out

    def validate(self) -> dict[str, Any]:
        x, log_q = self._sample()
        n = min(self.batch, 4096)
        with self.torch.no_grad():
            log_q_inv = self.flow.log_prob(x[:n])
        loss = float(self.last_loss.detach()) if self.last_loss is not None else math.nan
        return _validation(x[:n].cpu().double().numpy(), log_q[:n].cpu().double().numpy(),
                           log_q_inv.cpu().double().numpy(), loss)


def _validation(x, log_q_sample, log_q_inverse, loss) -> dict[str, Any]:
    inside = bool(np.all((x >= 0) & (x <= 1)) and np.all(np.isfinite(x)))
    diff = np.abs(log_q_sample - log_q_inverse)
    max_diff = float(np.max(diff)) if diff.size else math.nan
    ok = inside and math.isfinite(max_diff) and max_diff <= ROUND_TRIP_TOL and math.isfinite(loss)
    return {"inside_cube": inside, "round_trip_max_abs_log_q": max_diff,
            "mean_log_q": float(np.mean(log_q_sample)), "loss": loss,
            "mean_weight": float(np.mean(np.exp(log_gaussian_np(x) - log_q_sample))),
            "ok": bool(ok)}


# ----------------------------------------------------------------------------------------
# measurement


def structure(d: int, peers: dict[str, Any]) -> dict[str, Any]:
    """Coupling layers, parameter counts and mask agreement of the peers at dimension ``d``."""
    row: dict[str, Any] = {"d": d}
    masks = {}
    for name, peer in peers.items():
        masks[name] = peer.masks()
        row[f"{name}_coupling_layers"] = int(masks[name].shape[0])
        row[f"{name}_params"] = peer.n_params()
    if len(peers) == 2:
        a, b = masks.values()
        row["masks_equal"] = bool(a.shape == b.shape and np.array_equal(a, b))
        counts = [row[f"{n}_params"] for n in peers]
        row["same_structure"] = row["masks_equal"] and counts[0] == counts[1]
    return row


def run_case(d: int, batch: int, peer_names, repeats: int, warmup: int, seed: int,
             log=print, jax_device=None, torch_device: str = "cpu",
             compiler_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build, compile, warm up and time both operations for every peer at ``(d, batch)``.

    Returns ``{"structure": ..., "rows": [...], "validation": {...}, "peers": {...}}``.
    """
    peers: dict[str, Any] = {}
    for name in peer_names:
        if name == "jaxnis":
            peers[name] = JaxnisPeer(d, batch, seed, device=jax_device,
                                     compiler_options=compiler_options)
        else:
            peers[name] = MadnisPeer(d, batch, seed, device=torch_device)
    struct = structure(d, peers)
    counts = ", ".join(f"{n} {struct[f'{n}_params']} parameters in "
                       f"{struct[f'{n}_coupling_layers']} coupling layers" for n in peers)
    log(f"d={d} batch={batch}: {counts}"
        + ("" if "masks_equal" not in struct else f"; masks equal: {struct['masks_equal']}"))
    if struct.get("same_structure") is False:
        raise RuntimeError(f"the peers' flows differ at d={d}: {struct}")

    rows = []
    for op in OPS:
        times: dict[str, list[tuple[float, float]]] = {n: [] for n in peers}
        first: dict[str, float] = {}
        for name, peer in peers.items():
            info = peer.compile(op)
            if info:
                log(f"  {name} {op}: trace+lower {info['trace_lower_s']:.2f} s, "
                    f"compile {info['compile_s']:.2f} s")
            for i in range(warmup):
                wall, _ = _cpu_times(lambda p=peer, o=op: p.run(o), peer.sync)
                if i == 0:
                    first[name] = wall
        for _ in range(repeats):
            for name, peer in peers.items():  # interleaved: both see the same load
                times[name].append(_cpu_times(lambda p=peer, o=op: p.run(o), peer.sync))
        for name, peer in peers.items():
            walls = [t[0] for t in times[name]]
            cpus = [t[1] for t in times[name]]
            row = {"peer": name, "op": op, "d": d, "batch": batch, **_common.summarize_times(walls),
                   "cpu_median_s": statistics.median(cpus), "cpu_samples_s": cpus}
            row["samples_per_s"] = batch / row["median_s"]
            row["samples_per_cpu_s"] = batch / row["cpu_median_s"] if row["cpu_median_s"] > 0 \
                else math.nan
            row["cpu_over_wall"] = row["cpu_median_s"] / row["median_s"]
            row["first_call_s"] = first.get(name, math.nan)
            if name in peers and peer.compile_info.get(op):
                row["compile"] = peer.compile_info[op]
            rows.append(row)
            log(f"  {name:6s} {op:6s} {_common.si(row['samples_per_s']):>7s} samples/s "
                f"(median {row['median_s'] * 1e3:.1f} ms, CPU {row['cpu_median_s'] * 1e3:.1f} ms)")
    validation = {name: peer.validate() for name, peer in peers.items()}
    for name, v in validation.items():
        if not v["ok"]:
            log(f"  VALIDATION FAILED {name} d={d} batch={batch}: {v}")
    return {"structure": struct, "rows": rows, "validation": validation, "peers": peers}


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """jaxnis over MadNIS samples per second (wall and CPU time) for every case."""
    by_key = {(r["peer"], r["op"], r["d"], r["batch"]): r for r in rows}
    out = []
    for (peer, op, d, batch), row in by_key.items():
        other = by_key.get(("madnis", op, d, batch))
        if peer != "jaxnis" or other is None:
            continue
        out.append({"op": op, "d": d, "batch": batch,
                    "wall_ratio": row["samples_per_s"] / other["samples_per_s"],
                    "cpu_ratio": row["samples_per_cpu_s"] / other["samples_per_cpu_s"]})
    return out


def breakdown(d: int, batch: int, peer_names, repeats: int, seed: int, log=print,
              peer: JaxnisPeer | None = None,
              compiler_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Time the parts of a training step separately at ``(d, batch)`` (see module doc).

    ``peer``: a trained :class:`JaxnisPeer` of this case to reuse (its compiled sampler and
    step); built and compiled here if ``None``.
    """
    out: dict[str, Any] = {"d": d, "batch": batch}
    if "jaxnis" in peer_names:
        import jax

        if peer is None:
            peer = JaxnisPeer(d, batch, seed, compiler_options=compiler_options)
            for op in OPS:
                peer.compile(op)
                peer.sync(peer.run(op))  # a training step moves the flow off the identity
        # Same conditioners with a one-parameter element-wise map; its cost does not depend
        # on the values, so identity parameters and the spline flow's points serve.
        stand_in = JaxnisPeer(d, batch, seed, transform="affine",
                              compiler_options=compiler_options)
        _, x, _ = peer.sync(peer.run("sample"))
        grads = jax.jit(jax.grad(peer._loss))(peer.params, x)
        import optax

        def adam(g, s, p):
            updates, s = peer.tx.update(g, s, p)
            return optax.apply_updates(p, updates), s

        adam = jax.jit(adam)
        parts = {
            "sample (forward pass, RNG)": (peer.compiled["sample"], (peer.key, peer.params)),
            "one pass: sample_detached + loss, value and gradient":
                (jax.jit(jax.value_and_grad(peer._one_pass_loss)), (peer.params, peer.key)),
            "log_q via inverse pass, no gradient": (jax.jit(peer.log_prob), (peer.params, x)),
            "integrand + inverse pass + loss, value and gradient":
                (jax.jit(jax.value_and_grad(peer._loss)), (peer.params, x)),
            "Adam update": (adam, (grads, peer.opt_state, peer.params)),
            "whole training step": (peer.compiled["train"],
                                    (peer.key, peer.params, peer.opt_state)),
            "stand-in: inverse pass, no gradient, affine transform":
                (jax.jit(stand_in.log_prob), (stand_in.params, x)),
            "stand-in: value and gradient, affine transform":
                (jax.jit(jax.value_and_grad(stand_in._loss)), (stand_in.params, x)),
        }
        rows = []
        for name, (fn, args) in parts.items():
            t0 = time.perf_counter()
            compiled = (fn.lower(*args).compile(compiler_options=peer.compiler_options or None)
                        if hasattr(fn, "lower") else fn)
            # None: compiled for the main table already (reused here).
            compile_s = time.perf_counter() - t0 if hasattr(fn, "lower") else None
            jax.block_until_ready(compiled(*args))
            samples = [_cpu_times(lambda c=compiled, a=args: c(*a), jax.block_until_ready)
                       for _ in range(repeats)]
            row = {"part": name, "median_s": statistics.median(s[0] for s in samples),
                   "cpu_median_s": statistics.median(s[1] for s in samples),
                   "compile_s": compile_s}
            rows.append(row)
            log(f"  breakdown jaxnis {name}: {row['median_s'] * 1e3:.1f} ms "
                f"(CPU {row['cpu_median_s'] * 1e3:.1f} ms)")
        out["jaxnis"] = rows
    if "madnis" in peer_names:
        peer = MadnisPeer(d, batch, seed)
        peer.run("train")
        for _ in range(repeats):
            peer.run("train", stages=True)
        out["madnis"] = [{"part": name, "median_s": statistics.median(t[0] for t in v),
                          "cpu_median_s": statistics.median(t[1] for t in v)}
                         for name, v in peer.stages.items()]
        for row in out["madnis"]:
            log(f"  breakdown madnis {row['part']}: {row['median_s'] * 1e3:.1f} ms "
                f"(CPU {row['cpu_median_s'] * 1e3:.1f} ms)")
    out["summary"] = breakdown_summary(out)
    return out


def breakdown_summary(bd: dict[str, Any]) -> dict[str, float]:
    """Derived shares (CPU time): the one-pass gradient over the sampling pass, the
    two-pass step (sampling pass + gradient through the inverse pass) over the one-pass, the
    two-pass gradient over the inverse pass and the spline's share of it (minus the affine
    stand-in's), MadNIS's backward over its forward."""
    out: dict[str, float] = {}
    j = {r["part"]: r["cpu_median_s"] for r in bd.get("jaxnis", [])}
    if j:
        vg = j["integrand + inverse pass + loss, value and gradient"]
        one = j["one pass: sample_detached + loss, value and gradient"]
        sample = j["sample (forward pass, RNG)"]
        out["jaxnis_one_pass_over_sample"] = one / sample
        out["jaxnis_two_pass_over_one_pass"] = (sample + vg) / one
        out["jaxnis_grad_over_inverse_pass"] = vg / j["log_q via inverse pass, no gradient"]
        out["jaxnis_spline_share_of_two_pass_gradient"] = (
            (vg - j["stand-in: value and gradient, affine transform"]) / vg)
        out["jaxnis_affine_grad_over_inverse_pass"] = (
            j["stand-in: value and gradient, affine transform"]
            / j["stand-in: inverse pass, no gradient, affine transform"])
    m = {r["part"]: r["cpu_median_s"] for r in bd.get("madnis", [])}
    if m:
        out["madnis_backward_over_forward"] = (
            m["backward"] / m["integrand, log_q via inverse pass, loss"])
    return out


def gpu_section(dims, batches, repeats, warmup, seed, log=print) -> dict[str, Any]:
    """jaxnis (and MadNIS on CUDA if available) on the first GPU; ``skipped`` if none."""
    import jax

    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    if not gpus:
        return {"skipped": "no GPU visible to JAX (jax.devices('gpu') is empty)"}
    peer_names = ["jaxnis"]
    torch_device = "cpu"
    if madnis_available():
        import torch

        if torch.cuda.is_available():
            peer_names.append("madnis")
            torch_device = "cuda"
    rows, validation = [], []
    for d in dims:
        for batch in batches:
            res = run_case(d, batch, peer_names, repeats, warmup, seed, log=log,
                           jax_device=gpus[0], torch_device=torch_device)
            rows += res["rows"]
            validation.append({"d": d, "batch": batch, **res["validation"]})
    return {"device": str(gpus[0]), "device_kind": gpus[0].device_kind, "peers": peer_names,
            "rows": rows, "ratios": ratios(rows), "validation": validation}


# ----------------------------------------------------------------------------------------
# output


def markdown(payload: dict[str, Any]) -> list[str]:
    """Sections of ``flows.md``."""
    s = payload["settings"]
    sections = [
        "jaxnis coupling flow vs MadNIS's PyTorch `Flow` (binary masks, rational-quadratic "
        f"splines with {N_BINS} bins, conditioners {len(HIDDEN)} x {HIDDEN[0]}, float32), "
        "samples per second, median of "
        f"{s['repeats']} timed calls after {s['warmup']} warm-up call(s), peers interleaved. "
        "`train` = sample without gradient, Gaussian integrand, log q with its gradient at "
        "the fixed points (jaxnis: from the sampling pass, `Flow.sample_detached`; MadNIS: "
        "through the inverse pass), variance loss, gradient, Adam update. Produced by "
        "`benchmarks/flows.py`; see its docstring for the method.",
        _common.metadata_markdown(payload),
        "- threading: " + payload["threading"]["note"],
    ]
    struct = payload["structure"]
    if struct:
        peers = [p for p in ("jaxnis", "madnis") if f"{p}_params" in struct[0]]
        headers = ["d"] + [f"{p} coupling layers" for p in peers] + \
                  [f"{p} parameters" for p in peers]
        if len(peers) == 2:
            headers.append("masks equal")
        body = []
        for r in struct:
            line = [r["d"]] + [r[f"{p}_coupling_layers"] for p in peers] + \
                   [r[f"{p}_params"] for p in peers]
            if len(peers) == 2:
                line.append("yes" if r["masks_equal"] else "NO")
            body.append(line)
        sections.append("## Flow structure\n\n" + _common.markdown_table(headers, body))

    rat = {(r["op"], r["d"], r["batch"]): r for r in payload["ratios"]}
    rows = payload["cpu"]
    by = {(r["peer"], r["op"], r["d"], r["batch"]): r for r in rows}
    table = []
    for d in s["dims"]:
        for batch in s["batches"]:
            for op in OPS:
                j = by.get(("jaxnis", op, d, batch))
                m = by.get(("madnis", op, d, batch))
                r = rat.get((op, d, batch))
                comp = j.get("compile", {}) if j else {}
                table.append([
                    d, batch, op,
                    _common.si(j["samples_per_s"]) if j else "-",
                    _common.si(m["samples_per_s"]) if m else "-",
                    f"{r['wall_ratio']:.2f}" if r else "-",
                    f"{r['cpu_ratio']:.2f}" if r else "-",
                    f"{j['cpu_over_wall']:.2f} / {m['cpu_over_wall']:.2f}" if j and m else "-",
                    f"{comp['trace_lower_s'] + comp['compile_s']:.1f}" if comp else "-",
                ])
    sections.append(
        "## CPU throughput\n\nSamples per second (wall time). Ratio = jaxnis / MadNIS; the "
        "CPU-time ratio divides process CPU time (all threads) instead of wall time. "
        "CPU/wall = cores kept busy on average (below 1: waiting for a core on the shared "
        "machine). Compile = jaxnis trace+lower+XLA compile, not in the rates.\n\n"
        + _common.markdown_table(
            ["d", "batch", "op", "jaxnis /s", "MadNIS /s", "ratio (wall)", "ratio (CPU time)",
             "CPU/wall jaxnis / MadNIS", "jaxnis compile s"], table))

    target = payload.get("target", {})
    if target.get("rows"):
        verdict = "met" if target["met"] else "NOT met"
        sections.append(
            f"## Target\n\njaxnis training step >= {TARGET_RATIO:g}x MadNIS on the CPU: "
            f"**{verdict}**. Training-step ratios (wall / CPU time): "
            + ", ".join(f"d={r['d']} N={r['batch']}: {r['wall_ratio']:.2f} / "
                        f"{r['cpu_ratio']:.2f}" for r in target["rows"]) + ".")

    bd = payload.get("breakdown") or {}
    if bd.get("jaxnis") or bd.get("madnis"):
        parts = [f"## Where the time goes (d={bd['d']}, batch {bd['batch']})"]
        sm = bd.get("summary", {})
        lines = []
        if "jaxnis_grad_over_inverse_pass" in sm:
            lines += [
                f"- jaxnis: sample, loss and gradient in one pass (`sample_detached`) cost "
                f"{sm['jaxnis_one_pass_over_sample']:.1f}x the sampling pass; the two-pass "
                f"way (sampling pass, then value and gradient through the inverse pass) "
                f"{sm['jaxnis_two_pass_over_one_pass']:.2f}x the one-pass. The two-pass "
                f"gradient costs {sm['jaxnis_grad_over_inverse_pass']:.1f}x the inverse pass "
                f"alone, {100 * sm['jaxnis_spline_share_of_two_pass_gradient']:.0f}% of it in "
                f"the spline (minus the affine stand-in's); with the affine stand-in the "
                f"gradient costs {sm['jaxnis_affine_grad_over_inverse_pass']:.1f}x its "
                "inverse pass."]
        if "madnis_backward_over_forward" in sm:
            lines.append(f"- MadNIS: its backward costs "
                         f"{sm['madnis_backward_over_forward']:.1f}x its forward "
                         "(integrand, inverse pass, loss).")
        if lines:
            parts.append("CPU-time shares:\n\n" + "\n".join(lines))
        if bd.get("jaxnis"):
            parts.append(
                "jaxnis, each part jitted on its own (the affine stand-in replaces the "
                "spline by a one-parameter map: conditioners, scan and couplings only):\n\n"
                + _common.markdown_table(
                    ["part", "wall ms", "CPU ms", "compile s"],
                    [[r["part"], f"{r['median_s'] * 1e3:.1f}",
                      f"{r['cpu_median_s'] * 1e3:.1f}",
                      "reused" if r["compile_s"] is None else f"{r['compile_s']:.1f}"]
                     for r in bd["jaxnis"]]))
        if bd.get("madnis"):
            parts.append("MadNIS, stages of its eager training step:\n\n"
                         + _common.markdown_table(
                             ["stage", "wall ms", "CPU ms"],
                             [[r["part"], f"{r['median_s'] * 1e3:.1f}",
                               f"{r['cpu_median_s'] * 1e3:.1f}"] for r in bd["madnis"]]))
        sections.append("\n\n".join(parts))

    gpu = payload.get("gpu", {})
    if "skipped" in gpu:
        sections.append(f"## GPU\n\nNot run: {gpu['skipped']}.")
    elif gpu:
        sections.append(
            f"## GPU ({gpu['device_kind']})\n\n" + _common.markdown_table(
                ["peer", "d", "batch", "op", "samples/s", "compile s"],
                [[r["peer"], r["d"], r["batch"], r["op"], _common.si(r["samples_per_s"]),
                  f"{r['compile']['trace_lower_s'] + r['compile']['compile_s']:.1f}"
                  if r.get("compile") else "-"] for r in gpu["rows"]]))

    val = "passed" if payload["validation_passed"] else "FAILED"
    sections.append(
        f"## Equal work\n\nValidation {val}: points in the cube, log q of sampling equals "
        f"log q of the inverse pass within {ROUND_TRIP_TOL:g} (largest difference "
        f"{payload['round_trip_worst']:.2e}), finite losses, for every peer and case.")
    if payload.get("notes"):
        sections.append("## Notes\n\n" + "\n".join(f"- {n}" for n in payload["notes"]))
    return sections


# ----------------------------------------------------------------------------------------
# driver


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", type=int, nargs="+", default=list(DIMS))
    ap.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    ap.add_argument("--repeats", type=int, default=7, help="timed calls per case (median)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    ap.add_argument("--peers", nargs="+", choices=("jaxnis", "madnis"),
                    default=["jaxnis", "madnis"], help="madnis is dropped if not importable")
    ap.add_argument("--threads", type=int, default=None,
                    help="cores for both peers (default: all usable cores)")
    ap.add_argument("--breakdown", type=int, nargs=2, metavar=("D", "N"), default=[16, 16384])
    ap.add_argument("--no-breakdown", action="store_true")
    ap.add_argument("--gpu-batches", type=int, nargs="+", default=[1024, 16384, 262144])
    ap.add_argument("--no-gpu", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fast-compile", action="store_true",
                    help="XLA backend optimisation level 0 (harness checks only: the rates "
                         "then do not represent jaxnis)")
    ap.add_argument("--quick", action="store_true", help="d=4, batch 256, 2 repeats")
    ap.add_argument("--out", type=Path, default=_common.RESULTS_DIR)
    ap.add_argument("--name", default="flows")
    args = ap.parse_args(argv)
    if args.quick:
        args.dims, args.batches, args.repeats, args.no_breakdown = [4], [256], 2, True
        args.gpu_batches = [256]
    if args.repeats < 1 or args.warmup < 1:
        ap.error("--repeats and --warmup must be >= 1")
    return args


def configure_threads(threads: int | None) -> dict[str, Any]:
    """Pin the process to ``threads`` cores and set PyTorch's pool to match.

    Must run before JAX's first computation and before PyTorch is imported (the OpenMP wait
    policy is read when its runtime starts).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    count = _common.limit_cores(threads)
    info: dict[str, Any] = {
        "cores": count,
        "xla": f"XLA:CPU thread pool over the process's {count} pinned core(s); "
               f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '(unset)')!r}",
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    return info


def main(argv=None, log=print) -> dict[str, Any]:
    args = parse_args(argv)
    t_start = time.perf_counter()
    threading = configure_threads(args.threads)
    host_memory = _common.reuse_host_memory()  # before JAX's first computation
    peer_names = list(dict.fromkeys(args.peers))
    notes = []
    if "madnis" in peer_names and not madnis_available():
        peer_names.remove("madnis")
        notes.append("PyTorch/MadNIS not importable: jaxnis only.")
        log(notes[-1])
    if "madnis" in peer_names:
        import torch

        torch.set_num_threads(threading["cores"])
        threading["torch_threads"] = torch.get_num_threads()
    import jax

    import jaxnis.flows  # noqa: F401  (record the source actually imported, at the start)
    from jaxnis import compiler as jaxnis_compiler

    root = Path(__file__).resolve().parents[1]
    git = _common.git_state({path: root / path for path in SOURCES})
    threading["note"] = (
        f"{threading['cores']} core(s); {threading['xla']}"
        + (f"; torch.set_num_threads({threading['torch_threads']}), "
           f"OMP_WAIT_POLICY={threading['omp_wait_policy']}" if "torch_threads" in threading
           else ""))
    log(f"threading: {threading['note']}")
    log(f"host memory: {host_memory}")
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    meta = {
        "benchmark": "flows",
        "date": _common.utc_now(),
        "machine": _common.machine_info(),
        "versions": _common.versions(("jax", "jaxlib", "flax", "optax", "numpy", "torch",
                                      "madnis")),
        "git": git,
        "settings": {"dims": args.dims, "batches": args.batches, "repeats": args.repeats,
                     "warmup": args.warmup, "peers": peer_names, "threads": threading["cores"],
                     "dtype": "float32", "n_bins": N_BINS, "hidden": list(HIDDEN),
                     "masks": "binary", "learning_rate": LEARNING_RATE,
                     "integrand": f"Gaussian, sigma={SIGMA}, centre 0.5", "seed": args.seed,
                     "fast_compile": args.fast_compile, "host_memory": host_memory,
                     "jaxnis_compiler_options": {
                         **jaxnis_compiler.compiler_options(),
                         **(FAST_COMPILE if args.fast_compile else {})}},
        "jax_backend": jax.default_backend(),
    }
    options = FAST_COMPILE if args.fast_compile else None
    rows, struct, validation = [], [], []
    bd_peer = None
    for d in args.dims:
        for batch in args.batches:
            res = run_case(d, batch, peer_names, args.repeats, args.warmup, args.seed, log=log,
                           compiler_options=options)
            if [d, batch] == list(args.breakdown):
                bd_peer = res["peers"].get("jaxnis")
            rows += res["rows"]
            if not any(s["d"] == d for s in struct):
                struct.append(res["structure"])
            validation.append({"d": d, "batch": batch, **res["validation"]})
    rat = ratios(rows)
    train = [r for r in rat if r["op"] == "train"]
    target = {"ratio": TARGET_RATIO, "rows": train,
              "met": bool(train) and all(r["wall_ratio"] >= TARGET_RATIO for r in train)}
    bd = None
    if not args.no_breakdown:
        d, batch = args.breakdown
        log(f"breakdown at d={d}, batch={batch}")
        bd = breakdown(d, batch, peer_names, args.repeats, args.seed, log=log, peer=bd_peer,
                       compiler_options=options)
    gpu = ({"skipped": "--no-gpu"} if args.no_gpu else
           gpu_section(args.dims, args.gpu_batches, args.repeats, args.warmup, args.seed, log))
    checks = [v for case in validation for k, v in case.items() if isinstance(v, dict)]
    checks += [v for case in gpu.get("validation", []) for v in case.values()
               if isinstance(v, dict)]
    worst = max((c["round_trip_max_abs_log_q"] for c in checks), default=math.nan)
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load_before and load_after:
        shared = max(load_before[0], load_after[0]) > threading["cores"]
        notes.append(
            f"1-min load average {load_before[0]:.1f} before and {load_after[0]:.1f} after on "
            f"{threading['cores']} core(s): "
            + ("the cores were shared with other work during the run; wall times include "
               "waiting for a core, the CPU-time ratio is the steadier comparison."
               if shared else "the cores were not oversubscribed."))
    payload = {
        **meta,
        "threading": threading,
        "structure": struct,
        "cpu": rows,
        "ratios": rat,
        "target": target,
        "breakdown": bd,
        "gpu": gpu,
        "validation": validation,
        "validation_passed": all(c["ok"] for c in checks),
        "round_trip_worst": worst,
        "notes": notes,
        "total_wall_s": time.perf_counter() - t_start,
    }
    path, _ = _common.write_report(args.out, args.name, "Flow throughput: jaxnis vs MadNIS",
                                   payload, markdown(payload))
    log(f"wrote {path} and .md in {payload['total_wall_s']:.0f} s")
    return payload


if __name__ == "__main__":
    main()
