"""Hadron-collider luminosity map: two random numbers to the momentum fractions ``(x1, x2)``.

With ``S = sqrt_s^2`` (hadronic), ``tau = x1 x2 = s_hat / S`` and the rapidity of the partonic
system ``y = log(x1 / x2) / 2``, the measure factorises as ``dx1 dx2 = dtau dy``:

* ``r[0]`` gives ``s_hat`` in ``[s_hat_min, S]`` through a propagator map (uniform by default;
  :class:`~jaxnis.phasespace.propagators.PowerLawMap` with ``nu = 1`` is uniform in
  ``log tau``; :class:`~jaxnis.phasespace.propagators.BreitWignerMap` follows an s-channel
  resonance), so ``dtau/dr0 = (ds_hat/dr0) / S``;
* ``r[1]`` gives ``y`` uniformly in ``[log(tau) / 2, -log(tau) / 2]``, ``dy/dr1 = -log tau``,
  so ``x1 = tau^(1 - r[1])`` and ``x2 = tau^r[1]``.

The log weight is ``log(dx1 dx2 / dr0 dr1) = log(ds_hat/dr0) - log S + log(-log tau)``: the
Monte Carlo mean of ``exp(log_weight) f(x1, x2)`` is the integral of ``f`` over
``x1 x2 >= tau_min``. Parton densities and the flux factor belong to the integrand.

Example::

    lum = LuminosityMap(PowerLawMap())
    cond = {"sqrt_s": 13000.0, "tau_min": 1e-4, "nu": 1.0}
    x, log_w = lum.forward(jnp.array([0.3, 0.6]), cond)  # x = [x1, x2]
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jaxnis.numerics import safe_div, safe_log
from jaxnis.phasespace.propagators import UniformMap, check_r
from jaxnis.types import Array, ArrayLike, Cond


def _s_hat_min(cond: Cond) -> tuple[Array, Array]:
    """``(S, s_hat_min)`` from ``cond``: ``sqrt_s`` and exactly one of ``s_hat_min``/``tau_min``."""
    if "sqrt_s" not in cond:
        raise ValueError(f"LuminosityMap needs cond['sqrt_s'] (hadronic); got {sorted(cond)}")
    has_s, has_tau = "s_hat_min" in cond, "tau_min" in cond
    if has_s == has_tau:
        raise ValueError("LuminosityMap needs exactly one of cond['s_hat_min'] and "
                         f"cond['tau_min']; got keys {sorted(cond)}")
    sqrt_s = jnp.asarray(cond["sqrt_s"])
    big_s = sqrt_s * sqrt_s
    if has_s:
        return big_s, jnp.asarray(cond["s_hat_min"])
    return big_s, jnp.asarray(cond["tau_min"]) * big_s


def parton_momenta(x1: ArrayLike, x2: ArrayLike, sqrt_s: ArrayLike) -> Array:
    """Incoming massless partons in the lab frame, ``[..., 2, 4]``.

    ``pa = x1 sqrt_s / 2 (1, 0, 0, 1)`` and ``pb = x2 sqrt_s / 2 (1, 0, 0, -1)``.
    """
    x1, x2, sqrt_s = jnp.asarray(x1), jnp.asarray(x2), jnp.asarray(sqrt_s)
    ea, eb = x1 * sqrt_s / 2.0, x2 * sqrt_s / 2.0
    za, zb = jnp.zeros_like(ea), jnp.zeros_like(eb)
    pa = jnp.stack([ea, za, za, ea], axis=-1)
    pb = jnp.stack([eb, zb, zb, -eb], axis=-1)
    return jnp.stack([pa, pb], axis=-2)


@dataclasses.dataclass(frozen=True)
class LuminosityMap:
    """``r [2] -> x = (x1, x2)`` with ``dx1 dx2 = dtau dy`` (see the module docstring).

    Attributes:
        s_hat_map: propagator map for ``s_hat = tau S`` (``UniformMap()`` by default).

    ``cond`` keys: ``"sqrt_s"`` (hadronic CM energy), exactly one of ``"s_hat_min"`` or
    ``"tau_min"``, and the keys of ``s_hat_map`` (``"mass"``, ``"width"`` for a Breit-Wigner,
    ``"nu"`` for a power law). Invalid input (``s_hat_min`` outside ``[0, S)``, ``x`` outside
    ``(0, 1]``) gives log weight ``-inf`` and finite outputs.
    """

    s_hat_map: object = dataclasses.field(default_factory=UniformMap)
    n_random = 2

    def __post_init__(self):
        if getattr(self.s_hat_map, "n_random", None) != 1 or not hasattr(self.s_hat_map,
                                                                        "transform"):
            raise ValueError(
                f"s_hat_map must be a propagator map with n_random = 1, got {self.s_hat_map!r}")

    def sample(self, r: ArrayLike, cond: Cond) -> tuple[Array, Array, Array, Array, Array]:
        """``(x1, x2, s_hat, y, log_weight)`` for ``r [2]``; ``y`` is the partonic rapidity."""
        r = check_r(r, 2, "LuminosityMap")
        big_s, s_min = _s_hat_min(cond)
        ok = (s_min >= 0) & (s_min < big_s)
        s_hat, log_ds = self.s_hat_map.transform(r[0], s_min, big_s, cond)
        # log(tau) <= 0 by construction; the clip only removes rounding above s_hat = S.
        log_tau = jnp.minimum(safe_log(s_hat) - jnp.log(big_s), 0.0)
        log_tau_fin = jnp.where(log_tau > -jnp.inf, log_tau, 0.0)
        x1 = jnp.exp((1.0 - r[1]) * log_tau_fin)
        x2 = jnp.exp(r[1] * log_tau_fin)
        y = (0.5 - r[1]) * log_tau_fin
        log_w = log_ds - jnp.log(big_s) + safe_log(-log_tau)
        return x1, x2, s_hat, y, jnp.where(ok, log_w, -jnp.inf)

    def forward(self, r: ArrayLike, cond: Cond) -> tuple[Array, Array]:
        """``r [2] -> (x [2] = (x1, x2), log(dx1 dx2 / dr))``."""
        x1, x2, _, _, log_w = self.sample(r, cond)
        return jnp.stack([x1, x2]), log_w

    def inverse(self, x: ArrayLike, cond: Cond) -> tuple[Array, Array]:
        """``x [2] -> (r [2], -log(dx1 dx2 / dr))``."""
        x = check_r(x, 2, "LuminosityMap.inverse")
        big_s, s_min = _s_hat_min(cond)
        ok = (s_min >= 0) & (s_min < big_s) & jnp.all((x > 0) & (x <= 1))
        x = jnp.where(ok, x, 0.5)
        log_x1, log_x2 = jnp.log(x[0]), jnp.log(x[1])
        log_tau = log_x1 + log_x2
        r1 = jnp.where(log_tau < 0, safe_div(log_x2, log_tau), 0.5)
        s_hat = jnp.exp(log_tau) * big_s
        r0, log_ds_inv = self.s_hat_map.inverse_transform(s_hat, s_min, big_s, cond)
        log_w = log_ds_inv + jnp.log(big_s) - safe_log(-log_tau)
        return jnp.stack([r0, r1]), jnp.where(ok, log_w, -jnp.inf)


__all__ = ["LuminosityMap", "parton_momenta"]
