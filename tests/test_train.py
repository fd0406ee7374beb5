"""Training kernels: tracing, variance reduction, warm-up, buffering, NaN handling, channels."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnis import channels as ch
from jaxnis.flows.flow import make_flow
from jaxnis.train import Sampler, kl_exponent, make_trainer, single_channel
from tests.checks import max_abs_difference

WIDTH = 0.1


def camel(x, theta):
    """Two Gaussians of width ``theta["a"]`` on the diagonal (integral ~1 for a = 0.1), NaN
    for ``x[0] < theta["nan_below"]`` (to test the handling of broken integrands)."""
    a = theta["a"]
    norm = (a * jnp.sqrt(jnp.pi)) ** x.shape[0]
    value = 0.5 * (jnp.exp(-jnp.sum((x - 1 / 3) ** 2) / a**2)
                   + jnp.exp(-jnp.sum((x - 2 / 3) ** 2) / a**2)) / norm
    return jnp.where(x[0] < theta["nan_below"], jnp.nan, value)


THETA = {"a": jnp.asarray(WIDTH), "nan_below": jnp.asarray(-1.0)}
FLOW = make_flow(2, n_bins=8, hidden=(32, 32))  # the Integrator's default width
BATCH = 256


def _optimizer():
    return optax.inject_hyperparams(optax.adam)(learning_rate=5e-3)


# Two compiled kernels shared by the single-channel tests: online and buffered.
ONLINE = make_trainer(single_channel(camel, 2), FLOW, _optimizer(), batch_size=BATCH)
BUFFERED = make_trainer(single_channel(camel, 2), FLOW, _optimizer(), batch_size=BATCH,
                        buffer_capacity=4 * BATCH, buffered_steps=2)
STEPS = {id(ONLINE): jax.jit(ONLINE.step), id(BUFFERED): jax.jit(BUFFERED.step)}


def _run(trainer, n_steps, seed=0, theta=THETA, warmup=False):
    state = trainer.init(jax.random.key(seed))
    state = state._replace(use_flow=jnp.asarray(not warmup))
    step = STEPS.get(id(trainer)) or jax.jit(trainer.step)
    infos = []
    for k in jax.random.split(jax.random.key(seed + 1), n_steps):
        state, info = step(k, state, theta)
        infos.append(info)
    return state, infos


def test_step_traces_once_for_new_keys_rates_parameters_and_phases():
    traces = []

    def counted(x, theta):
        traces.append(1)
        return camel(x, theta)

    trainer = make_trainer(single_channel(counted, 2), FLOW, _optimizer(), batch_size=64,
                           buffer_capacity=128, buffered_steps=1, uniform_warmup=True)
    state = trainer.init(jax.random.key(0))
    step = jax.jit(trainer.step)
    for i, width in enumerate([0.1, 0.2, 0.3]):
        state.opt_state.hyperparams["learning_rate"] = jnp.asarray(10.0 ** -(i + 2))
        state = state._replace(use_flow=jnp.asarray(i == 2))
        theta = {"a": jnp.asarray(width), "nan_below": jnp.asarray(-1.0)}
        state, _ = step(jax.random.key(i), state, theta)
    assert step._cache_size() == 1
    assert len(traces) == 1


def test_training_reduces_variance_at_least_tenfold():
    # Measured: about 14x after 120 steps of 256 events (uniform variance ~6.6).
    _, infos = _run(ONLINE, 120)
    uniform = np.mean([float(i.uniform_loss) for i in infos[:5]])
    trained = np.mean([float(i.loss) for i in infos[-10:]])
    assert uniform / trained > 10, (uniform, trained)
    # Every batch estimate stays consistent with the true integral (0.99999... for a = 0.1).
    values = np.array([float(i.value) for i in infos[-10:]])
    errors = np.array([float(i.error) for i in infos[-10:]])
    assert np.all(np.abs(values - 0.9999999) < 5 * errors)


def test_uniform_warmup_switches_to_the_flow():
    _, infos = _run(ONLINE, 40, warmup=True)
    flags = [bool(i.use_flow) for i in infos]
    assert not flags[0] and flags[-1]
    switch = flags.index(True)
    # At the switch the flow's loss had beaten uniform sampling's on the same batch.
    assert float(infos[switch - 1].loss) < float(infos[switch - 1].uniform_loss)


def test_nonfinite_values_are_counted_and_never_reach_the_gradient():
    theta = dict(THETA, nan_below=jnp.asarray(0.1))
    state, infos = _run(ONLINE, 5, theta=theta)
    assert all(int(i.n_nonfinite) > 0 for i in infos)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state.params))
    assert all(np.isfinite(float(i.value)) for i in infos)


def test_updates_with_a_nonfinite_gradient_are_skipped_and_counted():
    """A sampler whose log-density gradient is NaN for half the events (a stand-in for a
    flow that breaks): every update is skipped and counted, the parameters stay exactly the
    initial ones, the estimates stay finite; the healthy flow skips none."""
    from jaxnis.train import Sampler

    def broken_log_q(params, r, context):
        u, log_q = FLOW.inverse_and_log_det(params["flow"], r, context)
        return u, log_q + 0.0 * jnp.sqrt(params["edge"] - r[0])  # NaN where r[0] > 0.5

    sampler = Sampler(
        init=lambda key: {"flow": FLOW.init(key), "edge": jnp.asarray(0.5)},
        forward_and_log_det=lambda params, u, context: FLOW.forward_and_log_det(
            params["flow"], u, context),
        inverse_and_log_det=broken_log_q)
    trainer = make_trainer(single_channel(camel, 2), sampler, _optimizer(), batch_size=BATCH,
                           buffer_capacity=2 * BATCH, buffered_steps=1)
    state0 = trainer.init(jax.random.key(0))
    state, info = jax.jit(trainer.step)(jax.random.key(1), state0, THETA)
    state, info2 = jax.jit(trainer.step)(jax.random.key(2), state, THETA)
    assert int(info.n_skipped) == 2 and int(info2.n_skipped) == 2  # 1 + buffered_steps
    jax.tree.map(np.testing.assert_array_equal, state.params, state0.params)
    assert np.isfinite(float(info2.value)) and int(state.step) == 2
    _, healthy = _run(ONLINE, 3)
    assert all(int(i.n_skipped) == 0 for i in healthy)


def test_training_does_not_depend_on_the_integrand_scale():
    """The same step on the camel times 1e15 and times 1e-15 (float32): the same parameter
    update as at scale 1, the reported losses scaled by 1e30 and 1e-30. (Unscaled, the
    squared weights of the first overflowed Adam's second moment and the update was 0.)"""
    def scaled(x, theta):
        return theta["scale"] * camel(x, THETA)

    trainer = make_trainer(single_channel(scaled, 2), FLOW, _optimizer(), batch_size=BATCH,
                           buffer_capacity=2 * BATCH, buffered_steps=1)
    state0 = trainer.init(jax.random.key(0))
    step = jax.jit(trainer.step)
    runs = {}
    for scale in (1.0, 1e15, 1e-15):
        state, info = step(jax.random.key(1), state0, {"scale": jnp.asarray(scale)})
        state, info = step(jax.random.key(2), state, {"scale": jnp.asarray(scale)})
        runs[scale] = (state, info)
    ref_state, ref_info = runs[1.0]
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), ref_state.params,
                         state0.params)
    assert max(jax.tree.leaves(moved)) > 1e-3
    for scale in (1e15, 1e-15):
        state, info = runs[scale]
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6),
                     state.params, ref_state.params)
        np.testing.assert_allclose(float(info.loss) / scale**2, float(ref_info.loss),
                                   rtol=1e-4)
        np.testing.assert_allclose(float(info.value) / scale, float(ref_info.value),
                                   rtol=1e-5)


