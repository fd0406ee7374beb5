"""Coupling masks and permutations.

A mask is a boolean array ``[n_layers, dim]``; ``True`` marks the dimensions a coupling
layer *conditions on* (left unchanged) and ``False`` the dimensions it transforms (the
convention of distrax's ``MaskedCoupling`` and of MadNIS). Changing the mask from layer to
layer is what a permutation between layers does in a split coupling flow, so no separate
permutation layers are needed; :class:`Permutation` is provided for composing bijectors by
hand.

Schemes:

* :func:`binary_masks`: ``2 ceil(log2 d)`` layers (MadNIS/i-flow, arXiv:2001.05486): layer
  ``2b`` conditions on the dimensions whose index has bit ``b`` set and layer ``2b + 1`` on
  the complement. Two different indices differ in some bit, so every dimension is
  transformed conditioned on every other one at least once.
* :func:`checkerboard_masks`: alternately even and odd indices.
* :func:`random_masks`: a seeded random half split per layer followed by its complement.

For ``d = 1`` every scheme gives layers that transform the single dimension without
conditioning on any other (the conditioner then sees only the context, or a constant).
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from jaxnis.types import Array, ArrayLike

MASK_SCHEMES = ("binary", "checkerboard", "random")


def _check_dim(dim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
    return int(dim)


def _repeat(masks: np.ndarray, n_layers: int | None) -> np.ndarray:
    if n_layers is None:
        return masks
    if isinstance(n_layers, bool) or not isinstance(n_layers, int | np.integer) or n_layers < 1:
        raise ValueError(f"n_layers must be an integer >= 1, got {n_layers!r}")
    reps = -(-n_layers // masks.shape[0])
    return np.tile(masks, (reps, 1))[:n_layers]


def binary_masks(dim: int, n_layers: int | None = None) -> np.ndarray:
    """Binary-digit masks ``[2 ceil(log2 dim), dim]`` (``[1, 1]`` all False for ``dim = 1``).

    With ``n_layers`` the pattern is repeated (or cut) to that many layers.
    """
    dim = _check_dim(dim)
    if dim == 1:
        return _repeat(np.zeros((1, 1), bool), n_layers)
    n_bits = math.ceil(math.log2(dim))
    idx = np.arange(dim)
    bits = ((idx[None, :] >> np.arange(n_bits)[:, None]) & 1).astype(bool)  # [n_bits, dim]
    masks = np.empty((2 * n_bits, dim), bool)
    masks[0::2] = bits
    masks[1::2] = ~bits
    return _repeat(masks, n_layers)


def checkerboard_masks(dim: int, n_layers: int | None = None) -> np.ndarray:
    """Alternating checkerboard masks ``[n_layers, dim]``; by default as many layers as
    :func:`binary_masks` uses (at least 2 for ``dim >= 2``)."""
    dim = _check_dim(dim)
    if dim == 1:
        return _repeat(np.zeros((1, 1), bool), n_layers)
    if n_layers is None:
        n_layers = max(2, 2 * math.ceil(math.log2(dim)))
    even = (np.arange(dim) % 2 == 0)
    return _repeat(np.stack([even, ~even]), n_layers)


def random_masks(dim: int, n_layers: int | None = None, seed: int = 0) -> np.ndarray:
    """Random half splits (seeded NumPy generator, so the masks are static), each followed by
    its complement; by default as many layers as :func:`binary_masks` uses."""
    dim = _check_dim(dim)
    if dim == 1:
        return _repeat(np.zeros((1, 1), bool), n_layers)
    if n_layers is None:
        n_layers = max(2, 2 * math.ceil(math.log2(dim)))
    rng = np.random.default_rng(seed)
    half = np.arange(dim) < dim // 2
    pairs = [rng.permutation(half) for _ in range(-(-n_layers // 2))]
    masks = np.concatenate([np.stack([p, ~p]) for p in pairs])
    return masks[:n_layers]


def make_masks(scheme, dim: int, n_layers: int | None = None, seed: int = 0) -> np.ndarray:
    """Masks ``[n_layers, dim]`` from a scheme name (see ``MASK_SCHEMES``) or an explicit
    boolean array, validated with :func:`validate_masks`."""
    dim = _check_dim(dim)
    if isinstance(scheme, str):
        if scheme == "binary":
            masks = binary_masks(dim, n_layers)
        elif scheme == "checkerboard":
            masks = checkerboard_masks(dim, n_layers)
        elif scheme == "random":
            masks = random_masks(dim, n_layers, seed)
        else:
            raise ValueError(f"unknown mask scheme {scheme!r}; expected one of {MASK_SCHEMES}")
        return validate_masks(masks, dim)
    masks = validate_masks(scheme, dim)
    if n_layers is not None and n_layers != masks.shape[0]:
        raise ValueError(f"n_layers={n_layers!r} does not match the {masks.shape[0]} given masks")
    return masks


def validate_masks(masks, dim: int) -> np.ndarray:
    """Check a mask array ``[n_layers, dim]`` of booleans; every layer must transform at
    least one dimension. Returns it as a NumPy bool array."""
    arr = np.asarray(masks)
    if arr.ndim != 2 or arr.shape[1] != dim or arr.shape[0] < 1:
        raise ValueError(f"masks must have shape [n_layers >= 1, {dim}], got {arr.shape}")
    if arr.dtype != bool:
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError(f"masks must be boolean (True = condition on), got {arr!r}")
        arr = arr.astype(bool)
    identity = np.flatnonzero(arr.all(axis=1))
    if identity.size:
        raise ValueError(f"mask layer(s) {identity.tolist()} transform no dimension")
    return arr


def conditions_all(masks: np.ndarray) -> bool:
    """Whether for every ordered pair ``i != j`` some layer transforms ``i`` given ``j``."""
    masks = np.asarray(masks, bool)
    seen = np.any(~masks[:, :, None] & masks[:, None, :], axis=0)  # [i transformed, j cond]
    np.fill_diagonal(seen, True)
    return bool(seen.all())


@dataclasses.dataclass(frozen=True)
class Permutation:
    """Volume-preserving permutation bijector ``y = x[perm]`` (``log|det| = 0``).

    ``params`` are ignored (pass ``None`` or ``{}``) so it composes with the other
    bijectors; ``perm`` is static.
    """

    perm: tuple[int, ...]

    def __post_init__(self):
        perm = tuple(int(p) for p in self.perm)
        if sorted(perm) != list(range(len(perm))) or not perm:
            raise ValueError(f"perm must be a permutation of range(d), got {self.perm!r}")
        object.__setattr__(self, "perm", perm)

    def init(self, key=None, dtype=None) -> dict:
        """No parameters: ``{}``."""
        return {}

    def forward_and_log_det(self, params, x: ArrayLike) -> tuple[Array, Array]:
        """``x[perm]`` and a zero log-determinant, for one event ``x [d]``."""
        x = jnp.asarray(x)
        if x.shape[-1] != len(self.perm):
            raise ValueError(f"Permutation of {len(self.perm)} dims got input {x.shape}")
        return x[..., np.asarray(self.perm)], jnp.zeros(x.shape[:-1], x.dtype)

    def inverse_and_log_det(self, params, y: ArrayLike) -> tuple[Array, Array]:
        """Inverse permutation, zero log-determinant."""
        y = jnp.asarray(y)
        if y.shape[-1] != len(self.perm):
            raise ValueError(f"Permutation of {len(self.perm)} dims got input {y.shape}")
        return y[..., np.argsort(self.perm)], jnp.zeros(y.shape[:-1], y.dtype)


__all__ = [
    "MASK_SCHEMES",
    "Permutation",
    "binary_masks",
    "checkerboard_masks",
    "conditions_all",
    "make_masks",
    "random_masks",
    "validate_masks",
]
