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

import jax.numpy as jnp
import numpy as np

from jaxnis.studies.core import (
    Points,
    as_integrand,
    cross_section,
    cross_section_and_grad,
    default_points,
    over_grid,
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


def scan_cross_section(integrand: Any, params: Params, grid: Mapping[str, ArrayLike],
                       key: PRNGKey | None = None, n: int | None = None, *,
                       points: Points | None = None, wrt: Sequence[str] | None = None,
                       mode: str = "auto", chunk: int | None = None) -> ScanResult:
    """Cross section (and optionally its gradient) at every grid point, common random numbers.

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
        chunk: grid points per ``lax.map`` step (``None``: one ``vmap`` over the whole grid).

    Returns:
        :class:`ScanResult` with leading axis ``G``.
    """
    integrand = as_integrand(integrand, None if points is None else points.r.shape[-1])
    points = default_points(integrand, params, key, n, points)
    if wrt is None:
        def one(p):
            est = cross_section(integrand, p, points=points)
            return ScanResult(est.value, est.error)
    else:
        def one(p):
            est = cross_section_and_grad(integrand, p, wrt=tuple(wrt), points=points, mode=mode)
            return ScanResult(est.value, est.error, est.grad, est.grad_error)
    return over_grid(one, params, grid, chunk)


__all__ = ["ScanResult", "product_grid", "scan_cross_section"]
