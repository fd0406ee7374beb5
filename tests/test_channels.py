import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnis import channels as ch


def test_channel_weights_start_at_prior_and_normalise(dtype):
    cw = ch.make_channel_weights(3, 5, hidden=(16, 16))
    params = cw.init(jax.random.key(0))
    prior = jnp.array([0.2, 0.3, 0.5], dtype=dtype)
    feats = jax.random.normal(jax.random.key(1), (5,), dtype=dtype)
    log_a = cw.log_alpha(params, feats, jnp.log(prior))
    assert log_a.dtype == dtype
    np.testing.assert_allclose(np.exp(log_a), prior, rtol=1e-6)
    # A perturbed network moves away from the prior but stays normalised.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree.unflatten(
        tree,
        [p + 0.3 * jax.random.normal(k, p.shape, p.dtype)
         for p, k in zip(leaves, keys, strict=True)],
    )
    log_a = cw.log_alpha(params, feats, jnp.log(prior))
    assert not np.allclose(np.exp(log_a), prior, rtol=1e-3)
    assert float(jax.nn.logsumexp(log_a)) == pytest.approx(0.0, abs=1e-6)


def test_inactive_channels_get_zero_weight_and_fallback_is_uniform():
    log_w = jnp.log(jnp.array([0.5, 0.25, 0.25]))
    out = ch.normalise_log_weights(log_w, active=jnp.array([True, False, True]))
    np.testing.assert_allclose(np.exp(out), [2 / 3, 0.0, 1 / 3], rtol=1e-6)
    # Every active prior zero: uniform over the active channels, no NaN.
    out = ch.normalise_log_weights(jnp.full(3, -jnp.inf), active=jnp.array([True, True, False]))
    np.testing.assert_allclose(np.exp(out), [0.5, 0.5, 0.0])
    g = jax.grad(lambda w: ch.normalise_log_weights(w)[0])(jnp.full(3, -jnp.inf))
    assert np.all(np.isfinite(g))


def test_allocation_is_proportional_exact_and_floored():
    counts = ch.allocate(jnp.array([1.0, 3.0, 0.0, 6.0]), 1000, min_per_channel=10)
    assert int(counts.sum()) == 1000
    c = np.asarray(counts)
    assert c[2] == 10  # zero sigma still gets the floor
    # The spare 960 samples are split 1 : 3 : 0 : 6.
    np.testing.assert_allclose(c - 10, [96, 288, 0, 576], atol=1)
    counts = ch.allocate(jnp.array([1.0, 1.0, 1.0]), 10, min_per_channel=2,
                         active=jnp.array([True, False, True]))
    assert np.asarray(counts).tolist() == [5, 0, 5]


def test_allocation_rejects_impossible_floor():
    with pytest.raises(ValueError, match="n_total=5"):
        ch.allocate(jnp.ones(3), 5, min_per_channel=2)


def test_channel_ids_follow_counts():
    ids = ch.channel_ids(jnp.array([2, 0, 3]), 5)
    assert np.asarray(ids).tolist() == [0, 0, 2, 2, 2]


def test_drop_negligible_channels_keeps_the_largest():
    active = jnp.ones(3, dtype=bool)
    new = ch.channels_to_drop(jnp.array([10.0, 1e-4, 5.0]), jnp.array([0.1, 1e-5, 0.1]),
                              active, threshold=1e-3)
    assert np.asarray(new).tolist() == [True, False, True]
    # A small channel with a large error is kept: it could still matter.
    new = ch.channels_to_drop(jnp.array([10.0, 1e-4, 5.0]), jnp.array([0.1, 1.0, 0.1]),
                              active, threshold=1e-3)
    assert np.asarray(new).tolist() == [True, True, True]
    new = ch.channels_to_drop(jnp.zeros(3), jnp.zeros(3), active, threshold=0.5)
    assert int(new.sum()) == 3  # no information yet: nothing dropped


@pytest.mark.parametrize(
    "bad", [dict(n_channels=0, n_features=3), dict(n_channels=2, n_features=0)]
)
def test_bad_configuration(bad):
    with pytest.raises(ValueError, match="must be >= 1"):
        ch.make_channel_weights(**bad)
