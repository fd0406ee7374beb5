"""Phase-space cuts as boolean masks, and their application to log weights.

Each cut is a function of momenta ``[..., n, 4]`` returning a boolean mask ``[...]`` that is
``True`` where the event **passes**. Masks combine with ``&`` and ``|``; thresholds are traced
(changing a cut never recompiles), particle indices are static. :func:`apply_cuts` turns a
mask into weights: a cut event has log weight ``-inf``, i.e. **weight zero**, and contributes
zero (not NaN) to means and gradients.

Example::

    mask = pt_min(p, 20.0) & eta_max(p, 2.5) & delta_r_min(p, 0.4)
    mask = mask & mass_window(p, (0, 1), 81.0, 101.0)
    log_w = apply_cuts(log_w, mask)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from jaxnis import kinematics as kin
from jaxnis.types import Array, ArrayLike


def _momenta(momenta: ArrayLike) -> Array:
    momenta = jnp.asarray(momenta)
    if momenta.ndim < 2 or momenta.shape[-1] != 4:
        raise ValueError(f"momenta must have shape [..., n, 4], got {momenta.shape}")
    return momenta


def _indices(indices: Sequence[int] | None, n: int, name: str) -> np.ndarray:
    if indices is None:
        return np.arange(n)
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"{name} must be a non-empty sequence of ints, got {indices!r}")
    if np.any(idx < 0) or np.any(idx >= n):
        raise ValueError(f"{name} {list(indices)!r} out of range for {n} particles")
    return idx


def pt_min(momenta: ArrayLike, cut: ArrayLike, indices: Sequence[int] | None = None) -> Array:
    """``True`` where every selected particle has ``pT >= cut``.

    Args:
        momenta: ``[..., n, 4]``.
        cut: minimum transverse momentum (GeV), traced.
        indices: static particle indices to test (default: all).

    Returns:
        Boolean mask ``[...]``.
    """
    momenta = _momenta(momenta)
    idx = _indices(indices, momenta.shape[-2], "indices")
    return jnp.all(kin.pt(momenta[..., idx, :]) >= cut, axis=-1)


def eta_max(momenta: ArrayLike, cut: ArrayLike, indices: Sequence[int] | None = None) -> Array:
    """``True`` where every selected particle has ``|eta| <= cut`` (pseudorapidity).

    Args and returns as :func:`pt_min`.
    """
    momenta = _momenta(momenta)
    idx = _indices(indices, momenta.shape[-2], "indices")
    return jnp.all(jnp.abs(kin.pseudorapidity(momenta[..., idx, :])) <= cut, axis=-1)


def delta_r_min(momenta: ArrayLike, cut: ArrayLike,
                pairs: Sequence[tuple[int, int]] | None = None) -> Array:
    """``True`` where every selected pair has ``Delta R >= cut``.

    Args:
        momenta: ``[..., n, 4]``.
        cut: minimum ``Delta R = sqrt(Delta eta^2 + Delta phi^2)``, traced.
        pairs: static index pairs ``[(i, j), ...]`` (default: all ``i < j``).

    Returns:
        Boolean mask ``[...]``; ``True`` when there are no pairs.
    """
    momenta = _momenta(momenta)
    n = momenta.shape[-2]
    if pairs is None:
        pairs = list(itertools.combinations(range(n), 2))
    if len(pairs) == 0:
        return jnp.ones(momenta.shape[:-2], dtype=bool)
    arr = np.asarray(pairs)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"pairs must be a sequence of (i, j) index pairs, got {pairs!r}")
    first = _indices(arr[:, 0], n, "pairs")
    second = _indices(arr[:, 1], n, "pairs")
    if np.any(first == second):
        raise ValueError(f"pairs {pairs!r} pair a particle with itself")
    dr = kin.delta_r(momenta[..., first, :], momenta[..., second, :])
    return jnp.all(dr >= cut, axis=-1)


def mass_window(momenta: ArrayLike, indices: Sequence[int], m_min: ArrayLike,
                m_max: ArrayLike) -> Array:
    """``True`` where the invariant mass of the summed selected momenta is in ``[m_min, m_max]``.

    Args:
        momenta: ``[..., n, 4]``.
        indices: static indices of the particles to combine (e.g. ``(0, 1)`` for a pair).
        m_min, m_max: window in GeV, traced (``m_max = inf`` for a lower cut only).

    Returns:
        Boolean mask ``[...]``.
    """
    momenta = _momenta(momenta)
    idx = _indices(indices, momenta.shape[-2], "indices")
    m = kin.mass(jnp.sum(momenta[..., idx, :], axis=-2))
    return (m >= m_min) & (m <= m_max)


def apply_cuts(log_weight: ArrayLike, mask: ArrayLike) -> Array:
    """Log weight with cut events set to ``-inf`` (weight zero): ``where(mask, log_w, -inf)``.

    The gradient with respect to ``log_weight`` is zero for cut events, and ``exp`` of the
    result is exactly 0 there, so sums of weights stay finite. Events that pass keep their
    log weight unchanged.

    Args:
        log_weight: ``[...]`` log weights.
        mask: boolean ``[...]`` (broadcastable), ``True`` where the event passes.
    """
    log_weight = jnp.asarray(log_weight)
    return jnp.where(jnp.asarray(mask, dtype=bool), log_weight, -jnp.inf)


__all__ = ["apply_cuts", "delta_r_min", "eta_max", "mass_window", "pt_min"]