def test_buffered_training_needs_fewer_integrand_calls():
    """Reusing each batch twice from the buffer reaches the online variance sooner."""
    _, on = _run(ONLINE, 80)
    _, bu = _run(BUFFERED, 80)

    def smooth(infos):
        return np.convolve([float(i.loss) for i in infos], np.ones(8) / 8, mode="valid")

    target = smooth(on)[-1]  # what online training reaches with 80 batches
    reached = np.nonzero(smooth(bu) <= target)[0]
    assert reached.size, "buffered training never reached the online variance"
    calls_ratio = (reached[0] + 8) / 80
    assert calls_ratio < 0.7, calls_ratio


def _two_peak_integrand(prior_power=1.0):
    """A 1-D Cauchy-like pair of peaks at 0.2 and 0.75 with one channel map per peak.

    The prior channel weights are ``p_c^a / sum_c p_c^a`` for the peaks ``p_c`` and
    ``a = prior_power``. With ``a = 1`` (single-diagram enhancement) every channel's weight
    ``f alpha_c / q_c`` is the same constant under its identity flow: the sampler starts at
    the optimum. Other powers leave the flows and channel weights something to learn."""
    centres, widths = jnp.array([0.2, 0.75]), jnp.array([0.01, 0.02])

    def peaks(x):
        return widths / jnp.pi / ((x - centres) ** 2 + widths**2)

    def channel_map(c, r):
        # Cauchy map restricted to [0, 1]: dense where peak c is.
        m, g = centres[c], widths[c]
        lo, hi = jnp.arctan((0 - m) / g), jnp.arctan((1 - m) / g)
        t = lo + (hi - lo) * r
        x = m + g * jnp.tan(t)
        log_j = jnp.log((hi - lo) * g) - 2 * jnp.log(jnp.cos(t))
        return x, log_j

    def evaluate(c, r, theta):
        x, log_j = channel_map(c, r[0])
        p = peaks(x)
        f = jnp.sum(p)
        log_prior = jax.nn.log_softmax(prior_power * jnp.log(p))
        return ch.ChannelEval(jnp.log(f) + log_j, jnp.ones_like(f), log_prior,
                              jnp.stack([x, x**2]))

    truth = float(jnp.sum((jnp.arctan((1 - centres) / widths) + jnp.arctan(centres / widths))
                          / jnp.pi))
    return ch.MultiChannelIntegrand(dim=1, n_channels=2, n_features=2, evaluate=evaluate), truth


