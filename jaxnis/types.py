"""Shared type aliases.

Conventions used throughout jaxnis:

* Four-momenta are arrays ``[..., 4]`` ordered ``(E, px, py, pz)`` in GeV.
* Phase-space maps and bijectors act on **one event**: ``r`` has shape ``[d]``, momenta
  ``[n, 4]``, a log weight is a scalar. Batches are made with :func:`jax.vmap`
  (``in_axes=(0, None)`` to share ``cond`` or parameters across the batch).
* Parameters and conditions are plain pytrees (dicts of arrays). Floats are traced,
  never static, so changing a mass or an energy does not recompile.
"""

from __future__ import annotations

from typing import Any

import jax

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
PRNGKey = jax.Array
PyTree = Any
Params = Any  # a pytree of arrays
Cond = dict[str, ArrayLike]  # traced conditions of a map: sqrt_s, masses, widths, ...

__all__ = ["Array", "ArrayLike", "Cond", "PRNGKey", "Params", "PyTree"]
