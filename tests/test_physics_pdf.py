"""Les Houches toy PDF: formulas, flavour access, sum rules, finiteness."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import roots_legendre

from jaxnis.physics import pdf
from tests.conftest import tol


def _quadrature(fn, dtype, n=96, per_x=False):
    """``int_0^1 fn(x) dx`` (``fn(x) / x`` with ``per_x``) with ``x = t^10``:
    ``x^-0.1 dx = 10 t^8 dt`` and ``x^-0.2 dx = 10 t^7 dt`` are polynomials, so
    Gauss-Legendre in t converges fast. The Jacobian (``10 t^9``, or ``10 / t`` with
    ``per_x``) is taken in float64 so that x underflowing in float32 does no harm."""
    t, w = roots_legendre(n)
    t, w = 0.5 * (t + 1), 0.5 * w
    x = t**10
    jac = 10 / t if per_x else 10 * t**9
    vals = np.asarray(fn(jnp.asarray(x, dtype)), np.float64)
    return np.tensordot(w * jac, vals, axes=(0, 0))


def test_formulas_and_flavours(dtype):
    x = np.array([1e-4, 0.01, 0.3, 0.7])
    xf = np.asarray(pdf.toy_xfx(jnp.asarray(x, dtype)), np.float64)
    assert xf.shape == (4, 13)
    uv = 5.1072 * x**0.8 * (1 - x) ** 3
    dv = 3.06432 * x**0.8 * (1 - x) ** 4
    g = 1.7 * x**-0.1 * (1 - x) ** 5
    dbar = 0.1939875 * x**-0.1 * (1 - x) ** 6
    ubar = (1 - x) * dbar
    s = 0.2 * (ubar + dbar)
    want = {"u": uv + ubar, "d": dv + dbar, "ubar": ubar, "dbar": dbar, "s": s, "sbar": s,
            "g": g, "c": 0 * x, "cbar": 0 * x, "b": 0 * x, "bbar": 0 * x, "t": 0 * x}
    rtol = tol(dtype, 2e-6, 1e-13)
    for name, values in want.items():
        np.testing.assert_allclose(xf[:, pdf.flavour_index(name)], values, rtol=rtol)
        np.testing.assert_allclose(np.asarray(pdf.toy_xf(jnp.asarray(x, dtype), name)), values,
                                   rtol=rtol)
    assert pdf.flavour_index(21) == pdf.flavour_index(0) == pdf.flavour_index("g")
    assert pdf.flavour_index(-2) == pdf.flavour_index("ubar")
    assert pdf.NAMES[pdf.flavour_index(2)] == "u"
    uvv, dvv = pdf.toy_valence(jnp.asarray(x, dtype))
    np.testing.assert_allclose(np.asarray(uvv), uv, rtol=rtol)
    np.testing.assert_allclose(np.asarray(dvv), dv, rtol=rtol)
    q = pdf.toy_xfxq2(jnp.asarray(x, dtype), jnp.asarray(1e4, dtype))
    np.testing.assert_array_equal(np.asarray(q), np.asarray(xf, dtype=np.asarray(q).dtype))
    assert q.dtype == dtype


def test_unknown_flavour_raises():
    with pytest.raises(ValueError, match="'gluon'"):
        pdf.flavour_index("gluon")
    with pytest.raises(ValueError, match="7"):
        pdf.flavour_index(7)


def test_sum_rules(dtype):
    uv = _quadrature(lambda x: pdf.toy_valence(x)[0], dtype, per_x=True)
    dv = _quadrature(lambda x: pdf.toy_valence(x)[1], dtype, per_x=True)
    mom = _quadrature(lambda x: jnp.sum(pdf.toy_xfx(x), axis=-1), dtype)
    # float32: single-precision densities summed over 96 nodes, ~1e-6 relative.
    atol = tol(dtype, 5e-6, 1e-9)
    np.testing.assert_allclose(uv, 2.0, atol=atol)
    np.testing.assert_allclose(dv, 1.0, atol=atol)
    np.testing.assert_allclose(mom, 0.99999998, atol=atol)
    # the substitution makes the quadrature converge: doubling the nodes changes nothing
    np.testing.assert_allclose(
        _quadrature(lambda x: jnp.sum(pdf.toy_xfx(x), axis=-1), dtype, n=192), mom,
        atol=atol)


def test_finite_values_and_gradients_everywhere(dtype):
    x = jnp.asarray([-1.0, 0.0, 1e-30, 1e-8, 0.5, 1.0 - 1e-7, 1.0, 2.0], dtype)
    xf = pdf.toy_xfx(x)
    assert xf.dtype == dtype
    assert np.all(np.isfinite(np.asarray(xf)))
    assert np.all(np.asarray(xf[jnp.asarray([0, 1, 6, 7])]) == 0.0)
    grads = jax.jit(jax.vmap(jax.jacfwd(pdf.toy_xfx)))(x)
    assert np.all(np.isfinite(np.asarray(grads)))
    # analytic derivative of x g at x = 0.5
    x0 = 0.5
    want = 1.7 * (-0.1 * x0**-1.1 * (1 - x0) ** 5 - 5 * x0**-0.1 * (1 - x0) ** 4)
    got = jax.jit(jax.grad(lambda v: pdf.toy_xf(v, "g")))(jnp.asarray(x0, dtype))
    np.testing.assert_allclose(float(got), want, rtol=tol(dtype, 1e-5, 1e-12))
