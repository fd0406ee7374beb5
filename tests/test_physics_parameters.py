"""Parameter pytree: defaults, derived electroweak quantities, validation, tracing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnis.physics import parameters as pp
from tests.checks import assert_grad_matches_fd
from tests.conftest import tol


def test_defaults_and_derived(dtype):
    params = pp.default_params(dtype)
    assert set(params) == set(pp.DEFAULTS)
    assert all(v.dtype == dtype and v.shape == () for v in params.values())
    d = pp.derived(params)
    assert all(v.dtype == dtype for v in d.values())
    np.testing.assert_allclose(float(d["M_W"]), 80.419002, rtol=tol(dtype, 1e-6, 1e-8))
    np.testing.assert_allclose(float(d["sw2"]), 0.2222465, rtol=tol(dtype, 1e-5, 3e-7))
    np.testing.assert_allclose(float(d["e"]) ** 2, 4 * np.pi / 132.507, rtol=1e-6)
    np.testing.assert_allclose(float(d["swcw"]) ** 2, float(d["sw2"] * d["cw2"]), rtol=1e-6)


def test_chiral_couplings_textbook(dtype):
    params = pp.default_params(dtype)
    d = pp.derived(params)
    sw2, swcw = float(d["sw2"]), float(d["swcw"])
    for name, f in pp.FERMIONS.items():
        c_l, c_r = pp.chiral_couplings(params, name, "Z")
        v, a = f.t3 - 2 * f.charge * sw2, f.t3
        # e / (2 sw cw) (v - a gamma5) = e (c_L P_L + c_R P_R)
        np.testing.assert_allclose(float(c_l), (v + a) / (2 * swcw), rtol=tol(dtype, 1e-5, 1e-12))
        np.testing.assert_allclose(float(c_r), (v - a) / (2 * swcw), rtol=tol(dtype, 1e-5, 1e-12),
                                   atol=1e-7)
        c_l, c_r = pp.chiral_couplings(params, name, "photon")
        assert float(c_l) == float(c_r) == pytest.approx(f.charge)
    # Default Z' couplings: the Z's at the default mixing angle (sequential-SM-like toy).
    for name in ("mu", "u", "d"):
        zl, zr = pp.chiral_couplings(params, name, "Z")
        pl, pr = pp.chiral_couplings(params, name, "Zp")
        np.testing.assert_allclose([float(pl), float(pr)], [float(zl), float(zr)], atol=2e-6)


@pytest.mark.parametrize("key", ["M_Z", "M_Zp", "Gamma_Z", "Gamma_Zp", "alpha", "G_F",
                                 "alpha_s"])
def test_negative_values_raise_naming_the_parameter(key):
    with pytest.raises(ValueError, match=key):
        pp.default_params(**{key: -1.0})


def test_other_validation_errors():
    with pytest.raises(ValueError, match="'m_top'"):
        pp.default_params(m_top=173.0)
    with pytest.raises(ValueError, match="M_Z = 50.0"):
        pp.default_params(M_Z=50.0)  # no real M_W in the (alpha, G_F, M_Z) scheme
    with pytest.raises(ValueError, match="'Gamma_Zp' is missing"):
        pp.validate_params({k: v for k, v in pp.DEFAULTS.items() if k != "Gamma_Zp"})
    with pytest.raises(ValueError, match="M_Zp = 0.0"):
        pp.validate_params({**pp.DEFAULTS, "M_Zp": 0.0})
    with pytest.raises(ValueError, match="Gamma_Z = nan"):
        pp.validate_params({**pp.DEFAULTS, "Gamma_Z": float("nan")})
    with pytest.raises(ValueError, match="'top'"):
        pp.fermion("top")
    with pytest.raises(ValueError, match="'W'"):
        pp.check_bosons(("Z", "W"))
    with pytest.raises(ValueError, match="repeats"):
        pp.check_bosons(("Z", "Z"))
    pp.default_params(Gamma_Z=0.0, alpha_s=0.0)  # zero widths and alpha_s are allowed


def test_validation_skips_traced_values_and_jit_does_not_recompile():
    traces = []

    @jax.jit
    def mw(params):
        traces.append(1)
        pp.validate_params(params)  # traced values are skipped, never raise
        return pp.derived(params)["M_W"]

    a = mw(pp.default_params())
    b = mw(pp.default_params(M_Z=91.0))
    assert len(traces) == 1
    assert float(b) < float(a)


@pytest.mark.x64
def test_derived_gradients_match_finite_differences():
    keys = ("alpha", "G_F", "M_Z")

    def sw2(v):
        params = {**pp.default_params(jnp.float64), **dict(zip(keys, v, strict=True))}
        return pp.derived(params)["sw2"]

    x0 = jnp.asarray([pp.DEFAULTS[k] for k in keys])
    # Differentiate in relative changes of each input, so one step suits G_F ~ 1e-5 and
    # M_Z ~ 91 alike.
    assert_grad_matches_fd(lambda v: sw2(v * x0), jnp.ones(3), h=1e-6, rtol=1e-7)


def test_propagator_and_coupling_matrix_shapes(dtype):
    params = pp.default_params(dtype)
    x = jnp.asarray([100.0, 8315.0, 1e6], dtype)
    re, im = pp.propagator(x, params, "Z")
    mz, gz = float(params["M_Z"]), float(params["Gamma_Z"])
    want = 1.0 / (np.asarray(x, np.float64) - mz**2 + 1j * mz * gz)
    np.testing.assert_allclose(np.asarray(re) + 1j * np.asarray(im), want,
                               rtol=tol(dtype, 1e-4, 1e-12))
    re, im = pp.coupling_matrix(x, params, "e", "u", ("photon", "Z", "Zp"))
    assert re.shape == im.shape == (3, 2, 2) and re.dtype == dtype
    re0, im0 = pp.propagator(jnp.zeros((), dtype), params, "photon")
    assert float(re0) == 0.0 and float(im0) == 0.0  # guarded 1/x at x = 0
