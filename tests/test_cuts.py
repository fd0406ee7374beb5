import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnis.cuts import apply_cuts, delta_r_min, eta_max, mass_window, pt_min
from jaxnis.phasespace.chain import DecayTree
from jaxnis.phasespace.decays import TwoBodyDecay
from tests import checks

DECAY = TwoBodyDecay()
TREE = DecayTree(((0, 1), 2))
N = 20_000


def _event(dtype):
    """Three massless particles with known pT, eta, phi."""
    rows = []
    for pt_, eta, phi in [(50.0, 0.0, 0.0), (30.0, 1.0, 0.5), (10.0, -3.0, 3.0)]:
        rows.append([pt_ * math.cosh(eta), pt_ * math.cos(phi), pt_ * math.sin(phi),
                     pt_ * math.sinh(eta)])
    return jnp.asarray(rows, dtype)


def test_masks_on_a_known_event(dtype):
    p = _event(dtype)
    assert bool(pt_min(p, 9.0)) and not bool(pt_min(p, 20.0))
    assert bool(pt_min(p, 20.0, indices=(0, 1)))
    assert bool(eta_max(p, 3.5)) and not bool(eta_max(p, 2.5))
    assert bool(eta_max(p, 2.5, indices=[0, 1]))
    # Delta R: (0, 1) = sqrt(1 + 0.25) = 1.118; (0, 2) = sqrt(9 + 9); (1, 2) = sqrt(16 + 6.25)
    assert bool(delta_r_min(p, 1.1)) and not bool(delta_r_min(p, 1.2))
    assert bool(delta_r_min(p, 1.2, pairs=[(0, 2), (1, 2)]))
    m01 = math.sqrt(2 * 50.0 * 30.0 * (math.cosh(1.0) - math.cos(0.5)))
    assert bool(mass_window(p, (0, 1), m01 - 0.01, m01 + 0.01))
    assert not bool(mass_window(p, (0, 1), m01 + 0.01, np.inf))
    combined = pt_min(p, 9.0) & eta_max(p, 3.5) & ~mass_window(p, (0, 1), 0.0, 10.0)
    assert combined.dtype == jnp.bool_ and bool(combined)
    batch = jnp.stack([p, p.at[0, 1:3].set(0.1)])
    np.testing.assert_array_equal(pt_min(batch, 20.0, indices=(0,)), [True, False])
    assert delta_r_min(p[:1], 0.4).shape == ()  # one particle: no pairs, always passes


def test_apply_cuts_gives_zero_weight_never_nan(dtype):
    lw = jnp.asarray([0.5, -1.0, 2.0, -jnp.inf], dtype)
    mask = jnp.asarray([True, False, True, False])
    out = apply_cuts(lw, mask)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, jnp.asarray([0.5, -np.inf, 2.0, -np.inf], dtype))
    np.testing.assert_array_equal(np.exp(np.asarray(out))[~np.asarray(mask)], 0.0)
    g = jax.grad(lambda x: jnp.sum(jnp.exp(apply_cuts(x, mask))))(lw)
    np.testing.assert_allclose(g, [math.exp(0.5), 0.0, math.exp(2.0), 0.0], rtol=1e-6)


@jax.jit
def _decay_cut_weights(r, sqrt_s, eta_cut, pt_cut):
    cond = {"sqrt_s": sqrt_s, "masses": jnp.zeros(2, r.dtype)}
    p, lw = jax.vmap(DECAY.forward, (0, None))(r, cond)
    eta_w = jnp.exp(apply_cuts(lw, eta_max(p, eta_cut, indices=(0,))))
    pt_w = jnp.exp(apply_cuts(lw, pt_min(p, pt_cut)))
    return eta_w, pt_w


def test_cut_fractions_match_analytic(dtype):
    """Massless 2-body: |eta_0| < a keeps tanh(a) of Phi_2; pT > c keeps sqrt(1 - 4c^2/s)."""
    r = jax.random.uniform(jax.random.key(0), (N, 2), dtype=dtype)
    sqrt_s = jnp.asarray(1000.0, dtype)
    eta_w, pt_w = _decay_cut_weights(r, sqrt_s, jnp.asarray(1.2, dtype), jnp.asarray(300.0, dtype))
    phi2 = 1.0 / (8.0 * math.pi)
    checks.assert_mc_mean(eta_w, phi2 * math.tanh(1.2))
    checks.assert_mc_mean(pt_w, phi2 * math.sqrt(1.0 - 4 * 300.0**2 / 1000.0**2))
    # Changing the cut values does not recompile (they are traced).
    before = _decay_cut_weights._cache_size()
    _decay_cut_weights(r, sqrt_s, jnp.asarray(2.0, dtype), jnp.asarray(100.0, dtype))
    assert _decay_cut_weights._cache_size() == before


@jax.jit
def _tree_weights(r, sqrt_s, m_lo, m_hi, dr_cut):
    cond = {"sqrt_s": sqrt_s, "masses": jnp.zeros(3, r.dtype)}
    p, lw = jax.vmap(TREE.forward, (0, None))(r, cond)
    mask = mass_window(p, (0, 1), m_lo, m_hi) & delta_r_min(p, dr_cut)
    return jnp.exp(apply_cuts(lw, mask)), mask


def test_mass_window_fraction_and_finite_gradients(dtype):
    """Massless 3-body: s12 has density (s - s12), so a window [a, b] keeps a known fraction."""
    r = jax.random.uniform(jax.random.key(1), (N, 5), dtype=dtype)
    args = [jnp.asarray(v, dtype) for v in (1000.0, 200.0, 600.0)]
    s, a, b = 1000.0**2, 200.0**2, 600.0**2
    frac = ((s * b - b * b / 2) - (s * a - a * a / 2)) / (s * s / 2)
    w, _ = _tree_weights(r, *args, jnp.asarray(0.0, dtype))  # Delta R >= 0: no cut
    checks.assert_mc_mean(w, 125.98255637968553 * frac)

    def loss(x, sqrt_s):
        return jnp.mean(_tree_weights(x, sqrt_s, *args[1:], jnp.asarray(0.4, dtype))[0])

    grads = jax.grad(loss, argnums=(0, 1))(r, args[0])
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
    # Cut events contribute exactly zero gradient.
    _, mask = _tree_weights(r, *args, jnp.asarray(0.4, dtype))
    mask = np.asarray(mask)
    assert 0 < mask.sum() < N
    assert np.all(np.asarray(grads[0])[~mask] == 0.0)


def test_static_errors():
    p = jnp.zeros((3, 4))
    with pytest.raises(ValueError, match=r"\[0, 3\] out of range for 3"):
        pt_min(p, 1.0, indices=[0, 3])
    with pytest.raises(ValueError, match="non-empty"):
        eta_max(p, 1.0, indices=[])
    with pytest.raises(ValueError, match="itself"):
        delta_r_min(p, 0.4, pairs=[(1, 1)])
    with pytest.raises(ValueError, match=r"\(i, j\)"):
        delta_r_min(p, 0.4, pairs=[(0, 1, 2)])
    with pytest.raises(ValueError, match=r"\[\.\.\., n, 4\]"):
        mass_window(jnp.zeros((3, 3)), (0, 1), 0.0, 1.0)
