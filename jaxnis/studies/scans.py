r"""Vectorised parameter scans: a cross section over a grid as one compiled ``vmap`` call.

Every grid point is evaluated on the **same** sample points (common random numbers), so
neighbouring points differ by the change of the integrand, not by independent noise: the
scan is a smooth curve whose overall Monte Carlo error is shared. Parameters are traced, so
one compilation serves every grid of the same length (and, with ``chunk``, every length
that is a multiple of ``chunk``).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxnis.physics.processes import EEToFFbar
    >>> proc = EEToFFbar("mu")
    >>> params = proc.default_params()
    >>> grid = {"sqrt_s": jnp.linspace(80.0, 100.0, 5)}
    >>> scan = jax.jit(scan_cross_section, static_argnames=("integrand", "n"))
    >>> out = scan(proc, params, grid, jax.random.key(0), n=2048)
    >>> out.value.shape
    (5,)
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnis.studies.core import (
    Points,
    as_integrand,
    check_chunk,
    default_points,
    event_value_and_grad,
    grid_values,
    map_points,
    over_grid_blocks,
    resolve_mode,
    stratified_mean,
)
from jaxnis.types import Array, ArrayLike, Params, PRNGKey


class ScanResult(NamedTuple):
    """Cross sections over a grid of ``G`` parameter points.

    Attributes:
        value: ``[G]`` estimates.
        error: ``[G]`` standard errors (correlated between points: common random numbers).
        grad: ``{name: [G]}`` pathwise gradients when ``wrt`` was given, else ``None``.
        grad_error: their standard errors, or ``None``.
    """

    value: Array
    error: Array
    grad: Any = None
    grad_error: Any = None


def product_grid(axes: Mapping[str, ArrayLike]) -> dict[str, Array]:
    """The Cartesian product of 1-D axes as flat ``{name: [G]}`` (last axis fastest).

    Example: ``product_grid({"M_Zp": masses, "Gamma_Zp": widths})`` for a 2-D scan; reshape
    results to ``[len(masses), len(widths)]``.
    """
    names = list(axes)
    arrays = [np.asarray(axes[k]) for k in names]
    for k, a in zip(names, arrays, strict=True):
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"axis {k!r} must be a non-empty 1-D array, got shape {a.shape}")
    rows = np.array(list(itertools.product(*arrays)))
    return {k: jnp.asarray(rows[:, i]) for i, k in enumerate(names)}


#: Default points per block of a scan: small enough that the ``block x grid`` intermediates
#: stay in the CPU caches, large enough to vectorise (see ``benchmarks/gradients.py``).
SCAN_EVENT_CHUNK = 256


def scan_cross_section(integrand: Any, params: Params, grid: Mapping[str, ArrayLike],
                       key: PRNGKey | None = None, n: int | None = None, *,
                       points: Points | None = None, wrt: Sequence[str] | None = None,
                       mode: str = "auto", chunk: int | None = None,
                       event_chunk: int | None = SCAN_EVENT_CHUNK) -> ScanResult:
    """Cross section (and optionally its gradient) at every grid point, common random numbers.

    Every point is evaluated at the whole grid (``vmap`` over the grid *inside* the ``vmap``
    over points), with only the scanned entries of ``params`` batched: the work that does
    not depend on them (maps of channels that ignore them, PDFs, kinematics, channel
    weights that do not involve them) is done once per point, not once per grid point.
    The points are processed ``event_chunk`` at a time (``lax.map``), so the per-grid-point
    intermediates stay small; the results do not depend on the tiling.

    Args:
        integrand: process, study integrand, or ``f(r, params)`` (then give ``points``).
        params: base parameters; ``grid`` overrides some of them.
        grid: ``{name: [G]}`` values (several names move together, e.g. a mass and a width
            that scales with it; :func:`product_grid` for a product).
        key, n: draw ``n`` uniform points (equal channel blocks), shared by all grid points.
        points: explicit shared points instead (a trained flow's, for example).
        wrt: static names to differentiate at every grid point (``None``: values only).
        mode: forward/reverse mode for the gradient (see
            :func:`jaxnis.studies.core.per_event_value_and_grad`).
        chunk: grid points per ``lax.map`` step (``None``: the whole grid at once).
        event_chunk: static points per block (``None``: all points in one ``vmap``).

    Returns:
        :class:`ScanResult` with leading axis ``G``.
    """
    integrand = as_integrand(integrand, None if points is None else points.r.shape[-1])
    points = default_points(integrand, params, key, n, points)
    values = grid_values(params, grid)
    check_chunk(event_chunk, "event_chunk")
    n_ch = integrand.n_channels
    if wrt is not None:
        wrt = tuple(wrt)
        mode = resolve_mode(mode, params, wrt)

    def at_grid(r, log_q, c, vals):
        """One point at every grid point of ``vals``: ``[g]`` weights (and gradients)."""
        def one(v):
            p = {**params, **v}
            if wrt is None:
                return integrand.weight_and_event(r, p, c)[0] * jnp.exp(-log_q)
            return event_value_and_grad(integrand, p, r, log_q, c, wrt, mode)

        return jax.vmap(one)(vals)

    def block(vals):
        out = map_points(lambda r, lq, c: at_grid(r, lq, c, vals), points, n_ch, event_chunk)
        # [N, g] per-event weights (and gradients) -> estimates [g]
        if wrt is None:
            est = stratified_mean(out, points, n_ch)
            return ScanResult(est.value, est.error)
        w, g = out
        est = stratified_mean(w, points, n_ch)
        grads = {k: stratified_mean(v, points, n_ch) for k, v in g.items()}
        return ScanResult(est.value, est.error, {k: e.value for k, e in grads.items()},
                          {k: e.error for k, e in grads.items()})

    return over_grid_blocks(block, values, chunk)


__all__ = ["SCAN_EVENT_CHUNK", "ScanResult", "product_grid", "scan_cross_section"]
