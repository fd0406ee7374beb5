"""Stratified sampling of the flow's latent cube: points, estimate, pulls, variance, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnis import channels as ch
from jaxnis import estimators
from jaxnis.flows.flow import make_flow
from jaxnis.integrate import Integrator, survey_and_refine
from jaxnis.train import make_trainer, single_channel
from jaxnis.vegas import default_strata, equal_counts, stratified_points

# REFERENCES.md: camel with a = 0.2 in 2 dimensions.
CAMEL2 = 0.9816603121252301


def camel(x, theta, a=0.2):
    norm = (a * jnp.sqrt(jnp.pi)) ** x.shape[0]
    return 0.5 * (jnp.exp(-jnp.sum((x - 1 / 3) ** 2) / a**2)
                  + jnp.exp(-jnp.sum((x - 2 / 3) ** 2) / a**2)) / norm


FLOW = make_flow(2, n_bins=6, hidden=(8,))


def _trainer(strata, batch_size=128, **kw):
    return make_trainer(single_channel(camel, 2), FLOW, optax.adam(1e-2),
                        batch_size=batch_size, latent_strata=strata, **kw)


def test_stratified_points_fill_their_hypercubes():
    strata = (3, 4)
    counts = equal_counts(50, 12)
    assert counts.sum() == 50 and set(counts.tolist()) == {4, 5}
    y, cube = stratified_points(jax.random.key(0), counts, strata, 50)
    y, cube = np.asarray(y), np.asarray(cube)
    np.testing.assert_array_equal(np.bincount(cube, minlength=12), counts)
    # Row-major numbering: axis 0 has stride 4, axis 1 stride 1.
    np.testing.assert_array_equal(np.floor(y[:, 0] * 3).astype(int), cube // 4)
    np.testing.assert_array_equal(np.floor(y[:, 1] * 4).astype(int), cube % 4)


def test_event_weights_have_the_stratified_estimate_as_their_mean():
    w = jnp.asarray([1.0, 3.0, 2.0, 10.0, 20.0])
    strata = jnp.asarray([0, 0, 0, 1, 1])
    ev = estimators.event_weights(w, strata, 2)
    est = estimators.estimate_channels(w, strata, 2)
    np.testing.assert_allclose(float(jnp.mean(ev)), float(est.total.value), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ev), [5 / 3, 5.0, 10 / 3, 25.0, 50.0], rtol=1e-6)


def test_frozen_steps_are_stratified_and_training_steps_are_not():
    trainer = _trainer((8, 8))
    state = trainer.init(jax.random.key(0))
    step = jax.jit(trainer.step)
    _, info = step(jax.random.key(1), state, None, jnp.asarray(False))
    cells = np.asarray(info.stratum)
    np.testing.assert_array_equal(np.bincount(cells, minlength=64), equal_counts(128, 64))
    # The estimate is sum_h mean_h(weights) over the hypercubes, with its error.
    w = np.asarray(info.weights, np.float64)
    means = np.bincount(cells, w) / np.bincount(cells)
    np.testing.assert_allclose(means.sum(), float(info.value), rtol=1e-5)
    var = sum(np.var(w[cells == h], ddof=1) / np.sum(cells == h) for h in range(64))
    np.testing.assert_allclose(math.sqrt(var), float(info.error), rtol=1e-4)
    # The flow starts as the identity, so the latent points are the sampled points.
    _, info_train = step(jax.random.key(1), state, None, jnp.asarray(True))
    np.testing.assert_array_equal(np.asarray(info_train.stratum), 0)
    np.testing.assert_allclose(float(np.mean(info_train.weights)), float(info_train.value),
                               rtol=1e-5)


@pytest.mark.optimized  # 400 seeds in one program: running takes the time
def test_stratified_refine_errors_are_honest_over_400_seeds():
    """Pulls of survey + stratified refine runs, vmapped over seeds: mean within +-0.2 and
    standard deviation within [0.8, 1.2] (the per-hypercube errors are not underestimated).
    The Integrator's rule, two events per hypercube (23 x 22 at batch 1024), after four
    training steps. A low weight lowers a hypercube's value and its error together, so the
    pulls can lean low (mean -0.03 and width 1.04 here; after ten steps +0.03 and 1.01,
    -0.07 over another 400 seeds, -0.14 with 64 hypercubes at batch 128); 400 seeds
    measure the mean to +-0.05."""
    trainer = _trainer(default_strata(2, 1024, 0.0), batch_size=1024)
    run = jax.jit(jax.vmap(survey_and_refine(trainer, n_survey=4, n_refine=4), (0, None)))
    pulls = []
    for key in jax.random.split(jax.random.key(42), 4):
        combined, _ = run(jax.random.split(key, 100), None)
        pulls.append((np.asarray(combined.value) - CAMEL2) / np.asarray(combined.error))
    pulls = np.concatenate(pulls)
    assert abs(pulls.mean()) < 0.2, pulls.mean()
    assert 0.8 < pulls.std() < 1.2, pulls.std()


def test_stratification_reduces_the_error_of_a_smooth_integrand():
    """The same (untrained, identity) flow sampled plainly and with 23 x 22 latent cells:
    the error of the 2-d camel falls more than fivefold, and both estimates are right."""
    n = 1024
    errors = {}
    for strata in (None, default_strata(2, n, 0.0)):
        trainer = _trainer(strata, batch_size=n)
        state = trainer.init(jax.random.key(0))
        batch, w, _ = jax.jit(trainer.sample)(jax.random.key(3), state, None)
        est = trainer.estimate(w, batch.channel)[0].total
        assert abs(float(est.value) - CAMEL2) < 4 * float(est.error)
        errors[strata] = float(est.error)
    assert default_strata(2, n, 0.0) == (23, 22)
    ratio = errors[(23, 22)] / errors[None]
    assert ratio < 0.2, errors


def test_integrator_refine_reports_strata_and_event_weights():
    integrator = Integrator(camel, 2, batch_size=256, progress=False,
                            flow={"n_bins": 6, "hidden": (8,)})
    assert integrator.latent_strata == default_strata(2, 256, 0.0)
    result = integrator.integrate(0, n_survey=5, n_refine=3)
    refined = integrator.refine(jax.random.key(1), 2)
    assert refined.stratum.shape == refined.weights.shape == (2, 256)
    cells = math.prod(integrator.latent_strata)
    assert refined.stratum.max() == cells - 1
    for raw, stratum, value in zip(refined.weights, refined.stratum, refined.values,
                                   strict=True):
        ev = estimators.event_weights(jnp.asarray(raw), jnp.asarray(stratum), cells)
        np.testing.assert_allclose(float(jnp.mean(ev)), value, rtol=1e-5)
    assert abs(result.value - CAMEL2) < 4 * result.error
    _, _, w = integrator.sample(jax.random.key(2))
    assert abs(float(jnp.mean(w)) - CAMEL2) < 0.05
    assert Integrator(camel, 2, progress=False, latent_strata=False).latent_strata is None


def test_multichannel_integrator_sample_gives_event_weights():
    """Channels are strata with allocated counts: ``sample``'s weights fold them in, so their
    mean is the batch estimate even where the counts differ between channels."""
    def evaluate(channel, r, theta):
        del theta
        log_f = jnp.log(1.0 + r[0]) + jnp.where(channel == 0, 0.0, jnp.log(2.0))
        return ch.ChannelEval(log_f, jnp.ones(()), jnp.log(jnp.asarray([0.5, 0.5])),
                              jnp.zeros(1))

    mc = ch.MultiChannelIntegrand(dim=1, n_channels=2, n_features=1, evaluate=evaluate)
    integrator = Integrator(mc, batch_size=128, progress=False, learn_channel_weights=False,
                            flow={"n_bins": 4, "hidden": (8,)})
    assert integrator.latent_strata is None and integrator.channel_strata
    integrator.integrate(0, n_survey=5, n_refine=1)
    integrator.state = integrator.state._replace(counts=jnp.asarray([96, 32]))
    _, c, w = integrator.sample(jax.random.key(4))
    assert int(jnp.sum(c == 0)) == 96
    # sum_c alpha_c int f_c = 0.5 (1.5) + 0.5 (2 x 1.5) = 2.25
    assert abs(float(jnp.mean(w)) - 2.25) < 0.1


def two_channels(channel, r, theta):
    """Channel 0: 1 + r0 + r1^2, channel 1: twice that, prior weights 1/2 each: the total
    is 3/2 (1 + 1/2 + 1/3) = 2.75."""
    del theta
    log_f = jnp.log(1.0 + r[0] + r[1] ** 2) + jnp.where(channel == 0, 0.0, jnp.log(2.0))
    return ch.ChannelEval(log_f, jnp.ones(()), jnp.log(jnp.asarray([0.5, 0.5])), jnp.zeros(1))


TWO = ch.MultiChannelIntegrand(dim=2, n_channels=2, n_features=1, evaluate=two_channels)
FLOW2 = make_flow(2, n_bins=4, hidden=(8,), context_dim=2)


def _two_channel_trainer(channel_strata, batch_size=256):
    return make_trainer(TWO, FLOW2, optax.adam(1e-2), batch_size=batch_size,
                        channel_strata=channel_strata)


def test_channel_strata_lay_out_hypercubes_inside_each_channel():
    trainer = _two_channel_trainer(True)
    state = trainer.init(jax.random.key(0))._replace(counts=jnp.asarray([200, 56]))
    _, info = jax.jit(trainer.step)(jax.random.key(1), state, None, jnp.asarray(False))
    stratum, channel = np.asarray(info.stratum), np.asarray(info.channel)
    # m_c = floor((n_c / 2)^(1/2)): 10 x 10 cells for 200 events, 5 x 5 for 56.
    assert np.sum(channel == 0) == 200 and stratum.max() == 100 + 25 - 1
    n_s = np.bincount(stratum)
    assert n_s.min() >= 2 and np.all(n_s[:100] == 2)
    assert set(stratum[channel == 1]) == set(range(100, 125))
    w = np.asarray(info.weights, np.float64)
    np.testing.assert_allclose((np.bincount(stratum, w) / n_s).sum(), float(info.value),
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(info.channel_value).sum(), float(info.value),
                               rtol=1e-5)
    np.testing.assert_allclose(np.sum(np.asarray(info.channel_error) ** 2),
                               float(info.error) ** 2, rtol=1e-4)
    assert abs(float(info.value) - 2.75) < 5 * float(info.error)


def test_channel_strata_pulls_over_400_seeds_and_smaller_errors():
    """Survey + refine of the two-channel toy with hypercubes inside the channels: honest
    errors (pull mean within +-0.2, width within [0.8, 1.2]) and smaller than plain."""
    errors = {}
    for channel_strata in (False, True):
        trainer = _two_channel_trainer(channel_strata)
        run = jax.jit(jax.vmap(survey_and_refine(trainer, n_survey=5, n_refine=2), (0, None)))
        pulls, errs = [], []
        for key in jax.random.split(jax.random.key(42), 4):
            combined, _ = run(jax.random.split(key, 100), None)
            pulls.append((np.asarray(combined.value) - 2.75) / np.asarray(combined.error))
            errs.append(np.asarray(combined.error))
        pulls = np.concatenate(pulls)
        assert abs(pulls.mean()) < 0.2, (channel_strata, pulls.mean())
        assert 0.8 < pulls.std() < 1.2, (channel_strata, pulls.std())
        errors[channel_strata] = float(np.mean(np.concatenate(errs)))
    assert errors[True] < 0.7 * errors[False], errors


@pytest.mark.parametrize("bad, match", [
    ((4,), "2 integers"), ((4, 0), "2 integers"), ((12, 12), "at least twice"),
])
def test_bad_latent_strata(bad, match):
    with pytest.raises(ValueError, match=match):
        _trainer(bad)
    with pytest.raises(ValueError, match="channel_strata is for several channels"):
        _trainer(None, channel_strata=True)
    with pytest.raises(ValueError, match="single channel"):
        make_trainer(TWO, FLOW2, optax.adam(1e-2), batch_size=256, latent_strata=(4, 4))


def quarter_disk(x, theta):
    """Indicator of the quarter disk |x| < 0.6 (area 0.09 pi): a jump along a curve."""
    del theta
    return (jnp.sum(x * x) < 0.36).astype(x.dtype)


QUARTER_DISK = 0.09 * math.pi


def test_larger_refine_batches_hold_finer_strata_with_honest_errors():
    """Refine batches of 4096 through the second (sampling-only) program: 45 x 45
    hypercubes. Over 400 seeds of the untrained sampler (uniform until trained) the pulls
    of the quarter disk's area have mean within +-0.1 and width within [0.85, 1.15], and
    the error sits far below plain sampling's sqrt(p (1 - p) / N): only hypercubes on the
    arc vary."""
    integrator = Integrator(quarter_disk, 2, batch_size=256, refine_batch_size=4096,
                            progress=False, flow={"n_bins": 4, "hidden": (8,)})
    integrator.train(jax.random.key(0), 0)
    trainer, frozen = integrator._refiner(4096)
    assert trainer.n_strata == 45 * 45 == math.prod(default_strata(2, 4096, 0.0))
    infos = [frozen(k, integrator.state, None) for k in jax.random.split(jax.random.key(1), 400)]
    values = np.array([float(i.value) for i in infos])
    errors = np.array([float(i.error) for i in infos])
    pulls = (values - QUARTER_DISK) / errors
    assert abs(pulls.mean()) < 0.1, pulls.mean()
    assert 0.85 < pulls.std() < 1.15, pulls.std()
    plain = math.sqrt(QUARTER_DISK * (1 - QUARTER_DISK) / 4096)
    assert errors.mean() < 0.25 * plain, (errors.mean(), plain)
    # refine() goes through the same program: 4096 events per iteration, counted as such
    n_eval = integrator.n_eval
    refined = integrator.refine(jax.random.key(2), 2)
    assert refined.weights.shape == refined.stratum.shape == (2, 4096)
    assert integrator.n_eval == n_eval + 2 * 4096
    assert abs(float(refined.combined.value) - QUARTER_DISK) < 4 * float(refined.combined.error)
    with pytest.raises(ValueError, match="refine_batch_size"):
        Integrator(quarter_disk, 2, refine_batch_size=1)
    with pytest.raises(ValueError, match="batch_size"):
        integrator.refine(jax.random.key(3), 1, batch_size=0)