def test_multichannel_estimate_and_learned_weights():
    integrand, truth = _two_peak_integrand()
    flow = make_flow(1, n_bins=8, hidden=(16,), context_dim=2)
    cw = ch.make_channel_weights(2, 2, hidden=(8,))
    trainer = make_trainer(integrand, flow, optax.adam(3e-3), batch_size=512,
                           channel_weights=cw, min_per_channel=32)
    state, infos = _run(trainer, 60)
    values = np.array([float(i.value) for i in infos[-20:]])
    errors = np.array([float(i.error) for i in infos[-20:]])
    pulls = (values - truth) / errors
    assert np.all(np.abs(pulls) < 5), pulls
    # The prior alone already makes this nearly flat; training must not make it worse
    # than 1 % per batch of 512, and the allocation must stay exact.
    assert np.mean(errors / truth) < 0.01
    assert int(state.counts.sum()) == 512 and np.all(np.asarray(state.counts) >= 32)


def test_variance_baseline_changes_the_update_and_keeps_the_estimate():
    """``variance_baseline`` reaches the loss: the same run moves the parameters
    differently (the baseline term has a gradient of zero mean, not zero), the two-channel
    estimate stays honest, and with an imperfect prior (something to learn) the trained
    sampler is at least as precise as without the baseline (seed 0: median error over the
    last 30 batches 0.7 % against 1.1 %)."""
    integrand, truth = _two_peak_integrand(prior_power=0.5)
    flow = make_flow(1, n_bins=8, hidden=(16,), context_dim=2)
    runs = {}
    for baseline in (None, "all"):
        trainer = make_trainer(integrand, flow, optax.adam(3e-3), batch_size=512,
                               min_per_channel=32, variance_baseline=baseline)
        runs[baseline] = _run(trainer, 150)
    (s0, i0), (s1, i1) = runs[None], runs["all"]
    moved = [float(jnp.max(jnp.abs(a - b))) for a, b in
             zip(jax.tree.leaves(s0.params), jax.tree.leaves(s1.params), strict=True)]
    assert max(moved) > 1e-4
    pulls = np.array([(float(i.value) - truth) / float(i.error) for i in i1[-30:]])
    assert np.all(np.abs(pulls) < 5), pulls
    plain, with_baseline = (np.median([float(i.error) for i in infos[-30:]]) / truth
                            for infos in (i0, i1))
    assert with_baseline < min(plain, 0.01), (with_baseline, plain)


