"""Start a neural sampler where VEGAS ended: per-channel VEGAS pretraining and two flow starts.

A VEGAS grid ``G`` (:mod:`jaxnis.vegas`) is a cheap, separable importance sampler. Three pure
functions carry what it learned into a flow-based sampler (MadNIS, arXiv:2212.06172, offers
the same VEGAS initialisation of its spline flows):

* :func:`pretrain_channels`: one VEGAS per channel, all channels in one vmapped, scanned
  program, adapting grid ``c`` to the channel's own integrand ``alpha_c f J_c`` (prior
  channel weights). Returns the grids ``[C, d, n + 1]`` and the evaluations spent.
* :func:`flow_params_from_grid` (**spline start**): the flow's parameters are set so that the
  flow *is* the grid, approximately: each dimension's last coupling layer becomes the
  rational-quadratic spline of :func:`jaxnis.vegas.spline_params_from_grid` (10 bins from 64).
  With one grid per channel and a conditional flow (one-hot channel context), the
  conditioner passes the context through ``C`` hidden units so the spline depends on the
  channel. Training then moves the spline knots and the couplings.
* :func:`with_grid` (**grid layer**): the sampler ``r = G_c(F(u))``: the grid is kept as a
  fixed (untrained) last layer and the flow ``F``, starting at the identity, learns the
  correlations the grid cannot express, in the grid's coordinates.

:func:`vegas_start` packages either start for :func:`jaxnis.train.make_trainer`; its default,
the spline start, is the one that trained better in ``benchmarks/vegas_init.py`` (figures
in its docstring).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxnis import pretrain
    >>> from jaxnis.flows import make_flow
    >>> from jaxnis.train import single_channel
    >>> f = single_channel(lambda x, theta: jnp.exp(-jnp.sum((x - 0.3) ** 2) / 0.01), 2)
    >>> pre = pretrain.pretrain_channels(jax.random.key(0), f, None, 4, 1000, n_bins=16)
    >>> pre.grids.shape, int(pre.n_eval)
    ((1, 2, 17), 4000)
    >>> sampler, params = pretrain.vegas_start(make_flow(2), pre.grids, jax.random.key(1))
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnis import channels as ch
from jaxnis import vegas as V
from jaxnis.flows.flow import Flow
from jaxnis.train import Sampler
from jaxnis.types import Array, ArrayLike, Params, PRNGKey, PyTree

_METHODS = ("spline", "grid")

#: The start :func:`vegas_start` uses unless told otherwise (see its docstring).
DEFAULT_METHOD = "spline"


# ---------------------------------------------------------------------------------------
# Per-channel VEGAS pretraining
# ---------------------------------------------------------------------------------------


class Pretrained(NamedTuple):
    """Result of :func:`pretrain_channels`.

    Attributes:
        grids: ``[C, d, n_bins + 1]`` float, the adapted grid of each channel.
        n_eval: ``[]`` int, integrand evaluations spent (``C * n_iter * n_per_iter``).
        value: ``[C, n_iter]`` float, each iteration's VEGAS estimate of
            ``int alpha_c f J_c dr`` (channel ``c``'s share of the integral).
        variance: ``[C, n_iter]`` float, their variances.
        n_nonfinite: ``[C, n_iter]`` int32, non-finite integrand values (counted as zero).
    """

    grids: Array
    n_eval: Array
    value: Array
    variance: Array
    n_nonfinite: Array


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def pretrain_channels(
    key: PRNGKey,
    integrand: ch.MultiChannelIntegrand,
    theta: PyTree,
    n_iter: int,
    n_per_iter: int,
    n_bins: int = 64,
    alpha: ArrayLike = 1.5,
    *,
    dtype=None,
) -> Pretrained:
    """VEGAS on every channel of a multi-channel integrand, all channels at once.

    Channel ``c`` gets its own grid ``G_c`` on the unit hypercube of its phase-space map and
    ``n_iter`` iterations of ``n_per_iter`` points, each a plain VEGAS iteration
    (:func:`jaxnis.vegas.vegas`, importance map only) on

        ``g_c(r) = alpha_c(x) f(x) J_c(r)``,  ``x = G_c-channel map of r``,

    with ``alpha_c`` the normalised prior channel weights of the integrand (what a
    channel-weight network starts from). ``int g_c dr`` is channel ``c``'s share of the
    integral, so ``sum_c value[c, i]`` estimates it at every iteration. The channels are
    run by ``vmap`` and the iterations by ``lax.scan``: one program, traced once.

    Pure and jittable with ``integrand``, ``n_iter``, ``n_per_iter`` and ``n_bins`` static,
    e.g. ``jax.jit(pretrain_channels, static_argnums=(1, 3, 4, 5))``; ``theta`` and
    ``alpha`` are traced.

    Args:
        key: PRNG key.
        integrand: a :class:`jaxnis.channels.MultiChannelIntegrand` (a plain function via
            :func:`jaxnis.train.single_channel`).
        theta: physics parameters passed to ``integrand.evaluate``.
        n_iter: VEGAS iterations (>= 1).
        n_per_iter: points per iteration **per channel** (>= 2).
        n_bins: grid bins per axis (>= 2).
        alpha: Lepage's damping exponent of the grid refinement.
        dtype: float dtype of the grids and points; default float32, or float64 with x64.

    Returns:
        :class:`Pretrained`; ``n_eval = C * n_iter * n_per_iter`` evaluations were spent.

    Raises:
        ValueError: on a bad count (named in the message).
    """
    n_iter = _check_count("n_iter", n_iter, 1)
    n_per_iter = _check_count("n_per_iter", n_per_iter, 2)
    n_ch, dim = integrand.n_channels, integrand.dim
    kernel = V.vegas(dim, n_per_iter, n_bins=n_bins)
    state0 = kernel.init(dtype=dtype)
    fdtype = state0.grid.dtype
    alpha = jnp.asarray(alpha, fdtype)
    states = jax.tree.map(lambda a: jnp.broadcast_to(a, (n_ch, *a.shape)), state0)

    def channel_values(c, x):
        """``alpha_c f J_c`` at points ``x [N, d]`` of channel ``c``, signed."""
        ev = jax.vmap(integrand.evaluate, (None, 0, None))(c, x, theta)
        log_alpha = ch.normalise_log_weights(ev.log_prior)[:, c] if n_ch > 1 else 0.0
        # NaN or +inf log values stay non-finite and are counted by the VEGAS step.
        return ev.sign * jnp.exp(ev.log_fj + log_alpha)

    def one_channel(k, state, c):
        batch = kernel.sample(k, state)
        fv = channel_values(c, batch.x).astype(fdtype)
        return kernel.step(state, batch, fv, alpha)

    def one_iteration(states, k):
        keys = jax.random.split(k, n_ch)
        return jax.vmap(one_channel)(keys, states, jnp.arange(n_ch))

    states, info = jax.lax.scan(one_iteration, states, jax.random.split(key, n_iter))
    return Pretrained(
        grids=states.grid,
        n_eval=jnp.asarray(n_ch * n_iter * n_per_iter),
        value=info.value.T,
        variance=info.variance.T,
        n_nonfinite=info.n_nonfinite.T,
    )


# ---------------------------------------------------------------------------------------
# Start (a): the flow's splines from the grid
# ---------------------------------------------------------------------------------------


def _grids_3d(grid: ArrayLike) -> Array:
    grid = jnp.asarray(grid)
    if grid.ndim == 2:
        grid = grid[None]
    if grid.ndim != 3 or grid.shape[-1] < 3:
        raise ValueError(f"grid must have shape [d, n + 1] or [C, d, n + 1] with n >= 2, "
                         f"got {grid.shape}")
    return grid


def _pass_through_levels(activation, n_hidden: int, dtype) -> tuple[Array, Array]:
    """Values ``(on, off)`` of a unit fed 1 or 0 through ``n_hidden`` dense layers with
    weight 1 and bias 0 (the first layer reads the context entry directly)."""
    on, off = jnp.ones((), dtype), jnp.zeros((), dtype)
    for _ in range(n_hidden):
        on, off = activation(on), activation(off)
    return on, off


def flow_params_from_grid(flow: Flow, params: Params, grid: ArrayLike) -> Params:
    """Flow parameters that make the flow the VEGAS grid's density (spline start).

    For every dimension ``i`` the **last** coupling layer (in the sampling direction) that
    transforms ``i`` gets the raw spline parameters of
    :func:`jaxnis.vegas.spline_params_from_grid` for axis ``i`` (equal-probability bins at the
    grid's quantiles, slopes from the fine grid); all other layers must be the identity
    (``params`` fresh from ``flow.init``). The earlier layers leave ``u_i`` alone, the later
    ones do not transform ``i``, and that layer's output for ``i`` no longer depends on the
    conditioning dimensions, so the flow is the element-wise spline map ``x_i = s_i(u_i)``
    whatever the masks (binary, checkerboard, random): see
    :meth:`jaxnis.flows.Flow.set_elementwise_params`.

    With per-channel grids ``[C, d, n + 1]`` and ``flow.context_dim == C`` (one-hot channel
    context, as :func:`jaxnis.train.make_trainer` passes it), the spline must depend on the
    channel. With ``flow.channel_flows`` each channel's flow simply gets its own grid's
    spline. Otherwise units ``0..C-1`` of every hidden layer of every conditioner are rewired
    to carry the one-hot context (weight 1 from context entry ``k``, or from unit ``k`` of the
    previous layer; bias 0), so with the activation's values ``on = act^L(1)`` and
    ``off = act^L(0)`` the output rows ``k`` of those units get ``raw_k / (on - off)`` and the
    bias ``-off sum_k raw_k / (on - off)``: the output is ``raw_c`` for context ``e_c``. The
    other hidden units keep their random initialisation (their output weights are zero), so
    the couplings can still be learned.

    Args:
        flow: a :class:`jaxnis.flows.Flow` with a rational-quadratic transform.
        params: identity parameters of ``flow`` (from ``flow.init``).
        grid: ``[d, n + 1]`` (or ``[1, d, n + 1]``) for one channel; ``[C, d, n + 1]`` for a
            conditional flow with ``context_dim == C``.

    Returns:
        New flow parameters (same structure and dtype as ``params``).

    Raises:
        ValueError: on a grid of the wrong dimension, a transform without
            ``params_from_knots``, ``C > 1`` without a matching context, or hidden layers
            narrower than ``C``.
    """
    grids = _grids_3d(grid)
    n_grids, dim = grids.shape[0], grids.shape[1]
    if dim != flow.dim:
        raise ValueError(f"grid has {dim} axes but the flow has dim {flow.dim}")
    if not hasattr(flow.transform, "params_from_knots"):
        raise ValueError(f"the spline start needs a rational-quadratic transform, got "
                         f"{flow.transform!r}")
    if n_grids == 1:
        return flow.set_elementwise_params(
            params, V.spline_params_from_grid(grids[0], flow.transform))
    if flow.context_dim != n_grids:
        raise ValueError(f"{n_grids} grids need a flow with context_dim={n_grids} (one-hot "
                         f"channel context), got context_dim={flow.context_dim}")
    raw = jax.vmap(V.spline_params_from_grid, (0, None))(grids, flow.transform)  # [C, d, P]
    if flow.channel_flows:
        # One flow per channel: each channel's own output layer takes its grid.
        return flow.set_elementwise_params(params, raw)
    if flow.hidden and min(flow.hidden) < n_grids:
        raise ValueError(f"hidden widths {flow.hidden} must be >= the number of channels "
                         f"{n_grids} to carry the channel through the conditioner")
    flow.check_params(params)
    n_cond = flow.selectors.cond.shape[1]
    n_hidden = len(flow.hidden)
    net = dict(params["layers"]["params"])
    dt = net["output"]["bias"].dtype
    # Rewire units 0..C-1 of each hidden layer into a one-hot pass-through.
    for h in range(n_hidden):
        name = f"Dense_{h}"
        kernel, bias = net[name]["kernel"], net[name]["bias"]  # [L, in, w], [L, w]
        kernel = kernel.at[:, :, :n_grids].set(0.0)
        rows = n_cond + np.arange(n_grids) if h == 0 else np.arange(n_grids)
        kernel = kernel.at[:, rows, np.arange(n_grids)].set(1.0)
        bias = bias.at[:, :n_grids].set(0.0)
        net[name] = {**net[name], "kernel": kernel, "bias": bias}
    on, off = _pass_through_levels(flow.activation, n_hidden, dt)
    # Output rows of the carried units: the last hidden layer's, or the context entries of
    # the conditioner input when there are no hidden layers.
    rows = np.arange(n_grids) if n_hidden else n_cond + np.arange(n_grids)
    scaled = raw / (on - off)  # [C, d, P]
    params = {**params, "layers": {**params["layers"], "params": net}}
    # First the bias part: set_elementwise_params writes -off * sum_k raw_k / (on - off)
    # and zero weights into each dimension's last layer ...
    params = flow.set_elementwise_params(params, (-off * jnp.sum(scaled, axis=0)).astype(dt))
    # ... then the weights from the carried units, at the same places.
    out = dict(params["layers"]["params"]["output"])
    kernel = out["kernel"]
    trans = flow.selectors.trans
    n_par = flow.transform.n_params
    for i in range(dim):
        layer = max(l for l in range(flow.n_layers) if not flow.masks[l][i])
        row = int(np.flatnonzero(trans[layer, :, i])[0])
        cols = slice(row * n_par, (row + 1) * n_par)
        kernel = kernel.at[layer, rows, cols].set(scaled[:, i, :].astype(dt))
    out["kernel"] = kernel
    new_net = {**params["layers"]["params"], "output": out}
    return {**params, "layers": {**params["layers"], "params": new_net}}


# ---------------------------------------------------------------------------------------
# Start (b): the grid as a fixed last layer
# ---------------------------------------------------------------------------------------


def with_grid(sampler, grids: ArrayLike) -> Sampler:
    """The sampler ``r = G_c(F(u))``: a flow followed by a fixed VEGAS grid (grid start).

    ``forward``: ``y, ld_F = F(u | context)``, ``r, ld_G = G_c(y)``, log-det ``ld_F + ld_G``,
    so ``log q(r) = -(ld_F + ld_G)``; ``inverse``: ``y, ld_G' = G_c^-1(r)``,
    ``u, ld_F' = F^-1(y | context)``, log-det ``ld_G' + ld_F'`` (``= log q(r)``). The grid
    is a constant (closed over, never trained); the flow's parameters are the sampler's, and
    a flow at the identity gives exactly the grid's density. Since ``G`` is continuous,
    monotone per axis and exact at 0 and 1, the composition is a bijection of ``[0, 1]^d``.

    Args:
        sampler: the flow ``F``: anything with ``init(key)``,
            ``forward_and_log_det(params, u, context)`` and
            ``inverse_and_log_det(params, r, context)`` (a :class:`jaxnis.flows.Flow`, or a
            :class:`jaxnis.train.Sampler`).
        grids: ``[d, n + 1]`` one grid for all events, or ``[C, d, n + 1]`` one per channel,
            picked by the one-hot ``context`` (``argmax``); ``[1, d, n + 1]`` also works
            without context.

    Returns:
        A :class:`jaxnis.train.Sampler` (the duck type :func:`jaxnis.train.make_trainer`
        takes), acting on one event; grids are cast to the event's dtype.

    Raises:
        ValueError: on grids of the wrong rank (construction), or per-channel grids without a
            context (trace time).
    """
    g = _grids_3d(grids)
    n_grids = g.shape[0]

    def pick(context, dtype):
        if n_grids == 1:
            return g[0].astype(dtype)
        if context is None:
            raise ValueError(f"{n_grids} per-channel grids need a one-hot channel context")
        context = jnp.asarray(context)
        if context.shape != (n_grids,):
            raise ValueError(f"context of shape {context.shape} does not select one of "
                             f"{n_grids} grids")
        return g.astype(dtype)[jnp.argmax(context)]

    def forward_and_log_det(params, u, context=None):
        u = jnp.asarray(u)
        grid = pick(context, u.dtype)
        y, ld_flow = sampler.forward_and_log_det(params, u, context)
        r, ld_grid = V.forward_and_log_det(grid.astype(y.dtype), y)
        return r, ld_flow + ld_grid

    def inverse_and_log_det(params, r, context=None):
        r = jnp.asarray(r)
        y, ld_grid = V.inverse_and_log_det(pick(context, r.dtype), r)
        u, ld_flow = sampler.inverse_and_log_det(params, y, context)
        return u, ld_grid + ld_flow

    return Sampler(init=sampler.init, forward_and_log_det=forward_and_log_det,
                   inverse_and_log_det=inverse_and_log_det)


def as_sampler(flow) -> Sampler:
    """A flow as a :class:`jaxnis.train.Sampler` (no grid), with its batched maps if it has
    them."""
    return Sampler(init=flow.init, forward_and_log_det=flow.forward_and_log_det,
                   inverse_and_log_det=flow.inverse_and_log_det,
                   forward_batch=getattr(flow, "forward_batch", None),
                   inverse_batch=getattr(flow, "inverse_batch", None))


def vegas_start(flow: Flow, grids: ArrayLike, key: PRNGKey, *, method: str | None = None,
                dtype=None) -> tuple[Sampler, Params]:
    """A sampler and its starting parameters from VEGAS grids, for ``make_trainer``.

    ``method="grid"``: ``with_grid(flow, grids)`` with the flow at the identity (the grid is
    a fixed last layer); ``method="spline"``: the flow itself, with
    :func:`flow_params_from_grid` parameters. Pass the parameters to the trainer's
    ``init(key, flow_params)``.

    The default, ``"spline"``, trained better at equal integrand budgets (VEGAS evaluations
    included) in ``benchmarks/vegas_init.py`` (``benchmarks/results/vegas_init.md``:
    2^17 evaluations, a quarter of them on VEGAS, 3 seeds): the relative spread of the
    weights ``sigma_w / I`` after training was 1.34 (spline) vs 1.47 (grid) on the camel
    a = 0.1, d = 4; 0.66 vs 0.68 at a = 0.2; 0.87 vs 1.46 on a rotated 4-d Gaussian; 0.63
    vs 0.91 on the annulus; 0.149 vs 0.161 on 3-channel Drell-Yan (flow alone: 2.76, 0.73,
    0.95, 0.73, 0.165; VEGAS alone: 2.93, 1.65, 7.4, 1.92, 0.32). With a tenth of the budget
    on VEGAS the spline start wins on the same five too (grid / spline 1.35 in geometric
    mean over them and the d = 8 camel at a = 0.2). A VEGAS start is no help on the d = 8
    camels at this budget: at a = 0.2 the grid's 2^8 phantom peaks make either start worse
    than the flow alone, at a = 0.1 VEGAS finds one peak of two. Note: the spline's
    knot-slope map has a zero gradient at raw parameter 0, where identity layers start; the
    benchmark (like the Integrator) moves those raw slopes to 1e-3 before training.

    Args:
        flow: the flow to train (``context_dim == C`` for per-channel grids).
        grids: ``[d, n + 1]`` or ``[C, d, n + 1]``, e.g. ``pretrain_channels(...).grids``.
        key: PRNG key for the flow's initialisation.
        method: ``"grid"`` or ``"spline"``; default :data:`DEFAULT_METHOD`.
        dtype: dtype of the parameters; default that of ``grids``.

    Returns:
        ``(sampler, flow_params)``.
    """
    method = DEFAULT_METHOD if method is None else method
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    grids = _grids_3d(grids)
    dtype = grids.dtype if dtype is None else dtype
    params = flow.init(key, dtype)
    if method == "grid":
        return with_grid(flow, grids), params
    return as_sampler(flow), flow_params_from_grid(flow, params, grids)


__all__ = [
    "DEFAULT_METHOD",
    "Pretrained",
    "as_sampler",
    "flow_params_from_grid",
    "pretrain_channels",
    "vegas_start",
    "with_grid",
]
