"""Training losses for neural importance sampling, written on log weights.

Notation. ``f(x)`` is the integrand (``|f|`` for the divergences; a ``sign`` array carries
the sign where it matters), ``q(x)`` the current sampling density whose parameters are being
trained, ``I = int f dx`` the integral and ``p = |f| / int |f|`` the target density. Every
loss takes per-event arrays ``[N]``:

* ``log_f``: ``log |f(x_i)|`` (``-inf`` where ``f = 0``; in a multi-channel setting the
  channel-weighted ``log(alpha_c f J_c)``);
* ``log_q``: ``log q(x_i)`` of the **current** density, the array the gradient flows through;
* ``log_q_sampled``: ``log q_s(x_i)`` of the density the events were **drawn from**. The
  default ``None`` means fresh samples, ``q_s = stop_gradient(q)``. For buffered samples
  drawn from an older density pass its stored log density: every expectation under ``q`` is
  then estimated with the importance ratio ``rho_i = q(x_i) / q_s(x_i)``,
  ``E_q[g] = E_{q_s}[rho g]``, and the loss estimates the loss of the current ``q``.

The divergences and the variance (a chi^2 divergence) as training objectives follow neural
importance sampling (Mueller et al., arXiv:1808.03856), i-flow (arXiv:2001.05486) and MadNIS
(arXiv:2212.06172, arXiv:2311.01548 for buffered training). Samples are held fixed
(score-function scheme): parameters enter only through ``log_q`` (and through ``log_f`` for the
channel weights or physics parameters), never through the positions ``x_i``. If the events
are instead reparametrised (``x_i = G_phi(u_i)`` differentiable), passing the same traced
array as ``log_q`` and ``log_q_sampled`` makes ``rho = 1`` with zero gradient and turns every
loss into its pathwise estimator.

Non-finite input. ``log_f`` that is NaN or ``+inf`` is treated as ``f = 0`` (masked to
``-inf``, see :func:`sanitize_log_f`, which also counts such events so the caller can report
them); events whose ``log_q`` or ``log_q_sampled`` is not finite are treated likewise. Masked
events still count as samples (they enter ``N``), contribute nothing, and have zero
gradient: a NaN in ``f`` never reaches the gradient. The losses return only the scalar; call
:func:`sanitize_log_f` on the same ``log_f`` to get the count.

Numerics. Weights are rescaled by a stop-gradient reference ``exp(m)``,
``m = max_i log(f_i / q_s,i)`` (per channel for the stratified loss), before exponentiating, so
no intermediate overflows or underflows even when the weights themselves do not fit in
float32; only the final scalar is scaled back. Every loss is a pure, jit-able function of
arrays; ``num_channels`` and ``weighting`` are the only static arguments.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxnis.estimators import blocked_segment_sum
from jaxnis.numerics import safe_div, safe_sqrt
from jaxnis.types import Array, ArrayLike

_WEIGHTINGS = ("samples", "sum", "optimal")


def sanitize_log_f(log_f: ArrayLike) -> tuple[Array, Array]:
    """Replace NaN and ``+inf`` entries of ``log_f`` by ``-inf`` (``f = 0``) and count them.

    ``-inf`` is a legitimate value (``f = 0``, e.g. a cut) and is kept. The gradient with
    respect to a replaced entry is zero, so a NaN integrand value cannot poison the gradient.

    Args:
        log_f: ``[...]`` log of ``|f|``.

    Returns:
        ``(log_f_clean [...], n_nonfinite [] int32)``.
    """
    log_f = jnp.asarray(log_f)
    bad = jnp.isnan(log_f) | (log_f == jnp.inf)
    return jnp.where(bad, -jnp.inf, log_f), jnp.sum(bad, dtype=jnp.int32)


def _prepare(log_f, log_q, log_q_sampled):
    """Sanitise the inputs; returns finite stand-ins and the mask of contributing events.

    ``valid`` marks events with ``f > 0`` and finite ``log q``, ``log q_s``; ``ok`` marks
    events whose densities are finite (``f`` may be zero). Invalid entries are replaced by 0
    (double where): the masked expressions below then never see ``inf - inf`` or
    ``0 * inf``, in the value or in the gradient.
    """
    log_f = jnp.asarray(log_f)
    log_q = jnp.asarray(log_q)
    if log_f.ndim != 1 or log_f.shape != log_q.shape:
        raise ValueError(
            f"log_f and log_q must be 1-D of equal shape, got {log_f.shape} and {log_q.shape}"
        )
    if log_q_sampled is None:
        log_qs = jax.lax.stop_gradient(log_q)
    else:
        log_qs = jnp.asarray(log_q_sampled)
        if log_qs.shape != log_q.shape:
            raise ValueError(
                f"log_q_sampled must have shape {log_q.shape}, got {log_qs.shape}"
            )
    log_f, _ = sanitize_log_f(log_f)
    ok = jnp.isfinite(log_q) & jnp.isfinite(log_qs)
    valid = ok & jnp.isfinite(log_f)
    lf = jnp.where(valid, log_f, 0.0)
    lq = jnp.where(ok, log_q, 0.0)
    lqs = jnp.where(ok, log_qs, 0.0)
    return lf, lq, lqs, valid, ok


def _sign(sign_f, shape):
    if sign_f is None:
        return None
    sign_f = jnp.asarray(sign_f)
    if sign_f.shape != shape:
        raise ValueError(f"sign_f must have shape {shape}, got {sign_f.shape}")
    return sign_f


#: The forms of the variance loss's gradient baseline (see :func:`_segment_variances`).
BASELINES = (None, "all", "support")


def check_baseline(baseline) -> None:
    """``ValueError`` unless ``baseline`` is one of :data:`BASELINES`."""
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")


def _segment_variances(log_f, log_q, log_q_sampled, sign_f, channel_ids, num_channels,
                       baseline=None):
    """Per-segment unbiased estimates of ``Var_q(f/q)`` and the segment sizes.

    With ``a_i = f_i / q_s,i`` (the weight times the ratio, ``E_{q_s}[a] = I``) and
    ``rho_i = q_i / q_s,i``, the estimate is

        V = (1/n) sum_i a_i^2 / rho_i  -  [ (sum_i a_i)^2 - sum_i a_i^2 ] / (n (n - 1)),

    unbiased for ``int f^2/q - I^2`` (the second term is the U-statistic for ``I^2``). It is
    evaluated in the algebraically equal form

        V = s^2(a) + (1/n) sum_i a_i^2 expm1(log q_s,i - log q_i),

    with ``s^2(a)`` the two-pass sample variance ``sum (a - mean a)^2 / (n - 1)``: no
    cancellation of two large numbers when the variance is small, and on fresh samples the
    second term is exactly 0 in value while its gradient is ``-(1/n) sum_i w_i^2 d log q_i``,
    the gradient of ``E_q[(f/q)^2]`` (the ``I^2`` term does not depend on ``q``).

    With ``baseline="all"``, ``(1/n) sum_i c_i expm1(log q_i - log q_s,i)`` is added, ``c_i``
    the square of the mean ``a`` of the segment's other events (no gradient) and the sum over
    every event with finite densities, ``f = 0`` included. As ``c_i`` does not depend on
    event ``i``, the term's expectation is ``E[c_i] (E_{q_s}[q/q_s] - 1) = 0`` and that of
    its gradient ``(1/n) sum_i c_i (q_i/q_s,i) d log q_i`` is ``E[c_i] E_q[d log q] = 0``;
    on fresh samples its value is exactly 0. The gradient is then
    ``-(1/n) sum_i (w_i^2 - c_i) (q_i/q_s,i) d log q_i``: the score-function gradient with
    a baseline, whose noise vanishes as ``w`` approaches its mean instead of staying
    ``~ I^2 |d log q|``. At events with ``f = 0`` it adds noise ``c |d log q|`` instead.
    ``baseline="support"`` sums over the events with ``f != 0`` only: no noise from the
    others, but the term's gradient then has expectation ``E[c] d P_q(f != 0)``, so training
    minimises the variance plus ``c P_q(f != 0)`` rather than the variance alone (on fresh
    samples the value is still exactly the plain one; estimates never use the loss).

    Returns ``(var [C], n [C] int32)``; segments with fewer than two events get ``var = 0``.
    """
    check_baseline(baseline)
    lf, lq, lqs, valid, ok = _prepare(log_f, log_q, log_q_sampled)
    sign_f = _sign(sign_f, lf.shape)
    seg = jnp.asarray(channel_ids)
    if seg.shape != lf.shape:
        raise ValueError(f"channel_ids must have shape {lf.shape}, got {seg.shape}")
    log_a = lf - lqs
    ref = jax.ops.segment_max(
        jax.lax.stop_gradient(jnp.where(valid, log_a, -jnp.inf)), seg, num_channels
    )
    # Empty or all-zero segments have reference -inf; any finite value works there.
    ref = jnp.where(jnp.isfinite(ref), ref, 0.0)
    ref_i = jnp.take(ref, seg, mode="clip")
    a = jnp.where(valid, jnp.exp(jnp.where(valid, log_a - ref_i, 0.0)), 0.0)
    if sign_f is not None:
        a = a * sign_f
    ones = jnp.ones_like(a)
    n = blocked_segment_sum(ones, seg, num_channels)
    sums = blocked_segment_sum(a, seg, num_channels)
    mean = safe_div(sums, n)
    dev = a - jnp.take(mean, seg, mode="clip")
    s2 = safe_div(blocked_segment_sum(dev * dev, seg, num_channels), n - 1.0)
    # a^2 (q_s/q - 1): expm1 keeps full precision when q is close to q_s.
    corr = jnp.where(valid, a * a * jnp.expm1(lqs - lq), 0.0)
    if baseline is not None:
        # Leave-one-out mean: c_i does not depend on event i, so E[c_i (q_i/q_s,i - 1)] = 0
        # exactly, not only to O(1/n).
        others = jnp.take(n, seg, mode="clip") - 1.0
        c = jax.lax.stop_gradient(safe_div(jnp.take(sums, seg, mode="clip") - a, others)) ** 2
        summed = ok if baseline == "all" else valid
        corr = corr + jnp.where(summed, c * jnp.expm1(lq - lqs), 0.0)
    corr = safe_div(blocked_segment_sum(corr, seg, num_channels), n)
    var = jnp.where(n >= 2, (s2 + corr) * jnp.exp(2.0 * ref), 0.0)
    return var, n.astype(jnp.int32)


def variance_loss(
    log_f: ArrayLike,
    log_q: ArrayLike,
    log_q_sampled: ArrayLike | None = None,
    *,
    sign_f: ArrayLike | None = None,
    baseline: str | None = None,
) -> Array:
    """Unbiased estimate of the weight variance ``Var_q(f/q) = int f^2/q dx - I^2``.

    Minimising it minimises the Monte Carlo error ``sqrt(Var/N)`` of the integral. The
    gradient with respect to the parameters of ``q`` is ``-E_q[(f/q)^2 d log q]``, that of
    ``E_q[(f/q)^2]``, since ``I`` does not depend on ``q``. See :func:`_segment_variances`
    for the estimator (unbiased on fresh and on buffered samples; equal to the sample
    variance ``sum (w - mean w)^2 / (N - 1)`` on fresh samples).

    Args:
        log_f: ``[N]`` ``log |f|`` (``-inf`` where ``f = 0``).
        log_q: ``[N]`` log density of the current sampler (carries the gradient).
        log_q_sampled: ``[N]`` log density the events were drawn from, or ``None`` for fresh
            samples (``stop_gradient(log_q)``).
        sign_f: optional ``[N]`` sign of ``f`` (``+-1``) for signed integrands; the variance
            is then that of the signed weight.
        baseline: static, ``None``, ``"all"`` or ``"support"``: subtract the squared mean
            weight in the gradient (see :func:`_segment_variances`). ``"all"``: the same
            estimate and the same expected gradient, with less noise where the weights are
            near their mean. ``"support"``: only at events with ``f != 0`` (no noise from the
            others, at the price of a ``c P_q(f != 0)`` term in the objective). ``None``
            here, the plain loss; ``jaxnis.train.make_trainer`` uses ``"support"`` unless told
            otherwise.

    Returns:
        ``[]`` the variance estimate, in the units of ``(f/q)^2``.

    Example:
        >>> x = jax.random.uniform(jax.random.key(0), (1000,))  # q uniform, log q = 0
        >>> loss, grad = jax.value_and_grad(variance_loss, argnums=1)(x, jnp.zeros(1000))
        >>> # loss ~ Var(e^x) = (e^2 - 1)/2 - (e - 1)^2 = 0.242; grad = -e^{2x}/N
    """
    log_f = jnp.asarray(log_f)
    seg = jnp.zeros(log_f.shape, dtype=jnp.int32)
    var, _ = _segment_variances(log_f, log_q, log_q_sampled, sign_f, seg, 1, baseline)
    return var[0]


def channel_variances(
    log_f: ArrayLike,
    log_q: ArrayLike,
    channel_ids: ArrayLike,
    num_channels: int,
    log_q_sampled: ArrayLike | None = None,
    *,
    sign_f: ArrayLike | None = None,
    baseline: str | None = None,
) -> tuple[Array, Array]:
    """Per-channel weight variances ``Var_{q_c}(alpha_c f / q_c)`` and sample counts.

    Event ``i`` was drawn in channel ``channel_ids[i]`` from that channel's density ``q_c``;
    ``log_f`` is the channel-weighted ``log(alpha_c f)`` and ``log_q`` is ``log q_c``. Each
    channel's variance is the unbiased estimate of :func:`variance_loss` over its own
    ``n_c`` events (computed with a segment sum, so shapes never depend on the data; see
    :func:`jaxnis.estimators.blocked_segment_sum` for its accuracy).
    Channels with fewer than two events get variance 0; ids outside ``[0, num_channels)``
    are ignored. ``sqrt`` of the result is what :func:`jaxnis.channels.allocate` takes.

    Args:
        log_f, log_q, log_q_sampled, sign_f, baseline: as in :func:`variance_loss`
            (``[N]``; the baseline is each channel's own squared mean weight).
        channel_ids: ``[N]`` int channel of each event.
        num_channels: static number of channels ``C``.

    Returns:
        ``(variance [C], n [C] int32)``.
    """
    _check_channels(num_channels)
    return _segment_variances(log_f, log_q, log_q_sampled, sign_f, channel_ids, num_channels,
                              baseline)


def _check_channels(num_channels):
    if not isinstance(num_channels, int) or num_channels < 1:
        raise ValueError(f"num_channels must be a positive int, got {num_channels!r}")


def stratified_variance_loss(
    log_f: ArrayLike,
    log_q: ArrayLike,
    channel_ids: ArrayLike,
    num_channels: int,
    log_q_sampled: ArrayLike | None = None,
    *,
    sign_f: ArrayLike | None = None,
    weighting: str = "samples",
    baseline: str | None = None,
) -> Array:
    """Variance of the stratified multi-channel estimate ``I = sum_c mean_c(w)``.

    With ``V_c`` the per-channel variances and ``n_c`` the per-channel sample sizes of
    :func:`channel_variances`, and ``N = sum_c n_c``:

    * ``weighting="samples"`` (default): ``N sum_c V_c / n_c``, i.e. ``N Var(I_hat)`` for the
      allocation actually used; for one channel it equals :func:`variance_loss`.
    * ``weighting="sum"``: ``sum_c V_c``, every channel counted once.
    * ``weighting="optimal"``: ``(sum_c sqrt(V_c))^2``, i.e. ``N Var(I_hat)`` for the
      optimal allocation ``n_c ~ sqrt(V_c)`` (negative estimates count as 0).

    Channels with fewer than two events contribute 0.

    Args:
        log_f, log_q, channel_ids, num_channels, log_q_sampled, sign_f, baseline: as in
            :func:`channel_variances`.
        weighting: static, one of ``"samples"``, ``"sum"``, ``"optimal"``.

    Returns:
        ``[]`` the loss.
    """
    if weighting not in _WEIGHTINGS:
        raise ValueError(f"weighting must be one of {_WEIGHTINGS}, got {weighting!r}")
    var, n = channel_variances(
        log_f, log_q, channel_ids, num_channels, log_q_sampled, sign_f=sign_f,
        baseline=baseline,
    )
    if weighting == "sum":
        return jnp.sum(var)
    if weighting == "optimal":
        return jnp.sum(safe_sqrt(var)) ** 2
    n = n.astype(var.dtype)
    return jnp.sum(n) * jnp.sum(safe_div(var, n))


def _scaled_a(lf, lqs, valid):
    """``a_i = |f_i| / q_s,i`` divided by ``exp(m)``, ``m = max log a`` (stop-gradient)."""
    log_a = lf - lqs
    m = jnp.max(jax.lax.stop_gradient(jnp.where(valid, log_a, -jnp.inf)))
    # All events zero: any finite reference works, the loss is then set to 0.
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    a = jnp.where(valid, jnp.exp(jnp.where(valid, log_a - m, 0.0)), 0.0)
    return a, m


def kl_loss(
    log_f: ArrayLike, log_q: ArrayLike, log_q_sampled: ArrayLike | None = None
) -> Array:
    """Forward Kullback-Leibler divergence ``KL(p || q)``, ``p = |f| / I`` (i-flow, MadNIS).

    ``KL(p||q) = E_p[log p - log q] = E_q[w (log|f| - log q)] / I - log I`` with
    ``w = |f|/q``. From events of ``q_s``, with ``a_i = |f_i| / q_s,i``:

        KL_hat = sum_i a_i (log|f_i| - log q_i) / sum_i a_i  -  log(sum_i a_i / N).

    This self-normalised estimate is consistent (bias ``O(1/N)``), includes the constants
    so it estimates the divergence itself (``>= 0`` in expectation up to that bias), and its
    gradient with respect to ``q`` is the cross-entropy gradient
    ``-sum_i a_i d log q_i / sum_i a_i``. With all ``f = 0`` it returns 0.

    Args:
        log_f: ``[N]`` ``log |f|``.
        log_q: ``[N]`` current log density (carries the gradient).
        log_q_sampled: ``[N]`` log density of the sampler, or ``None`` for fresh samples.

    Returns:
        ``[]`` the divergence estimate (nats).
    """
    lf, lq, lqs, valid, _ = _prepare(log_f, log_q, log_q_sampled)
    a, m = _scaled_a(lf, lqs, valid)
    sum_a = jnp.sum(a)
    n = jnp.asarray(a.shape[0], dtype=a.dtype)
    cross = safe_div(jnp.sum(a * jnp.where(valid, lf - lq, 0.0)), sum_a)
    # log(sum a / N) + m is log I_hat, computed without forming exp(m).
    log_i = jnp.log(jnp.where(sum_a > 0, sum_a, 1.0)) - jnp.log(n) + m
    return jnp.where(sum_a > 0, cross - log_i, 0.0)


def reverse_kl_loss(
    log_f: ArrayLike, log_q: ArrayLike, log_q_sampled: ArrayLike | None = None
) -> Array:
    """Reverse Kullback-Leibler divergence ``KL(q || p)``, ``p = |f| / I``.

    ``KL(q||p) = E_q[log q - log|f|] + log I``. It is infinite when ``q`` puts mass where
    ``f = 0`` (cuts), so the loss is the finite surrogate

        L = KL(q_S || p) - log Q,   Q = int_{f>0} q,   q_S = q 1_{f>0} / Q,

    equal to ``KL(q||p)`` when ``Q = 1``; it is ``>= 0`` and vanishes only at ``q = p``: the
    first term shapes ``q`` on the support of ``f``, the ``-log Q`` term pushes mass into it.
    From events of ``q_s``, with ``rho_i = q_i / q_s,i``, ``s_i = 1_{f_i > 0}``:

        Q_hat  = sum_i rho_i s_i / sum_i rho_i,
        KL_hat = sum_i rho_i s_i (log q_i - log|f_i|) / sum_i rho_i s_i
                 + log(sum_i |f_i|/q_s,i / N) - 2 log Q_hat,

    consistent (self-normalised ratios, bias ``O(1/N)``). On fixed samples its gradient is
    the score-function estimator ``E_q[(log q/p + 1) d log q]`` (on the support). Returns 0
    when all ``f = 0``.

    Args:
        log_f: ``[N]`` ``log |f|``.
        log_q: ``[N]`` current log density (carries the gradient).
        log_q_sampled: ``[N]`` log density of the sampler, or ``None`` for fresh samples.

    Returns:
        ``[]`` the divergence estimate (nats).
    """
    lf, lq, lqs, valid, ok = _prepare(log_f, log_q, log_q_sampled)
    a, m = _scaled_a(lf, lqs, valid)
    sum_a = jnp.sum(a)
    n = jnp.asarray(a.shape[0], dtype=a.dtype)
    # rho = q / q_s: exactly 1 in value on fresh samples; the gradient of rho is d log q.
    log_rho = lq - lqs
    rho_ref = jnp.max(jax.lax.stop_gradient(jnp.where(ok, log_rho, -jnp.inf)))
    rho_ref = jnp.where(jnp.isfinite(rho_ref), rho_ref, 0.0)
    rho = jnp.where(ok, jnp.exp(jnp.where(ok, log_rho - rho_ref, 0.0)), 0.0)
    rho_s = jnp.where(valid, rho, 0.0)
    sum_rho_s = jnp.sum(rho_s)
    term = safe_div(jnp.sum(rho_s * jnp.where(valid, lq - lf, 0.0)), sum_rho_s)
    good = (sum_a > 0) & (sum_rho_s > 0)
    log_i = jnp.log(jnp.where(good, sum_a, 1.0)) - jnp.log(n) + m
    log_q_mass = jnp.log(jnp.where(good, sum_rho_s, 1.0)) - jnp.log(
        jnp.where(good, jnp.sum(rho), 1.0)
    )
    return jnp.where(good, term + log_i - 2.0 * log_q_mass, 0.0)


LOSSES: dict[str, Callable[..., Array]] = {
    "variance": variance_loss,
    "kl": kl_loss,
    "reverse_kl": reverse_kl_loss,
}
"""Single-channel losses by name, all with signature ``(log_f, log_q, log_q_sampled=None)``."""


def get_loss(name: str) -> Callable[..., Array]:
    """Look up a loss of :data:`LOSSES` by name; raises ``ValueError`` naming a bad one."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(LOSSES)}") from None


__all__ = [
    "LOSSES",
    "channel_variances",
    "get_loss",
    "kl_loss",
    "reverse_kl_loss",
    "sanitize_log_f",
    "stratified_variance_loss",
    "variance_loss",
]
