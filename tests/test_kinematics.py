import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnis import kinematics as kin


def _p(e, px, py, pz, dtype=jnp.float32):
    return jnp.array([e, px, py, pz], dtype=dtype)


def test_minkowski_and_mass():
    p = _p(5.0, 1.0, 2.0, 2.0)
    assert kin.mass_squared(p) == pytest.approx(25.0 - 9.0)
    assert kin.mass(p) == pytest.approx(4.0)
    assert kin.invariant_mass(p, _p(5.0, -1.0, -2.0, -2.0)) == pytest.approx(10.0)


def test_transverse_and_angles():
    p = _p(10.0, 3.0, 4.0, 5.0)
    assert kin.pt(p) == pytest.approx(5.0)
    assert kin.azimuth(p) == pytest.approx(np.arctan2(4.0, 3.0))
    assert kin.rapidity(p) == pytest.approx(0.5 * np.log(15.0 / 5.0), rel=1e-6)
    assert kin.pseudorapidity(p) == pytest.approx(np.arctanh(5.0 / np.sqrt(50.0)), rel=1e-6)


def test_delta_r_wraps_phi():
    a = _p(1.0, np.cos(3.0), np.sin(3.0), 0.0)
    b = _p(1.0, np.cos(-3.0), np.sin(-3.0), 0.0)
    assert kin.delta_phi(a, b) == pytest.approx(2 * np.pi - 6.0, abs=1e-6)
    assert kin.delta_r(a, b) == pytest.approx(2 * np.pi - 6.0, abs=1e-6)


def test_boost_round_trip_and_invariance():
    key1, key2 = jax.random.split(jax.random.key(0))
    p = jax.random.normal(key1, (16, 4)) * jnp.array([0, 1, 1, 1.0]) + jnp.array([5.0, 0, 0, 0])
    q = jnp.array([10.0, 1.0, -3.0, 4.0])
    lab = kin.boost(p, q)
    np.testing.assert_allclose(kin.boost_to_rest_frame(lab, q), p, atol=2e-5)
    np.testing.assert_allclose(kin.mass_squared(lab), kin.mass_squared(p), rtol=1e-4, atol=1e-4)
    # q's own rest-frame momentum (M, 0, 0, 0) boosts back to q.
    rest = jnp.array([kin.mass(q), 0.0, 0.0, 0.0])
    np.testing.assert_allclose(kin.boost(rest, q), q, rtol=1e-6)


def test_boost_z_matches_general_boost():
    p = _p(7.0, 1.0, 2.0, 3.0)
    y = 0.7
    q = jnp.array([np.cosh(y), 0.0, 0.0, np.sinh(y)])  # unit mass moving with rapidity y
    np.testing.assert_allclose(kin.boost_z(p, y), kin.boost(p, q), rtol=1e-5)


def test_gradients_finite_at_degenerate_points():
    beam = _p(1.0, 0.0, 0.0, 1.0)  # massless along the beam: pt = 0, eta infinite
    for fn in (kin.pt, kin.mass, kin.rapidity, kin.pseudorapidity, kin.azimuth):
        g = jax.grad(fn)(beam)
        assert np.all(np.isfinite(g)), fn.__name__
