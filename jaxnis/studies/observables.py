"""Observables of process events (one event; ``vmap`` for a batch).

Events are :class:`jaxnis.physics.processes.Event` (momenta ``[2 + n_out, 4]``, beams
first). These functions take ``(event, params)`` so they can be used as cut or histogram
variables in :mod:`jaxnis.studies`.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jaxnis import kinematics as kin
from jaxnis.numerics import safe_div
from jaxnis.types import Array, Params


def pair_mass(event: Any, params: Params | None = None, pair: tuple[int, int] = (2, 3)) -> Array:
    """Invariant mass ``[]`` (GeV) of two outgoing rows (default the first two, e.g. m_ll)."""
    p = event.momenta
    return kin.mass(p[pair[0]] + p[pair[1]])


def cos_theta_star(event: Any, params: Params | None = None,
                   pair: tuple[int, int] = (2, 3)) -> Array:
    """``cos theta*`` ``[]`` of row ``pair[0]`` (the fermion, e.g. ``l-``) relative to ``+z``
    (the first beam) in the frame where the pair has no longitudinal momentum.

    For a pair without transverse momentum (``e+e-``, Drell-Yan at leading order) this is
    the angle in the pair's rest frame; for ``e+e- -> f fbar`` it is the angle between the
    fermion and the ``e-``.
    """
    p = event.momenta
    pair_p = p[pair[0]] + p[pair[1]]
    plus, minus = pair_p[0] + pair_p[3], pair_p[0] - pair_p[3]
    # rapidity 0.5 log((E + pz) / (E - pz)); both are > 0 for a massive pair, and a
    # degenerate (zero-weight) event gets y = 0 with finite gradients (double where)
    ok = (plus > 0) & (minus > 0)
    y = jnp.where(ok, 0.5 * jnp.log(jnp.where(ok, plus, 1.0) / jnp.where(ok, minus, 1.0)), 0.0)
    q = kin.boost_z(p[pair[0]], -y)
    return safe_div(q[3], kin.momentum(q))


def abs_cos_theta_star(event: Any, params: Params | None = None,
                       pair: tuple[int, int] = (2, 3)) -> Array:
    """``|cos theta*|`` of :func:`cos_theta_star`."""
    return jnp.abs(cos_theta_star(event, params, pair))


__all__ = ["abs_cos_theta_star", "cos_theta_star", "pair_mass"]
