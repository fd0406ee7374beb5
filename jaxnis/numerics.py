"""Numerically safe elementary functions.

Each helper avoids NaN in the value *and* in the gradient. ``jnp.where(c, f(x), 0)`` alone
is not enough: the gradient of the unused branch is still computed and ``0 * inf = nan``
propagates. The "double where" below first replaces the bad inputs by a harmless value,
so both branches are finite everywhere.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxnis.types import Array, ArrayLike


def is_concrete(value) -> bool:
    """Whether ``value`` is known now, not traced under ``jit``/``grad``/``vmap``: only
    concrete values can be checked in Python (a traced one has no value yet)."""
    return not isinstance(value, jax.core.Tracer)


def safe_sqrt(x: ArrayLike) -> Array:
    """``sqrt(max(x, 0))`` with gradient 0 (not inf/nan) for ``x <= 0``."""
    x = jnp.asarray(x)
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, jnp.ones_like(x))), 0.0)


def safe_log(x: ArrayLike) -> Array:
    """``log(x)`` for ``x > 0`` and ``-inf`` otherwise, with finite (zero) gradient there."""
    x = jnp.asarray(x)
    positive = x > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, x, jnp.ones_like(x))), -jnp.inf)


def safe_div(num: ArrayLike, den: ArrayLike) -> Array:
    """``num / den`` where ``den != 0`` and 0 elsewhere, gradient-safe."""
    num, den = jnp.asarray(num), jnp.asarray(den)
    nonzero = den != 0
    return jnp.where(nonzero, num / jnp.where(nonzero, den, jnp.ones_like(den)), 0.0)


def max_abs_scale(x: ArrayLike) -> Array:
    """``max |x|``, or 1 where all of ``x`` is zero, without gradient: the unit in which
    squares of ``x`` are formed so that they fit the dtype whenever ``x`` does."""
    top = jax.lax.stop_gradient(jnp.max(jnp.abs(jnp.asarray(x))))
    return jnp.where(top > 0, top, jnp.ones_like(top))


def times_exp(x: ArrayLike, log_scale: ArrayLike) -> Array:
    """``x exp(log_scale)`` as ``sign(x) exp(log|x| + log_scale)``: no overflow of the scale
    alone when the product fits (double where at ``x = 0``)."""
    x = jnp.asarray(x)
    nz = x != 0
    mag = jnp.exp(jnp.log(jnp.abs(jnp.where(nz, x, 1.0))) + log_scale)
    return jnp.where(nz, jnp.sign(x) * mag, 0.0)


def kallen(a: ArrayLike, b: ArrayLike, c: ArrayLike) -> Array:
    """Kallen triangle function ``lambda(a, b, c) = a^2 + b^2 + c^2 - 2ab - 2ac - 2bc``.

    Written as ``(a - b - c)^2 - 4 b c``, which loses less precision when ``b, c << a``.
    """
    a, b, c = jnp.asarray(a), jnp.asarray(b), jnp.asarray(c)
    return (a - b - c) ** 2 - 4.0 * b * c


__all__ = ["kallen", "max_abs_scale", "safe_div", "safe_log", "safe_sqrt", "times_exp"]
