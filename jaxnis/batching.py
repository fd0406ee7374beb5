"""Evaluate a batched function on a large batch in fixed-size chunks.

``jax.jit(jax.vmap(f))`` on a batch of ``N`` events makes XLA's CPU backend write every
intermediate that has more than one use as an ``[N]`` array to memory: a phase-space map
with a few hundred such scalars per event moves kilobytes per event through DRAM, and for
``N ~ 1e6`` that memory traffic, not the arithmetic, sets the speed. Calling the same
compiled function on consecutive chunks of ``~1e4`` events keeps the intermediates in the
cache. Measured on 2 shared cores for RAMBO on diet, ``n = 4``, float64, ``N = 1e6``:
about 2x the events per second of the single call, and 1.8x its events per CPU-second
(``benchmarks/results/phase_space.md``).

:class:`BatchEvaluator` does this for any function whose inputs and outputs are pytrees
of arrays with a leading batch axis:

* the function is jitted once, and every call it gets has the chunk's shape, so it is
  traced and compiled once per chunk shape, whatever the batch size;
* a ragged tail is not padded with invented events and never triggers a new trace: the
  last chunk is the last ``chunk`` events of the batch (it overlaps the previous chunk),
  and only its new rows are kept. Every event is computed from real inputs, so no padding
  value can produce NaNs or warnings;
* the result has the single call's structure, shapes and dtypes, and its values are those
  of the chunk-shaped program. XLA compiles one program per shape, and two programs may
  round an elementwise transcendental differently in the last bit (seen for ``jnp.sin`` in
  float32, ``N = 9`` against ``8``); for RAMBO on diet the chunked result is bit-identical
  to the single call (tested);
* the chunks are dispatched asynchronously and joined by one jitted concatenation into
  arrays of the single call's shapes (measured faster than writing each chunk into a
  preallocated, donated output with ``dynamic_update_slice``, which serialises the chunks).

On a GPU a single call is usually best (the batch has to be large to fill the device):
pass ``chunk=None``, or a chunk of millions of events to bound the memory.

Example:
    >>> import jax
    >>> from jaxnis.batching import BatchEvaluator
    >>> from jaxnis.phasespace.rambo import RamboOnDiet, make_cond
    >>> ps = RamboOnDiet(4)
    >>> forward = BatchEvaluator(jax.vmap(ps.forward, in_axes=(0, None)), in_axes=(0, None))
    >>> r = jax.random.uniform(jax.random.key(0), (100_000, ps.n_random))
    >>> momenta, log_w = forward(r, make_cond(1000.0))
    >>> momenta.shape, log_w.shape
    ((100000, 4, 4), (100000,))
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnis.types import PyTree

# Events per chunk on the CPU, from the chunk sweep of benchmarks/phase_space.py (RAMBO on diet,
# massless, float64, N = 1e6, 2 heavily shared cores): events per process-CPU-second relative
# to MadSpace in the same run, chunks of 4096 / 8192 / 16384 / 32768 / 65536 and one call, in
# two runs: n = 4: 0.67 / 0.88 / 0.89 / 0.95 / 0.88, one call 0.50, and 0.72 / 0.84 / 0.84 /
# 0.96 / 0.83, one call 0.46; n = 8: 0.39 / 0.42 / 0.42 / 0.38 / 0.25, one call 0.27, and
# 0.44 / 0.43 / 0.40 / 0.39 / 0.29, one call 0.24. Small chunks lose to per-call overhead,
# large ones to cache misses (the n = 4 program keeps ~35 [chunk] float64 arrays: 16384
# events is ~5 MB, L2/L3-sized); 8192-32768 is a plateau within the noise.
DEFAULT_CHUNK = 16384


def check_chunk(chunk, name: str = "chunk") -> int | None:
    """``chunk`` as an int, or ``None``; ``ValueError`` naming ``name`` otherwise (static)."""
    if chunk is None:
        return None
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {name}={chunk!r}")
    return int(chunk)


def vmap_chunked(fn: Callable, args: tuple, chunk: int | None = None,
                 name: str = "event_chunk") -> PyTree:
    """``jax.vmap(fn)(*args)`` over the leading axis ``N`` of ``args``, ``chunk`` rows at a
    time, inside a traced program (``lax.map`` over blocks; ``None``: one ``vmap``).

    The traceable counterpart of :class:`BatchEvaluator` for use under ``jit`` or ``grad``:
    tiling bounds the intermediates to ``chunk`` rows, which keeps them in the CPU caches
    when a row's work is large (every row evaluated at a whole parameter grid, for
    example); inside a block the work is still vectorised. The last block is padded with
    copies of the first row (valid inputs: no NaN) and the padding is dropped again.
    ``name`` names ``chunk`` in the error for a bad value.
    """
    chunk = check_chunk(chunk, name)
    n = jax.tree.leaves(args)[0].shape[0]
    if chunk is None or n <= chunk:
        return jax.vmap(fn)(*args)
    n_blocks = -(-n // chunk)
    pad = n_blocks * chunk - n

    def blocks(x):
        if pad:
            x = jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad,) + x.shape[1:])])
        return x.reshape((n_blocks, chunk) + x.shape[1:])

    out = jax.lax.map(lambda a: jax.vmap(fn)(*a), jax.tree.map(blocks, args))
    return jax.tree.map(lambda y: y.reshape((n_blocks * chunk,) + y.shape[2:])[:n], out)


def _check_in_axes(in_axes) -> int | None | tuple:
    if in_axes is None or (isinstance(in_axes, int) and not isinstance(in_axes, bool)):
        if in_axes not in (0, None):
            raise ValueError(f"in_axes must be 0, None or a sequence of them, got {in_axes!r}")
        return in_axes
    if isinstance(in_axes, (tuple, list)) and all(
            a is None or (a == 0 and not isinstance(a, bool)) for a in in_axes):
        return tuple(in_axes)
    raise ValueError(f"in_axes must be 0, None or a sequence of them, got {in_axes!r}")


def _take(leaves: tuple, start, size: int) -> tuple:
    """Rows ``[start, start + size)`` of each leaf (``start`` traced: one compile per shape)."""
    return tuple(jax.lax.dynamic_slice_in_dim(x, start, size) for x in leaves)


def _join(outs: list, tail: int) -> PyTree:
    """Concatenate chunk outputs along axis 0, keeping only the last ``tail`` rows of the
    final chunk (it overlaps the one before)."""
    last = jax.tree.map(lambda x: x[x.shape[0] - tail:], outs[-1])
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *outs[:-1], last)


class BatchEvaluator:
    """A batched function evaluated in chunks of a fixed number of events.

    Args:
        fn: batched function, e.g. ``jax.vmap(ps.forward, in_axes=(0, None))``. Its mapped
            arguments are pytrees of arrays ``[N, ...]``; every leaf of its output must have
            the leading batch axis ``[N, ...]`` too. It must treat events independently
            (as a ``vmap`` does), so that any chunking gives the same result.
        chunk: events per call (static), a positive integer, or ``None`` for one call on the
            whole batch. Default :data:`DEFAULT_CHUNK`, measured on the CPU.
        in_axes: ``0`` (every positional argument is batched), ``None`` (none: then the
            function is simply jitted), or one ``0``/``None`` per positional argument;
            ``None`` arguments (conditions, parameters) are passed whole to every chunk.
        **jit_kwargs: passed to :func:`jax.jit` (for example ``compiler_options``).

    Calling the evaluator returns the same pytree as ``jax.jit(fn)(*args)``. Batches of at
    most ``chunk`` events are one call at their own shape; larger batches are split, so a
    training or sampling loop that changes ``N`` compiles ``fn`` only once. Each call also
    runs one small jitted slice per chunk and one concatenation (compiled per batch size,
    both cheap to compile).

    Raises:
        ValueError: for a bad ``chunk`` or ``in_axes`` (at construction), or, when called,
            for a wrong number of arguments, mapped leaves without a common leading
            dimension, or outputs without the batch axis.
    """

    def __init__(self, fn: Callable[..., PyTree], *, chunk: int | None = DEFAULT_CHUNK,
                 in_axes: int | None | Sequence[int | None] = 0, **jit_kwargs: Any):
        if not callable(fn):
            raise ValueError(f"fn must be callable, got {fn!r}")
        self.fn = fn
        self.chunk = check_chunk(chunk)
        self.in_axes = _check_in_axes(in_axes)
        self.jitted = jax.jit(fn, **jit_kwargs)
        self._take = jax.jit(_take, static_argnums=(2,))
        self._join = jax.jit(_join, static_argnums=(1,))

    def _axes(self, n_args: int) -> tuple:
        if not isinstance(self.in_axes, tuple):
            return (self.in_axes,) * n_args
        if len(self.in_axes) != n_args:
            raise ValueError(f"in_axes has {len(self.in_axes)} entries for {n_args} arguments")
        return self.in_axes

    def batch_size(self, *args: Any) -> int | None:
        """Common leading dimension of the mapped arguments (``None`` if nothing is mapped)."""
        sizes = {}
        for arg, axis in zip(args, self._axes(len(args)), strict=True):
            if axis is None:
                continue
            for path, leaf in jax.tree_util.tree_leaves_with_path(arg):
                shape = np.shape(leaf)
                if len(shape) == 0:
                    raise ValueError("mapped leaf "
                                     f"{jax.tree_util.keystr(path) or 'argument'} is a scalar")
                sizes.setdefault(shape[0], []).append(jax.tree_util.keystr(path) or "argument")
        if len(sizes) > 1:
            raise ValueError(f"mapped leaves have different leading dimensions: {sizes}")
        return next(iter(sizes), None)

    def chunk_args(self, *args: Any, start: int = 0, size: int | None = None) -> tuple:
        """The arguments of one chunk: mapped leaves sliced to ``[start, start + size)``.

        NumPy leaves are sliced on the host (views); JAX arrays by one jitted
        ``dynamic_slice`` for all of them, on their device.
        """
        size = self.chunk if size is None else size
        axes = self._axes(len(args))
        flat, treedef = jax.tree.flatten(list(args), is_leaf=lambda x: x is None)
        mapped = []  # flat index of each mapped leaf
        offset = 0
        for arg, axis in zip(args, axes, strict=True):
            count = len(jax.tree.leaves(arg, is_leaf=lambda x: x is None))
            if axis == 0:
                mapped += range(offset, offset + count)
            offset += count
        device_idx = [i for i in mapped if isinstance(flat[i], jax.Array)]
        host_idx = [i for i in mapped if not isinstance(flat[i], jax.Array)]
        out = list(flat)
        for i in host_idx:
            out[i] = np.asarray(flat[i])[start:start + size]
        if device_idx:
            taken = self._take(tuple(flat[i] for i in device_idx), start, size)
            for i, x in zip(device_idx, taken, strict=True):
                out[i] = x
        return tuple(jax.tree.unflatten(treedef, out))

    def lower(self, *args: Any):
        """``jax.jit(fn).lower`` at the shape of one chunk of ``args`` (ahead-of-time compile:
        ``evaluator.lower(*args).compile()`` fills the cache that later calls use)."""
        n = self.batch_size(*args)
        if self.chunk is None or n is None or n <= self.chunk:
            return self.jitted.lower(*args)
        return self.jitted.lower(*self.chunk_args(*args))

    def __call__(self, *args: Any) -> PyTree:
        n = self.batch_size(*args)
        chunk = self.chunk
        if chunk is None or n is None or n <= chunk:
            return self.jitted(*args)
        starts = range(0, n, chunk)
        # The last chunk ends at the end of the batch: same shape, no padding, no new trace.
        outs = [self.jitted(*self.chunk_args(*args, start=min(s, n - chunk)))
                for s in starts]
        for path, leaf in jax.tree_util.tree_leaves_with_path(outs[0]):
            if np.ndim(leaf) == 0 or np.shape(leaf)[0] != chunk:
                raise ValueError(f"output leaf {jax.tree_util.keystr(path) or 'output'} has "
                                 f"shape {np.shape(leaf)}, expected a leading batch axis of "
                                 f"{chunk}")
        return self._join(outs, n - starts[-1])


def map_in_chunks(fn: Callable[..., PyTree], *args: Any, chunk: int | None = DEFAULT_CHUNK,
                  in_axes: int | None | Sequence[int | None] = 0) -> PyTree:
    """``jax.jit(fn)(*args)`` evaluated in chunks of ``chunk`` events (see
    :class:`BatchEvaluator`). The evaluator is cached per ``(fn, chunk, in_axes)``, so
    repeated calls with the same function compile once."""
    return _evaluator(fn, check_chunk(chunk), _check_in_axes(in_axes))(*args)


@functools.lru_cache(maxsize=64)
def _evaluator(fn, chunk, in_axes) -> BatchEvaluator:
    return BatchEvaluator(fn, chunk=chunk, in_axes=in_axes)


__all__ = ["DEFAULT_CHUNK", "BatchEvaluator", "check_chunk", "map_in_chunks", "vmap_chunked"]