def test_batched_sampler_maps_give_the_per_event_training():
    """The trainer calls a flow's batch methods (rows of events) when the sampler has them,
    else vmaps the per-event maps: the same steps up to rounding, several channels too.
    The prior is off, so the gradients are not at rounding level: Adam, which divides each
    component by its own scale, would blow rounding up to steps of the learning rate."""
    integrand, _ = _two_peak_integrand(prior_power=0.5)
    flow = make_flow(1, n_bins=8, hidden=(16,), context_dim=2)
    per_event = Sampler(flow.init, flow.forward_and_log_det, flow.inverse_and_log_det)
    results = []
    for sampler in (flow, per_event):
        trainer = make_trainer(integrand, sampler, optax.adam(3e-3), batch_size=256,
                               min_per_channel=32, buffer_capacity=512, buffered_steps=1)
        results.append(_run(trainer, 5))
    (s1, i1), (s2, i2) = results
    for a, b in zip(i1, i2, strict=True):
        np.testing.assert_allclose(float(a.value), float(b.value), rtol=1e-4)
        np.testing.assert_allclose(float(a.loss), float(b.loss), rtol=1e-3)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert float(jnp.max(jnp.abs(jax.tree.leaves(s1.params["flow"])[-1]))) > 1e-3  # trained


def test_bad_configuration_raises():
    f = single_channel(camel, 2)
    with pytest.raises(ValueError, match="buffer_capacity=100"):
        make_trainer(f, FLOW, optax.adam(1e-3), batch_size=64, buffer_capacity=100)
    with pytest.raises(ValueError, match="loss must be one of"):
        make_trainer(f, FLOW, optax.adam(1e-3), batch_size=64, loss="l2")
    with pytest.raises(ValueError, match="buffered_steps=2"):
        make_trainer(f, FLOW, optax.adam(1e-3), batch_size=64, buffered_steps=2)
    with pytest.raises(ValueError, match="dim must be >= 1"):
        single_channel(camel, 0)
    with pytest.raises(ValueError, match="kl_steps must be an integer >= 0"):
        make_trainer(f, FLOW, optax.adam(1e-3), batch_size=64, kl_steps=-1)


def _two_channels(prior=2, features=3, value=(), dtype=jnp.float32):
    """A two-channel integrand whose evaluations have the given per-event shapes."""
    def evaluate(channel, r, theta):
        ones = jnp.ones(value, dtype)
        return ch.ChannelEval(jnp.log(jnp.sum(r)) * ones, ones, jnp.full((prior,), -jnp.log(2.0)),
                              jnp.zeros(features))
    return ch.MultiChannelIntegrand(dim=2, n_channels=2, n_features=3, evaluate=evaluate)


@pytest.mark.parametrize("shapes, message", [
    ({}, None),
    ({"prior": 3}, r"log_prior has shape \(3,\) per event; expected \(2,\)"),
    ({"features": 4}, r"features has shape \(4,\) per event; expected \(3,\)"),
    ({"value": (1,)}, r"log_fj has shape \(1,\) per event; expected \(\)"),
    ({"dtype": jnp.complex64}, r"log_fj must be real, got complex64"),
])
def test_a_multichannel_integrand_of_the_wrong_shapes_is_named(shapes, message):
    """Each ChannelEval field is checked per event when the step is traced, so a wrong
    shape is named instead of broadcasting into a [N, N] weight array."""
    flow = make_flow(2, n_bins=4, hidden=(8,), context_dim=2)
    trainer = make_trainer(_two_channels(**shapes), flow, optax.adam(1e-3), batch_size=64,
                           channel_weights=ch.make_channel_weights(2, 3))
    state = trainer.init(jax.random.key(0))
    if message is None:
        _, info = jax.jit(trainer.step)(jax.random.key(1), state)
        assert np.isfinite(info.value) and np.isfinite(info.loss)
    else:
        with pytest.raises(ValueError, match=message):
            jax.jit(trainer.step)(jax.random.key(1), state)
    with pytest.raises(ValueError, match="n_channels and n_features >= 1, got 2, 0 and 3"):
        make_trainer(_two_channels()._replace(n_channels=0), flow, optax.adam(1e-3),
                     batch_size=64)


