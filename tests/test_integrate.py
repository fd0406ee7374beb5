"""The front door and the honesty of its errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnis import estimators
from jaxnis.flows.flow import make_flow
from jaxnis.integrate import (
    Integrator,
    average_decay,
    default_options,
    integrate,
    survey_and_refine,
)
from jaxnis.train import make_trainer, single_channel
from tests.checks import max_abs_difference

# REFERENCES.md: camel with a = 0.2, integral [1/2 (erf(2/(3a)) + erf(1/(3a)))]^d.
CAMEL_02 = {2: 0.9816603121252301, 4: 0.9636569684018041}


def camel(x, theta, a=0.2):
    norm = (a * jnp.sqrt(jnp.pi)) ** x.shape[0]
    return 0.5 * (jnp.exp(-jnp.sum((x - 1 / 3) ** 2) / a**2)
                  + jnp.exp(-jnp.sum((x - 2 / 3) ** 2) / a**2)) / norm


def test_pulls_over_400_seeds_are_standard_normal():
    """Whole survey + refine runs vmapped over 4 x 100 seeds: the quoted errors are honest.
    400 seeds measure the mean pull to +-0.05 (over 100 its noise, +-0.1, is half the
    tolerance: one set of 100 here gives +0.21, the four below +0.03, -0.09, +0.03, -0.03)."""
    flow = make_flow(2, n_bins=6, hidden=(8,))
    trainer = make_trainer(single_channel(camel, 2), flow, optax.adam(1e-2), batch_size=128)
    run = jax.jit(jax.vmap(survey_and_refine(trainer, n_survey=15, n_refine=4), (0, None)))
    pulls = []
    for key in jax.random.split(jax.random.key(42), 4):
        combined, _ = run(jax.random.split(key, 100), None)
        pulls.append((np.asarray(combined.value) - CAMEL_02[2]) / np.asarray(combined.error))
    pulls = np.concatenate(pulls)
    assert abs(pulls.mean()) < 0.2, pulls.mean()
    assert 0.8 < pulls.std() < 1.2, pulls.std()


@pytest.mark.parametrize("dim", [2, 4])
def test_camel_within_three_sigma(dim):
    """d = 4 from the plain flow, d = 2 from per-channel VEGAS pretraining (its evaluations
    are counted)."""
    pretrain = {"n_iter": 3, "n_per_iter": 1024} if dim == 2 else None
    result = integrate(camel, dim, key=dim, n_survey=60, n_refine=5, batch_size=512,
                       progress=False, flow={"n_bins": 8, "hidden": (16, 16)},
                       vegas_pretrain=pretrain)
    pull = (result.value - CAMEL_02[dim]) / result.error
    assert abs(pull) < 3, (result.value, result.error)
    n_vegas = 3 * 1024 if pretrain else 0
    assert result.n_eval == (60 + 5) * 512 + n_vegas and result.n_eval_refine == 5 * 512
    assert 0 < result.unweighting_efficiency <= 1
    assert result.rel_error == pytest.approx(result.error / result.value)
    assert result.history["loss"].shape == (60,)
    assert result.n_nonfinite == 0 and result.message == ""


def test_zero_integrand_gives_a_clear_message_not_nan():
    integrator = Integrator(lambda x, theta: 0.0 * x[0], 2, batch_size=64, progress=False,
                            flow={"n_bins": 4, "hidden": (8,)})
    with pytest.warns(RuntimeWarning, match="integrand was zero"):
        result = integrator.integrate(0, n_survey=3, n_refine=2)
    assert result.value == 0.0 and result.error == 0.0
    assert result.rel_error == np.inf and "zero" in str(result)
    assert np.all(np.isfinite(result.history["loss"]))


def test_progress_line_and_summary(capsys):
    integrator = Integrator(camel, 2, batch_size=64, progress=True,
                            flow={"n_bins": 4, "hidden": (8,)})
    result = integrator.integrate(1, n_survey=3, n_refine=2)
    err = capsys.readouterr().err
    assert "survey" in err and "refine" in err and "3/3" in err
    assert "integral" in str(result) and "chi2/dof" in str(result)


def test_every_entry_point_takes_an_integer_seed_like_integrate():
    """``train``, ``refine``, ``sample`` and ``unweighted_events`` accept a seed as
    ``integrate`` does (it was an opaque PRNG error), and a seed is ``jax.random.key(seed)``."""
    integrator = Integrator(camel, 2, batch_size=64, progress=False,
                            flow={"n_bins": 4, "hidden": (8,)})
    by_seed = integrator.train(3, 2)
    state = integrator.state
    by_key = integrator.train(jax.random.key(3), 2)
    np.testing.assert_array_equal(by_seed["loss"], by_key["loss"])
    assert integrator.state is not state
    np.testing.assert_array_equal(integrator.refine(4, 1).values,
                                  integrator.refine(jax.random.key(4), 1).values)
    np.testing.assert_array_equal(integrator.sample(np.int64(5))[2],
                                  integrator.sample(jax.random.key(5))[2])
    np.testing.assert_array_equal(integrator.unweighted_events(6)[3],
                                  integrator.unweighted_events(jax.random.key(6))[3])


def test_unweighted_events_have_fixed_shape_and_the_expected_rate():
    integrator = Integrator(camel, 2, batch_size=256, progress=False,
                            flow={"n_bins": 6, "hidden": (16,)})
    result = integrator.integrate(3, n_survey=30, n_refine=2)
    r, c, w, accepted = integrator.unweighted_events(jax.random.key(5), n_batches=4)
    assert r.shape == (1024, 2) and w.shape == accepted.shape == (1024,)
    assert 0 < result.unweighting_efficiency <= 1
    # The accept rate is the mean acceptance probability min(|w| / w_max, 1) of these events
    # (the same key gives the same weighted sample), up to binomial noise.
    _, _, w_all = integrator.sample(jax.random.split(jax.random.key(5))[0], n_batches=4)
    w_max = estimators.max_weight_xs_fraction(w_all, 1e-3)
    p = np.minimum(np.abs(np.asarray(w_all)) / float(w_max), 1.0)
    rate = float(jnp.mean(accepted))
    assert abs(rate - p.mean()) < 5 * np.sqrt(np.sum(p * (1 - p))) / 1024
    np.testing.assert_allclose(np.asarray(w)[np.asarray(accepted)],
                               np.maximum(np.abs(np.asarray(w_all)) / float(w_max), 1.0)[
                                   np.asarray(accepted)], rtol=1e-6)


def test_low_dimensional_defaults_and_their_overrides():
    """d <= 2 gets a deeper flow, a larger learning rate, more buffered updates and no KL
    phase; given options win one by one, flow options key by key."""
    low = Integrator(camel, 2, progress=False)
    assert (len(low.flow.masks), low.flow.transform.n_bins, low.flow.hidden) == (8, 16, (32, 32))
    assert (low.learning_rate, low.kl_fraction) == (1e-2, 0.0)
    assert low._trainer_kwargs["buffered_steps"] == 7
    high = Integrator(camel, 4, progress=False)
    assert (len(high.flow.masks), high.flow.transform.n_bins) == (4, 10)
    assert (high.learning_rate, high.kl_fraction, high._trainer_kwargs["buffered_steps"]) == (
        3e-3, 0.75, 3)
    mine = Integrator(camel, 2, progress=False, learning_rate=1e-3, kl_fraction=0.5,
                      buffered_steps=0, flow={"n_bins": 4})
    assert (len(mine.flow.masks), mine.flow.transform.n_bins) == (8, 4)
    assert (mine.learning_rate, mine.kl_fraction, mine._trainer_kwargs["buffered_steps"]) == (
        1e-3, 0.5, 0)
    assert default_options(2, n_channels=3)["kl_fraction"] == 0.0
    assert default_options(5, n_channels=3)["kl_fraction"] == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="dim is required"):
        Integrator(camel)
    with pytest.raises(ValueError, match="n_refine must be >= 1"):
        Integrator(camel, 2, progress=False).integrate(0, n_refine=0)
    with pytest.raises(ValueError, match="unknown vegas_pretrain options"):
        Integrator(camel, 2, vegas_pretrain={"n_iters": 3})
    with pytest.raises(ValueError, match="kl_fraction must be in"):
        Integrator(camel, 4, kl_fraction=1.5)
    with pytest.raises(ValueError, match="average_fraction must be in"):
        Integrator(camel, 4, average_fraction=-0.1)
    with pytest.raises(ValueError, match="kl_temper must be in"):
        Integrator(camel, 4, kl_temper=0.0)
    with pytest.raises(RuntimeError, match="before refine"):
        Integrator(camel, 2, progress=False).refine(jax.random.key(0), 1)
    with pytest.raises(TypeError, match=r"callable as f\(x, theta\) or f\(x\)"):
        Integrator(lambda x, theta, extra: x[0], 2)
    with pytest.raises(ValueError, match=r"one number per point x of shape \(2,\); it "
                                         r"returned shape \(1,\)"):
        Integrator(lambda x, theta: jnp.sum(x, keepdims=True), 2, batch_size=16,
                   progress=False, flow={"n_bins": 4, "hidden": (8,)}).train(0, 1)
    with pytest.raises(ValueError, match="must be real; it returned complex"):
        Integrator(lambda x: jnp.exp(1j * x[0]), 2, batch_size=16, progress=False,
                   flow={"n_bins": 4, "hidden": (8,)}).train(0, 1)
    with pytest.raises(ValueError, match=r"integer number of steps >= 0, got -1"):
        Integrator(camel, 2, progress=False).integrate(0, n_survey=-1)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 2, got 1"):
        Integrator(camel, 2, batch_size=1)
    # trainer_options are checked when the Integrator is made, not at the first train.
    with pytest.raises(ValueError, match=r"unknown trainer_options \['varaince_baseline'\]"):
        Integrator(camel, 2, trainer_options={"varaince_baseline": None})
    with pytest.raises(ValueError, match="baseline must be one of"):
        Integrator(camel, 2, trainer_options={"variance_baseline": "suport"})


def test_the_refine_sampler_averages_the_last_fraction_of_the_survey():
    """``average_fraction`` sets the time constant of the parameters' average as a fraction
    of the survey (25 of 250 steps: decay 0.96 per step); off, the average is the last
    parameters and the refine draws from those."""
    assert average_decay(0.1, 250) == pytest.approx(0.96)
    assert average_decay(0.05, 20) == average_decay(0.0, 250) == 0.0
    options = dict(batch_size=64, progress=False, flow={"n_bins": 4, "hidden": (8,)})
    states = {}
    for fraction in (0.0, 0.25):
        integrator = Integrator(camel, 2, average_fraction=fraction, **options)
        integrator.train(0, 12)
        states[fraction] = integrator.state
    gap = [max_abs_difference(s.average, s.params) for s in states.values()]
    assert gap[0] == 0.0 and gap[1] > 1e-3, gap
    assert Integrator(camel, 2, progress=False).average_fraction == 0.05


def test_an_integrand_without_theta_is_the_same_integrand():
    """``f(x)`` is ``f(x, theta)`` with theta ignored: the same numbers, seed for seed."""
    options = dict(batch_size=64, progress=False, flow={"n_bins": 4, "hidden": (8,)})
    with_theta = Integrator(camel, 2, **options).integrate(0, n_survey=3, n_refine=2)
    without = Integrator(lambda x: camel(x, None), 2, **options).integrate(
        0, n_survey=3, n_refine=2)
    assert without.value == with_theta.value and without.error == with_theta.error
    assert np.isclose(without.value, CAMEL_02[2], rtol=0, atol=5 * without.error)


def test_survey_and_refine_share_one_program_and_the_spline_slopes_learn():
    integrator = Integrator(camel, 2, batch_size=64, progress=False, steps_per_call=4,
                            flow={"n_bins": 4, "hidden": (8,)})
    result = integrator.integrate(2, n_survey=6, n_refine=3)  # chunks of 4: 4 + 2, then 3
    assert result.history["loss"].shape == (6,) and result.history["refine_value"].shape == (3,)
    _, init, chunk, _ = integrator._active
    assert chunk._cache_size() == 1 and init._cache_size() == 1
    # The knot slopes are trained too: their raw outputs start at exactly 0 (the identity),
    # where the slope map has a non-zero derivative, and move.
    out = integrator.state.params["flow"]["layers"]["params"]["output"]
    n_par = integrator.flow.transform.n_params
    slopes = np.asarray(out["bias"]).reshape(out["bias"].shape[0], -1, n_par)[..., 2 * 4:]
    assert np.max(np.abs(slopes)) > 1e-3
