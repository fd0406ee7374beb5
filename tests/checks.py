"""Reusable property checks for maps, bijectors and Monte Carlo estimates.

A *map* here is any object with ``forward(r, cond) -> (x, log_weight)`` and
``inverse(x, cond) -> (r, log_weight)`` acting on one event; bijectors use the same checks
through small lambdas. Every check asserts a number and reports the worst offender.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnums=(0, 1))
def call(m, method: str, x, cond):
    """``m.method(x, cond)`` compiled once per (map, method, shapes): ``cond`` is traced, so
    every test module that calls the same map with the same shapes shares the program."""
    return getattr(m, method)(x, cond)


def fwd(m, cond) -> Callable:
    """The compiled forward map of ``m`` at fixed ``cond`` as a function of one event."""
    return lambda x: call(m, "forward", x, cond)


def inv(m, cond) -> Callable:
    """The compiled inverse map of ``m`` at fixed ``cond`` as a function of one event."""
    return lambda x: call(m, "inverse", x, cond)


def assert_round_trip(forward: Callable, inverse: Callable, r, *, atol: float) -> None:
    """``inverse(forward(r)) == r`` and the two log weights sum to zero, over a batch ``r``.

    ``forward(r_single) -> (x, logw)``, ``inverse(x_single) -> (r, logw)``.
    """
    x, lw_f = jax.vmap(forward)(r)
    r_back, lw_i = jax.vmap(inverse)(x)
    err = np.max(np.abs(np.asarray(r_back) - np.asarray(r)))
    assert err <= atol, f"round trip error {err:.3g} > {atol:.3g}"
    finite = np.isfinite(np.asarray(lw_f))
    lsum = np.max(np.abs(np.asarray(lw_f + lw_i)[finite]), initial=0.0)
    assert lsum <= max(atol, 1e3 * atol) * 10, f"log-weight mismatch {lsum:.3g}"


def assert_logdet_matches_jacobian(fn: Callable, r, *, rtol: float, atol: float = 0.0) -> None:
    """For ``fn(r_single) -> (y, logdet)`` with ``dim y == dim r``, logdet == log|det dy/dr|."""

    def one(ri):
        y_of_r = lambda z: jnp.ravel(fn(z)[0])  # noqa: E731
        jac = jax.jacfwd(y_of_r)(ri)
        return jnp.linalg.slogdet(jac)[1], fn(ri)[1]

    want, got = jax.vmap(one)(r)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=rtol, atol=atol)


def assert_batch_equals_loop(fn: Callable, batch_args: tuple, *, rtol: float, atol: float = 0.0):
    """``jax.vmap(fn)(*batch_args)`` equals a Python loop of ``fn`` over the leading axis."""
    batched = jax.vmap(fn)(*batch_args)
    n = jax.tree.leaves(batch_args)[0].shape[0]
    for i in range(n):
        single = fn(*jax.tree.map(lambda a, i=i: a[i], batch_args))
        jax.tree.map(
            lambda b, s, i=i: np.testing.assert_allclose(
                np.asarray(b[i]), np.asarray(s), rtol=rtol, atol=atol
            ),
            batched,
            single,
        )


def central_difference(f: Callable[[float], float], x: float, h: float) -> float:
    """Central finite difference ``(f(x + h) - f(x - h)) / 2h`` in float64 numpy arithmetic."""
    return (float(f(x + h)) - float(f(x - h))) / (2.0 * h)


def assert_grad_matches_fd(f: Callable, x, *, h: float = 1e-6, rtol: float = 1e-6,
                           atol: float = 0.0) -> None:
    """``jax.grad`` of scalar ``f`` at array ``x`` equals central differences per component."""
    x = jnp.asarray(x)
    g = np.asarray(jax.grad(f)(x)).ravel()
    flat = np.asarray(x, dtype=np.float64).ravel()
    fd = np.empty_like(flat)
    for k in range(flat.size):
        def fk(t, k=k):
            z = flat.copy()
            z[k] = t
            return f(jnp.asarray(z.reshape(x.shape), dtype=x.dtype))
        fd[k] = central_difference(fk, flat[k], h)
    np.testing.assert_allclose(g, fd, rtol=rtol, atol=atol)


def assert_mc_mean(weights, truth: float, *, n_sigma: float = 3.0) -> float:
    """Monte Carlo mean of ``weights`` equals ``truth`` within ``n_sigma`` standard errors.

    Returns the pull. A constant weight (zero spread) must equal ``truth`` to 1e-12 relative.
    """
    w = np.asarray(weights, dtype=np.float64)
    assert np.all(np.isfinite(w)), f"{np.sum(~np.isfinite(w))} non-finite weights"
    mean = w.mean()
    err = w.std(ddof=1) / np.sqrt(w.size)
    if err == 0.0:
        assert abs(mean - truth) <= 1e-12 * abs(truth), (mean, truth)
        return 0.0
    pull = (mean - truth) / err
    assert abs(pull) < n_sigma, f"mean {mean:.8g} +- {err:.3g} vs {truth:.8g}: pull {pull:.2f}"
    return pull


def max_abs_difference(a, b) -> float:
    """The largest ``|a - b|`` over all leaves of two pytrees of the same structure (two sets
    of parameters, e.g. a trainer's average and its last parameters)."""
    return max(float(jnp.max(jnp.abs(x - y)))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def random_grid(key, dim: int, n_bins: int, dtype):
    """A non-uniform VEGAS grid ``[dim, n_bins + 1]``; its narrowest bin is at least
    ``0.2 / n_bins`` wide."""
    w = 0.2 + jax.random.uniform(key, (dim, n_bins), dtype=dtype)
    w = w / jnp.sum(w, axis=-1, keepdims=True)
    inner = jnp.cumsum(w, axis=-1)[:, :-1]
    zeros, ones = jnp.zeros((dim, 1), dtype), jnp.ones((dim, 1), dtype)
    return jnp.concatenate([zeros, inner, ones], axis=-1)