def test_kl_phase_trains_with_kl_then_with_the_variance():
    """With ``kl_steps=2`` the first two steps are those of a KL trainer (same keys, same
    parameters: the phase is applied, a variance step would differ), the third is not (the
    variance loss takes over). The two trainers are different programs, so their float32
    parameters may differ by rounding (measured up to 4e-8); the variance step moves them
    by 2e-2."""
    f, opt, flow = single_channel(camel, 2), optax.adam(1e-2), make_flow(2, n_bins=4,
                                                                         hidden=(8,))
    kw = dict(batch_size=64, buffer_capacity=128, buffered_steps=1)
    runs = {"phased": make_trainer(f, flow, opt, kl_steps=2, **kw),
            "kl": make_trainer(f, flow, opt, loss="kl", **kw)}
    states = {name: t.init(jax.random.key(0)) for name, t in runs.items()}
    steps = {name: jax.jit(t.step) for name, t in runs.items()}
    gaps = []
    for k in jax.random.split(jax.random.key(1), 3):
        for name in runs:
            states[name], info = steps[name](k, states[name], THETA)
            assert np.isfinite(float(info.loss))
        flat = [jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(st.params)])
                for st in states.values()]
        gaps.append(float(jnp.max(jnp.abs(flat[0] - flat[1]))))
    assert gaps[0] < 1e-6 and gaps[1] < 1e-6, gaps
    assert gaps[2] > 1e-3, gaps


def test_kl_exponent_rises_geometrically_to_one_over_half_the_kl_phase():
    np.testing.assert_allclose(float(kl_exponent(0, 8, 0.1)), 0.1, rtol=1e-6)
    np.testing.assert_allclose(float(kl_exponent(2, 8, 0.1)), 0.1**0.5, rtol=1e-6)
    assert float(kl_exponent(4, 8, 0.1)) == float(kl_exponent(7, 8, 0.1)) == 1.0
    assert float(kl_exponent(0, 8, 1.0)) == float(kl_exponent(0, 0, 0.1)) == 1.0
    f = single_channel(camel, 2)
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="kl_temper must be in"):
            make_trainer(f, FLOW, optax.adam(1e-3), batch_size=64, kl_temper=bad)


def test_tempered_kl_phase_trains_on_a_power_of_the_integrand():
    """``kl_temper=0.25``: the first step of a KL trainer of ``f`` is that of one of
    ``f^0.25`` (same keys; plain gradient descent, so the update is the gradient itself), to
    1e-3 of the largest update. Untempered, they differ by more than that update (117 of 266
    parameters beyond the tolerance). (The variance loss's KL phase is tempered the same
    way: the narrow-camel test below.)"""
    f, opt, flow = single_channel(camel, 2), optax.sgd(0.1), make_flow(2, n_bins=4,
                                                                       hidden=(8,))
    power = single_channel(lambda x, theta: camel(x, theta) ** 0.25, 2)
    runs = {"tempered": make_trainer(f, flow, opt, batch_size=64, loss="kl", kl_steps=4,
                                     kl_temper=0.25),
            "power": make_trainer(power, flow, opt, batch_size=64, loss="kl")}
    key, start = jax.random.key(1), flow.init(jax.random.key(0))
    flat = {}
    for name, t in runs.items():
        state = t.init(jax.random.key(0), start)
        moved = jax.jit(t.step)(key, state, THETA)[0].params["flow"]
        flat[name] = np.concatenate([np.ravel(a - b) for a, b in zip(
            jax.tree.leaves(moved), jax.tree.leaves(start), strict=True)])
    step = np.max(np.abs(flat["power"]))
    assert step > 1e-3
    np.testing.assert_allclose(flat["tempered"], flat["power"], rtol=0, atol=1e-3 * step)


@pytest.mark.optimized  # eight seeds in one program: running, not compiling, takes the time
def test_tempered_kl_phase_keeps_both_peaks_of_a_narrow_camel():
    """A 4-d camel of width 0.04 from a uniform start, 60 KL steps of 256 events, eight
    seeds at once: with ``kl_temper=0.1`` the trained flow puts 20-80% of its samples at
    each peak in at least six seeds (measured: 7 of 8; 15 of 16 with 16 seeds); untempered,
    the same run does so in 1 of 8 and puts over 98.7% at one peak in the other seven."""
    a, dim = 0.04, 4

    def narrow(x, theta):
        norm = (a * jnp.sqrt(jnp.pi)) ** dim
        return 0.5 * (jnp.exp(-jnp.sum((x - 1 / 3) ** 2) / a**2)
                      + jnp.exp(-jnp.sum((x - 2 / 3) ** 2) / a**2)) / norm

    n_steps, flow = 60, make_flow(dim, n_bins=8, hidden=(16,))
    trainer = make_trainer(single_channel(narrow, dim), flow, optax.adam(1e-2),
                           batch_size=256, kl_steps=n_steps, kl_temper=0.1,
                           buffer_capacity=1024, buffered_steps=3)

    @jax.jit
    @jax.vmap
    def share_at_first_peak(seed):
        state = trainer.init(jax.random.key(seed))
        keys = jax.random.split(jax.random.key(100 + seed), n_steps)
        state, _ = jax.lax.scan(lambda s, k: (trainer.step(k, s, None)[0], None), state, keys)
        x, _ = flow.sample(jax.random.key(7), state.params["flow"], 4096)
        return jnp.mean(jnp.sum((x - 1 / 3) ** 2, -1) < jnp.sum((x - 2 / 3) ** 2, -1))

    share = np.asarray(share_at_first_peak(jnp.arange(8)))
    assert np.sum((share > 0.2) & (share < 0.8)) >= 6, share


