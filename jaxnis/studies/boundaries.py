r"""Cuts with parameter-dependent boundaries: the bias of pathwise gradients and remedies.

A cut ``1[v(x) in [lo, hi]]`` whose edge moves in ``r`` when ``theta`` changes (a threshold
that is a parameter, or a fixed threshold on a variable that moves with ``theta`` at fixed
``r``) is piecewise constant in ``theta`` at fixed ``r``: the pathwise gradient of
:mod:`jaxnis.studies.core` sees no change as events cross the edge and misses the boundary
term ``oint w v_n dS``. Three ways to build the integrand:

* :func:`window` with ``width=None``: the hard cut. Values are right; pathwise gradients
  with respect to anything that moves the edge are **biased** (the boundary term is lost).
* :func:`restrict` / :func:`mass_window`: map the unit interval of one coordinate onto the
  cut region, ``r_k = lo(theta) + (hi(theta) - lo(theta)) u_k`` with the Jacobian
  ``hi - lo``. The support in ``u`` is then ``[0, 1]`` for every ``theta`` and the pathwise
  gradient is **unbiased**; the boundary term is carried by the derivative of the Jacobian
  and of ``r_k(u)``. Needs a coordinate in which the cut is an interval (``cos theta`` of a
  two-body decay, ``s_hat`` of a luminosity map).
* :func:`window` with a ``width``: the indicator is replaced by logistic steps
  ``sigma((v - lo)/tau) sigma((hi - v)/tau)``. The pathwise gradient is unbiased for the
  **smoothed** integral, which differs from the sharp one: with ``g(v)`` the density of
  ``v`` (``d sigma / dv``), each edge shifts the value by ``(pi^2 tau^2 / 6) g'(edge)``
  (``pi^2 tau^2 / 3`` is the logistic variance) and the edge derivative by
  ``(pi^2 tau^2 / 6) g''(edge)``, both ``O(tau^2)``; the gradient's variance grows like
  ``1 / tau`` (events within ``tau`` of the edge carry the whole boundary term).
  :func:`smoothing_bias` gives the leading bias for a known ``g''``.

Bounds and widths are traced: give a parameter name (``"cos_max"``) or a callable of the
parameters.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxnis import kinematics as kin
from jaxnis.numerics import safe_log
from jaxnis.physics import parameters as pp
from jaxnis.studies.core import Integrand, as_integrand, params_dtype
from jaxnis.types import Array, ArrayLike, Params

#: A traced quantity: a parameter name or ``f(params) -> []``.
Spec = str | Callable[[Params], Array] | None


def _value(spec: Spec, params: Params, dtype) -> Array | None:
    if spec is None:
        return None
    value = params[spec] if isinstance(spec, str) else spec(params)
    return jnp.asarray(value, dtype=dtype)


def smooth_step(x: ArrayLike, width: ArrayLike) -> Array:
    """Logistic step ``1 / (1 + exp(-x / width))``, ``[...]``; ``width > 0`` traced."""
    x = jnp.asarray(x)
    return jax.nn.sigmoid(x / jnp.asarray(width, dtype=x.dtype))


def window_factor(value: ArrayLike, lo: ArrayLike | None = None, hi: ArrayLike | None = None,
                  width: ArrayLike | None = None) -> Array:
    """``1[lo <= value <= hi]`` (``width=None``) or its logistic smoothing, ``[...]``.

    ``None`` bounds are open. The smooth version is ``sigma((value - lo)/width) *
    sigma((hi - value)/width)``.
    """
    value = jnp.asarray(value)
    one = jnp.ones_like(value)
    if width is None:
        passed = jnp.ones(value.shape, bool)
        if lo is not None:
            passed = passed & (value >= lo)
        if hi is not None:
            passed = passed & (value <= hi)
        return jnp.where(passed, one, 0.0)
    out = one
    if lo is not None:
        out = out * smooth_step(value - lo, width)
    if hi is not None:
        out = out * smooth_step(hi - value, width)
    return out


def smoothing_bias(g2_at_edges: ArrayLike, width: ArrayLike) -> Array:
    """Leading bias ``(pi^2 width^2 / 6) g''(edge)`` of a logistic-smoothed edge derivative.

    For the derivative of ``int g(v) 1[v > c] dv`` with respect to the edge ``c``; the same
    factor times ``g'(edge)`` is the bias of the smoothed value.
    """
    width = jnp.asarray(width)
    return math.pi**2 * width * width / 6.0 * jnp.asarray(g2_at_edges)


@dataclasses.dataclass(frozen=True)
class Windowed(Integrand):
    """``base`` times a (hard or smoothed) window on ``observable(event, params)``."""

    base: Integrand
    observable: Callable[[Any, Params], Array]
    lo: Spec = None
    hi: Spec = None
    width: Spec = None

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def n_channels(self) -> int:
        return self.base.n_channels

    @property
    def process(self) -> Any:
        return self.base.process

    def weight_and_event(self, r, params, channel):
        w, event = self.base.weight_and_event(r, params, channel)
        dtype = w.dtype
        v = self.observable(event, params)
        factor = window_factor(v, _value(self.lo, params, dtype), _value(self.hi, params, dtype),
                               _value(self.width, params, dtype))
        return w * factor, event

    def log_f(self, event, params):
        dtype = event.momenta.dtype
        v = self.observable(event, params)
        factor = window_factor(v, _value(self.lo, params, dtype), _value(self.hi, params, dtype),
                               _value(self.width, params, dtype))
        return self.base.log_f(event, params) + safe_log(factor)


def window(integrand: Any, observable: Callable[[Any, Params], Array], lo: Spec = None,
           hi: Spec = None, width: Spec = None) -> Windowed:
    """Cut ``lo <= observable(event, params) <= hi`` on a process integrand.

    ``width=None`` is the hard cut (pathwise gradients miss the boundary term when the edge
    moves in ``r``); a width smooths it with logistic steps (bias ``O(width^2)``, see the
    module docstring). ``lo``, ``hi``, ``width``: parameter names or callables, or ``None``.
    """
    integrand = as_integrand(integrand)
    if integrand.process is None:
        raise ValueError("window needs an integrand with events (a process)")
    return Windowed(integrand, observable, lo, hi, width)


@dataclasses.dataclass(frozen=True)
class Restricted(Integrand):
    """``base`` with coordinate ``axis`` mapped onto ``[lo, hi]``: ``r_k = lo + (hi - lo) u_k``.

    ``bounds(params, channel) -> (lo, hi)`` in ``[0, 1]`` (``channel`` a static int or
    traced); the weight gains the Jacobian ``hi - lo`` (0 for an empty interval).
    """

    base: Integrand
    axis: int
    bounds: Callable[[Params, Any], tuple[Array, Array]]
    contains: Callable[[Any, Params], Array] | None = None

    def __post_init__(self):
        if not isinstance(self.axis, int) or not 0 <= self.axis < self.base.dim:
            raise ValueError(f"axis {self.axis!r} out of range for dim {self.base.dim}")

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def n_channels(self) -> int:
        return self.base.n_channels

    @property
    def process(self) -> Any:
        return self.base.process

    def weight_and_event(self, r, params, channel):
        lo, hi = self.bounds(params, channel)
        lo, hi = jnp.asarray(lo, r.dtype), jnp.asarray(hi, r.dtype)
        span = jnp.maximum(hi - lo, 0.0)
        r = r.at[self.axis].set(lo + span * r[self.axis])
        w, event = self.base.weight_and_event(r, params, channel)
        return w * span, event

    def log_f(self, event, params):
        log_f = self.base.log_f(event, params)
        if self.contains is None:
            return log_f
        return jnp.where(self.contains(event, params), log_f, -jnp.inf)


def restrict(integrand: Any, axis: int,
             bounds: Callable[[Params, Any], tuple[ArrayLike, ArrayLike]],
             contains: Callable[[Any, Params], ArrayLike] | None = None) -> Restricted:
    """Map ``r[axis]`` onto ``[lo, hi] = bounds(params, channel)`` (the remedy for a cut that
    is an interval in that coordinate: the support becomes ``theta``-independent).

    ``contains(event, params) -> bool`` states the cut on events, for reweighting
    (:meth:`Integrand.log_f`); without it ``log_f`` is that of the unrestricted integrand.

    Example (``e+e- -> f fbar``, ``r[0] = (1 + cos theta) / 2``, cut ``|cos| <= cos_max``)::

        cut = restrict(proc, 0, lambda p, c: ((1 - p["cos_max"]) / 2, (1 + p["cos_max"]) / 2))
    """
    integrand = as_integrand(integrand)
    return Restricted(integrand, axis, bounds, contains)


@dataclasses.dataclass(frozen=True)
class _MassWindowBounds:
    """``r[0]`` interval of ``s_hat in [lo^2, hi^2]`` for each luminosity-map channel."""

    proc: Any
    lo: Spec
    hi: Spec

    def _one(self, c: int, params: Params) -> tuple[Array, Array]:
        chmap = self.proc.channel_maps[c]
        dtype = params_dtype(params)
        params = pp.cast_params(params, dtype)
        cond = self.proc.cond(params)
        big_s = cond["sqrt_s"] ** 2
        s_min = cond["s_hat_min"]
        s_map = chmap.luminosity.s_hat_map
        lo = _value(self.lo, params, dtype)
        hi = _value(self.hi, params, dtype)
        s_lo = s_min if lo is None else jnp.clip(lo * lo, s_min, big_s)
        s_hi = big_s if hi is None else jnp.clip(hi * hi, s_min, big_s)
        r_lo = s_map.inverse_transform(s_lo, s_min, big_s, cond)[0]
        r_hi = s_map.inverse_transform(s_hi, s_min, big_s, cond)[0]
        return jnp.clip(r_lo, 0.0, 1.0), jnp.clip(r_hi, 0.0, 1.0)

    def contains(self, event: Any, params: Params) -> Array:
        """``lo <= sqrt(s_hat) <= hi`` for an event (``s_hat`` from the incoming partons)."""
        dtype = event.momenta.dtype
        m = kin.mass(event.momenta[0] + event.momenta[1])
        lo, hi = _value(self.lo, params, dtype), _value(self.hi, params, dtype)
        return window_factor(m, lo, hi) > 0

    def __call__(self, params: Params, channel) -> tuple[Array, Array]:
        if isinstance(channel, int):
            return self._one(channel, params)
        branches = [lambda p, c=c: self._one(c, p) for c in range(self.proc.n_channels)]
        return jax.lax.switch(channel, branches, params)


def mass_window(process: Any, lo: Spec = None, hi: Spec = None) -> Restricted:
    """A hadronic process restricted to ``lo <= m_ll = sqrt(s_hat) <= hi`` by its maps.

    Every channel's luminosity map samples ``s_hat`` through ``r[0]``; the window is mapped
    onto ``r[0]`` with that channel's (parameter-dependent) propagator map, so a Breit-Wigner
    map following ``M_Z'`` keeps a fixed window fixed in ``s_hat`` and the pathwise gradient
    stays unbiased. ``lo``/``hi``: parameter names or callables (GeV), ``None`` for the
    process's own range.

    Raises:
        ValueError: if the process's channels have no luminosity map.
    """
    for chmap in process.channel_maps:
        if not hasattr(getattr(chmap, "luminosity", None), "s_hat_map"):
            raise ValueError(f"mass_window needs luminosity-map channels; {process!r} has "
                             f"{type(chmap).__name__}")
    bounds = _MassWindowBounds(process, lo, hi)
    return Restricted(as_integrand(process), 0, bounds, bounds.contains)


__all__ = [
    "Restricted",
    "Windowed",
    "mass_window",
    "restrict",
    "smooth_step",
    "smoothing_bias",
    "window",
    "window_factor",
]
