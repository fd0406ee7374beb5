import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnis.cuts import apply_cuts, delta_r_min, eta_max, mass_window, pt_min
from jaxnis.phasespace.chain import DecayTree
from tests import checks

TREE = DecayTree(((0, 1), 2))
PHI3 = 125.98255637968553  # massless 3-body volume at 1000 GeV (REFERENCES.md)
N = 20_000


def _event(dtype):
    """Three massless particles with known pT, eta, phi."""
    rows = []
    for pt_, eta, phi in [(50.0, 0.0, 0.0), (30.0, 1.0, 0.5), (10.0, -3.0, 3.0)]:
        rows.append([pt_ * math.cosh(eta), pt_ * math.cos(phi), pt_ * math.sin(phi),
                     pt_ * math.sinh(eta)])
    return jnp.asarray(rows, dtype)


M01 = math.sqrt(2 * 50.0 * 30.0 * (math.cosh(1.0) - math.cos(0.5)))


@jax.jit
def _known_event_masks(p):
    """(mask, expected) pairs; jitted so the checks cost one compilation."""
    return [
        (pt_min(p, 9.0), True), (pt_min(p, 20.0), False), (pt_min(p, 20.0, indices=(0, 1)), True),
        (eta_max(p, 3.5), True), (eta_max(p, 2.5), False), (eta_max(p, 2.5, indices=[0, 1]), True),
        # Delta R: (0, 1) = sqrt(1 + 0.25) = 1.118; (0, 2) = sqrt(9 + 9); (1, 2) = sqrt(16 + 6.25)
        (delta_r_min(p, 1.1), True), (delta_r_min(p, 1.2), False),
        (delta_r_min(p, 1.2, pairs=[(0, 2), (1, 2)]), True),
        (mass_window(p, (0, 1), M01 - 0.01, M01 + 0.01), True),
        (mass_window(p, (0, 1), M01 + 0.01, jnp.inf), False),
        (pt_min(p, 9.0) & eta_max(p, 3.5) & ~mass_window(p, (0, 1), 0.0, 10.0), True),
        (delta_r_min(p[:1], 0.4), True),  # one particle: no pairs, always passes
    ]


def test_masks_on_a_known_event():
    dtype = jnp.float32  # dtype-independent logic: run once, in the 32-bit process
    for i, (mask, expected) in enumerate(_known_event_masks(_event(dtype))):
        assert mask.shape == () and mask.dtype == jnp.bool_, i
        assert bool(mask) == expected, i
    p = _event(dtype)
    batch = jnp.stack([p, p.at[0, 1:3].set(0.1)])
    np.testing.assert_array_equal(pt_min(batch, 20.0, indices=(0,)), [True, False])


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
def _tree_weights(r, sqrt_s, m_lo, m_hi, dr_cut, eta_cut):
    cond = {"sqrt_s": sqrt_s, "masses": jnp.zeros(3, r.dtype)}
    p, lw = jax.vmap(TREE.forward, (0, None))(r, cond)
    mask = (mass_window(p, (0, 1), m_lo, m_hi) & delta_r_min(p, dr_cut)
            & eta_max(p, eta_cut, indices=(0,)))
    return jnp.exp(apply_cuts(lw, mask)), mask


def test_cut_fractions_match_analytic(dtype):
    """Massless 3-body at 1000 GeV: s12 has density (s - s12), so a mass window [a, b] keeps a
    known fraction of Phi_3; every direction is isotropic, so |eta_0| < c keeps tanh(c)."""
    r = jax.random.uniform(jax.random.key(1), (N, 5), dtype=dtype)
    sqrt_s, m_lo, m_hi, zero, big = (jnp.asarray(v, dtype) for v in (1000.0, 200.0, 600.0,
                                                                      0.0, 1e3))
    s, a, b = 1000.0**2, 200.0**2, 600.0**2
    frac = ((s * b - b * b / 2) - (s * a - a * a / 2)) / (s * s / 2)
    w, _ = _tree_weights(r, sqrt_s, m_lo, m_hi, zero, big)  # Delta R >= 0, |eta| < 1e3: no cut
    checks.assert_mc_mean(w, PHI3 * frac)
    w, _ = _tree_weights(r, sqrt_s, zero, big, zero, jnp.asarray(1.2, dtype))
    checks.assert_mc_mean(w, PHI3 * math.tanh(1.2))
    # Changing cut values does not recompile (they are traced).
    assert _tree_weights._cache_size() == 1


def test_cut_events_have_zero_weight_and_gradient(dtype):
    r = jax.random.uniform(jax.random.key(2), (N, 5), dtype=dtype)
    cuts = [jnp.asarray(v, dtype) for v in (200.0, 600.0, 0.4, 2.0)]

    def loss(x, sqrt_s):
        return jnp.mean(_tree_weights(x, sqrt_s, *cuts)[0])

    sqrt_s = jnp.asarray(1000.0, dtype)
    grads = jax.grad(loss, argnums=(0, 1))(r, sqrt_s)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
    w, mask = _tree_weights(r, sqrt_s, *cuts)
    mask = np.asarray(mask)
    assert 0 < mask.sum() < N
    assert np.all(np.asarray(w)[~mask] == 0.0) and np.all(np.asarray(w)[mask] > 0.0)
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