def test_frozen_step_reports_a_fresh_batch_and_leaves_the_state_unchanged():
    """``update`` as a traced flag: one program serves training steps and refine iterations."""
    step = jax.jit(ONLINE.step)
    state, _ = _run(ONLINE, 3)
    frozen, info = step(jax.random.key(7), state, THETA, jnp.asarray(False))
    # jit wrappers of one function share its cache (``_run`` compiled the 3-argument call)
    compiled = step._cache_size()
    for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The reported weights are the batch's: their mean is the batch estimate.
    assert info.weights.shape == info.channel.shape == (BATCH,)
    np.testing.assert_allclose(float(np.mean(info.weights)), float(info.value), rtol=1e-5)
    trained, _ = step(jax.random.key(7), state, THETA, jnp.asarray(True))
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), trained.params, state.params)
    assert any(jax.tree.leaves(moved))
    assert int(trained.step) == int(state.step) + 1 == int(frozen.step) + 1
    assert step._cache_size() == compiled  # training and frozen steps: one program


def test_frozen_steps_and_sample_draw_from_the_average_of_the_parameters():
    """With ``average_decay = d`` the state's average after ``t`` training steps is
    ``sum_s d^(t-s) p_s / sum_s d^(t-s)`` over the parameters ``p_s`` the steps reached
    (here computed in float64 from the saved ``p_s``). Training steps draw from the current
    parameters, frozen steps and ``sample`` from the average; with ``d = 0`` (the default)
    the average is the parameters themselves, bit for bit."""
    d = 0.7
    trainer = make_trainer(single_channel(camel, 2), FLOW, _optimizer(), batch_size=BATCH,
                           average_decay=d)
    step = jax.jit(trainer.step)
    state = trainer.init(jax.random.key(0))
    reached = []
    for k in jax.random.split(jax.random.key(1), 6):
        state, _ = step(k, state, THETA)
        reached.append(state.params)
    weights = d ** np.arange(len(reached) - 1, -1, -1.0)
    weights /= weights.sum()
    expected = jax.tree.map(
        lambda *p: np.tensordot(weights, np.stack(p).astype(np.float64), axes=1), *reached)
    for a, e in zip(jax.tree.leaves(state.average), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), e, rtol=1e-5, atol=1e-7)
    gap = max_abs_difference(state.average, state.params)
    assert gap > 1e-3  # the steps moved the parameters: the average is not the last ones

    # Frozen steps and sample ignore params; a training step does not.
    elsewhere = state._replace(params=trainer.init(jax.random.key(5)).params)
    key, frozen = jax.random.key(7), jnp.asarray(False)
    weights_of = {name: np.asarray(step(key, s, THETA, frozen)[1].weights)
                  for name, s in [("state", state), ("elsewhere", elsewhere),
                                  ("last", state._replace(average=state.params))]}
    np.testing.assert_array_equal(weights_of["state"], weights_of["elsewhere"])
    assert not np.allclose(weights_of["state"], weights_of["last"])
    sample = jax.jit(trainer.sample)
    np.testing.assert_array_equal(np.asarray(sample(key, state, THETA)[1]),
                                  np.asarray(sample(key, elsewhere, THETA)[1]))
    trained = [np.asarray(step(key, s, THETA)[1].weights) for s in (state, elsewhere)]
    assert not np.allclose(*trained)

    plain, _ = _run(ONLINE, 3)
    jax.tree.map(np.testing.assert_array_equal, plain.average, plain.params)
    with pytest.raises(ValueError, match=r"average_decay must be in \[0, 1\), got 1.0"):
        make_trainer(single_channel(camel, 2), FLOW, _optimizer(), batch_size=64,
                     average_decay=1.0)
