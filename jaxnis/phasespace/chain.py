"""Chained phase-space maps: s-channel decay trees and hadronic channels, each ONE map.

A :class:`DecayTree` factorises n-body phase space along a binary tree of two-body decays,
``dPhi_n(P; p_1..p_n) = dPhi_j(q; p_1..p_j) dPhi_{n-j+1}(P; q, p_{j+1}..p_n) dq^2 / (2 pi)``,
drawing the invariant mass of every intermediate node with a propagator map (Breit-Wigner
for a resonance, uniform by default) and every splitting with
:func:`~jaxnis.phasespace.decays.two_body_decay`. The weight is the product of the pieces,
so its Monte Carlo mean is the n-body volume whatever the propagators are.

A :class:`HadronicChannel` chains a :class:`~jaxnis.phasespace.luminosity.LuminosityMap`
(``x1, x2``, optionally Breit-Wigner mapped ``s_hat``) with a partonic map evaluated in the
partonic CM frame (a :class:`DecayTree` or a :class:`~jaxnis.phasespace.decays.TChannelMap`)
and a longitudinal boost to the lab (:func:`jaxnis.kinematics.boost_z`).

Example (``q qbar -> Z' -> l+ l-`` at the LHC, Breit-Wigner on ``s_hat``)::

    channel = HadronicChannel(LuminosityMap(BreitWignerMap()), DecayTree((0, 1)))
    cond = {"sqrt_s": 13000.0, "s_hat_min": 500.0**2, "mass": 3000.0, "width": 90.0,
            "masses": jnp.zeros(2)}
    event, log_w = channel.forward(jnp.array([0.5, 0.3, 0.2, 0.9]), cond)
    event.momenta  # [2, 4] lab frame; event.x1, event.x2: momentum fractions
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxnis import kinematics as kin
from jaxnis.numerics import safe_sqrt
from jaxnis.phasespace.decays import (
    _check_momenta,
    _masses,
    beams,
    parent_momentum,
    two_body_decay,
    two_body_decay_inverse,
)
from jaxnis.phasespace.luminosity import LuminosityMap
from jaxnis.phasespace.propagators import UniformMap, check_r
from jaxnis.types import Array, ArrayLike, Cond

_LOG_2PI = math.log(2.0 * math.pi)


class HadronicEvent(NamedTuple):
    """One event of a hadronic channel.

    Attributes:
        momenta: ``[n, 4]`` outgoing momenta in the lab (hadronic CM) frame.
        x1: ``[]`` momentum fraction of the parton from the beam along ``+z``.
        x2: ``[]`` momentum fraction of the parton from the beam along ``-z``.

    The incoming partons are ``parton_momenta(x1, x2, sqrt_s)`` (massless, along the beams).
    """

    momenta: Array
    x1: Array
    x2: Array


def _leaves(node) -> tuple[int, ...]:
    return (node,) if isinstance(node, int) else _leaves(node[0]) + _leaves(node[1])


def _normalise(node, where: str):
    if isinstance(node, bool) or not isinstance(node, int | tuple | list):
        raise ValueError(f"topology node {node!r} at {where} is neither an int nor a pair")
    if isinstance(node, int):
        return node
    if len(node) != 2:
        raise ValueError(f"topology node {node!r} at {where} must have exactly two children")
    return (_normalise(node[0], where + "[0]"), _normalise(node[1], where + "[1]"))


def _internal(node) -> list:
    if isinstance(node, int):
        return []
    return [node, *_internal(node[0]), *_internal(node[1])]


@dataclasses.dataclass(frozen=True)
class DecayTree:
    """s-channel decay tree ``P -> ... -> p_0 .. p_{n-1}`` as one map, ``n_random = 3n - 4``.

    Args:
        topology: nested pairs of final-state indices, e.g. ``(0, 1)`` (a two-body decay),
            ``((0, 1), 2)`` (``P -> (Z -> 0 1) 2``), ``((0, 1), (2, 3))``. Every index
            ``0..n-1`` appears exactly once.
        propagators: mapping (or sequence of pairs) from an intermediate node (a sub-tuple of
            ``topology``) to the propagator map of its invariant mass squared; other nodes
            use :class:`~jaxnis.phasespace.propagators.UniformMap`. Give each resonance its
            own ``cond`` keys (``BreitWignerMap("mass_z", "width_z")``).

    Random numbers are read depth first: at each node, first one per intermediate child (its
    ``s``; the first child in ``[(sum m)^2, (M - sum m_sibling)^2]``, the second in
    ``[(sum m)^2, (M - M_first)^2]``), then two for the decay angles of the node (see
    :func:`~jaxnis.phasespace.decays.two_body_decay`), then the first child's subtree, then
    the second's. Each intermediate node contributes ``(ds/dr) / (2 pi)`` to the weight.

    ``cond`` keys: ``"masses"`` ``[n]``; ``"parent"`` ``[4]`` (any frame) or ``"sqrt_s"``
    (parent at rest); and the keys of the propagators. ``forward`` returns momenta ``[n, 4]``
    in the frame of the parent.
    """

    topology: object
    propagators: object = ()

    def __post_init__(self):
        topology = _normalise(self.topology, "topology")
        if isinstance(topology, int):
            raise ValueError(f"topology {self.topology!r} must be a pair, not a single index")
        leaves = _leaves(topology)
        if sorted(leaves) != list(range(len(leaves))):
            raise ValueError(f"topology {self.topology!r} must use each index 0..n-1 exactly "
                             f"once, got {leaves}")
        items = self.propagators.items() if isinstance(self.propagators, dict) else \
            self.propagators
        props = []
        inner = _internal(topology)[1:]
        for node, prop in items:
            node = _normalise(node, "propagators")
            if node not in inner:
                raise ValueError(f"propagator node {node!r} is not an intermediate node of "
                                 f"{topology!r} (one of {inner})")
            if getattr(prop, "n_random", None) != 1 or not hasattr(prop, "transform"):
                raise ValueError(f"propagator for {node!r} must be a propagator map, got {prop!r}")
            props.append((node, prop))
        object.__setattr__(self, "topology", topology)
        object.__setattr__(self, "propagators", tuple(props))

    @property
    def n_particles(self) -> int:
        """Number of final-state particles ``n``."""
        return len(_leaves(self.topology))

    @property
    def n_random(self) -> int:
        """``3 n - 4``: ``n - 2`` invariant masses and ``2 (n - 1)`` angles."""
        return 3 * self.n_particles - 4

    def _propagator(self, node):
        for key, prop in self.propagators:
            if key == node:
                return prop
        return UniformMap()

    def _min_mass(self, node, masses: Array) -> Array:
        return sum(masses[i] for i in _leaves(node))

    # ---- forward -----------------------------------------------------------------------
    def forward(self, r: ArrayLike, cond: Cond) -> tuple[Array, Array]:
        """``r [3n - 4] -> (momenta [n, 4], log_weight [])`` in the frame of the parent."""
        r = check_r(r, self.n_random, f"DecayTree{self.topology}")
        masses = _masses(cond, self.n_particles, f"DecayTree{self.topology}")
        parent = parent_momentum(cond, "DecayTree")
        m_parent = kin.mass(parent) if "parent" in cond else parent[0]
        return self.forward_parent(r, parent, m_parent, masses, cond)

    def forward_incoming(self, r: Array, pa: ArrayLike, pb: ArrayLike,
                         cond: Cond) -> tuple[Array, Array]:
        """Forward map for the decay of ``P = pa + pb`` (used by :class:`HadronicChannel`)."""
        masses = _masses(cond, self.n_particles, "DecayTree")
        parent = jnp.asarray(pa) + jnp.asarray(pb)
        return self.forward_parent(r, parent, kin.mass(parent), masses, cond)

    def forward_parent(self, r: Array, parent: Array, m_parent: Array, masses: Array,
                       cond: Cond) -> tuple[Array, Array]:
        """Forward map for a parent momentum ``[4]`` of known mass ``m_parent``."""
        out: dict[int, Array] = {}
        log_w, pos = self._forward_node(self.topology, r, 0, parent, m_parent, masses, cond, out)
        assert pos == self.n_random
        return jnp.stack([out[i] for i in range(self.n_particles)]), log_w

    def _forward_node(self, node, r, pos, p, m, masses, cond, out):
        children = node
        child_m = []
        log_w = jnp.zeros((), dtype=r.dtype)
        for i, child in enumerate(children):
            if isinstance(child, int):
                child_m.append(masses[child])
                continue
            lo = self._min_mass(child, masses)
            # First child: leave room for the sibling's lightest mass; second: for the first.
            other = child_m[0] if i == 1 else self._min_mass(children[1], masses)
            hi = m - other
            s, log_ds = self._propagator(child).transform(r[pos], lo * lo,
                                                          jnp.maximum(hi, 0.0) ** 2, cond)
            pos += 1
            child_m.append(safe_sqrt(s))
            log_w = log_w + log_ds - _LOG_2PI
        pair, log_2 = two_body_decay(r[pos:pos + 2], p, child_m[0], child_m[1], m)
        pos += 2
        log_w = log_w + log_2
        for child, pc, mc in zip(children, pair, child_m, strict=True):
            if isinstance(child, int):
                out[child] = pc
            else:
                lw, pos = self._forward_node(child, r, pos, pc, mc, masses, cond, out)
                log_w = log_w + lw
        return log_w, pos

    # ---- inverse -----------------------------------------------------------------------
    def inverse(self, momenta: ArrayLike, cond: Cond) -> tuple[Array, Array]:
        """``momenta [n, 4] -> (r [3n - 4], -log_weight)``."""
        momenta = _check_momenta(momenta, self.n_particles, "DecayTree")
        masses = _masses(cond, self.n_particles, "DecayTree")
        parent = parent_momentum(cond, "DecayTree")
        m_parent = kin.mass(parent) if "parent" in cond else parent[0]
        return self.inverse_parent(momenta, m_parent, masses, cond)

    def inverse_incoming(self, momenta: Array, pa: ArrayLike, pb: ArrayLike,
                         cond: Cond) -> tuple[Array, Array]:
        """Inverse of :meth:`forward_incoming`."""
        masses = _masses(cond, self.n_particles, "DecayTree")
        return self.inverse_parent(momenta, kin.mass(jnp.asarray(pa) + jnp.asarray(pb)),
                                   masses, cond)

    def inverse_parent(self, momenta: Array, m_parent: Array, masses: Array,
                       cond: Cond) -> tuple[Array, Array]:
        """Inverse for a parent of mass ``m_parent`` (the momenta fix its frame)."""
        pieces: list[Array] = []
        log_w = self._inverse_node(self.topology, momenta, m_parent, masses, cond, pieces)
        return jnp.concatenate(pieces), log_w

    def _inverse_node(self, node, momenta, m, masses, cond, pieces):
        children = node
        sums = [jnp.sum(momenta[np.asarray(_leaves(c))], axis=0) for c in children]
        child_m = []
        log_w = jnp.zeros((), dtype=momenta.dtype)
        for i, child in enumerate(children):
            if isinstance(child, int):
                child_m.append(masses[child])
                continue
            lo = self._min_mass(child, masses)
            other = child_m[0] if i == 1 else self._min_mass(children[1], masses)
            s = kin.mass_squared(sums[i])
            r_s, log_ds = self._propagator(child).inverse_transform(
                s, lo * lo, jnp.maximum(m - other, 0.0) ** 2, cond)
            pieces.append(r_s[None])
            child_m.append(safe_sqrt(s))
            log_w = log_w + log_ds + _LOG_2PI
        r2, log_2 = two_body_decay_inverse(jnp.stack(sums), child_m[0], child_m[1])
        pieces.append(r2)
        log_w = log_w + log_2
        for child, mc in zip(children, child_m, strict=True):
            if not isinstance(child, int):
                log_w = log_w + self._inverse_node(child, momenta, mc, masses, cond, pieces)
        return log_w


@dataclasses.dataclass(frozen=True)
class HadronicChannel:
    """Luminosity map + partonic map in the partonic CM frame + boost to the lab, as one map.

    ``r = [r_luminosity (2), r_partonic (partonic.n_random)]``. Forward: ``(x1, x2, s_hat, y)``
    from ``luminosity``; the partonic map produces the final state for massless partons
    ``sqrt(s_hat) / 2 (1, 0, 0, +-1)``; ``boost_z`` by ``y = log(x1 / x2) / 2`` takes it to the
    lab. The log weight is ``log(dx1 dx2 dPhi_n / dr)`` (parton densities, flux and matrix
    element belong to the integrand).

    Args:
        luminosity: a :class:`~jaxnis.phasespace.luminosity.LuminosityMap`.
        partonic: a map with ``n_random``, ``forward_incoming(r, pa, pb, cond)`` and
            ``inverse_incoming(momenta, pa, pb, cond)`` (:class:`DecayTree`,
            :class:`~jaxnis.phasespace.decays.TChannelMap`).

    ``cond`` keys: those of ``luminosity`` (``"sqrt_s"`` is the hadronic energy) plus those
    of ``partonic`` other than ``"sqrt_s"``/``"parent"``/``"incoming"`` (e.g. ``"masses"``).
    ``forward`` returns ``(HadronicEvent, log_weight)``; ``inverse`` takes a
    :class:`HadronicEvent`.
    """

    luminosity: LuminosityMap
    partonic: object

    def __post_init__(self):
        if not isinstance(self.luminosity, LuminosityMap):
            raise ValueError(f"luminosity must be a LuminosityMap, got {self.luminosity!r}")
        for attr in ("n_random", "forward_incoming", "inverse_incoming"):
            if not hasattr(self.partonic, attr):
                raise ValueError(f"partonic map {self.partonic!r} lacks {attr!r}")

    @property
    def n_random(self) -> int:
        """``2 + partonic.n_random``."""
        return self.luminosity.n_random + self.partonic.n_random

    def forward(self, r: ArrayLike, cond: Cond) -> tuple[HadronicEvent, Array]:
        """``r [n_random] -> (HadronicEvent, log_weight [])``."""
        r = check_r(r, self.n_random, "HadronicChannel")
        x1, x2, _, y, log_lum = self.luminosity.sample(r[:2], cond)
        # Use x1 x2 S (not the mapped s_hat) so forward and inverse see the same energy.
        sqrt_s = jnp.asarray(cond["sqrt_s"])
        pa, pb = beams(jnp.sqrt(x1 * x2) * sqrt_s)
        momenta, log_part = self.partonic.forward_incoming(r[2:], pa, pb, cond)
        return HadronicEvent(kin.boost_z(momenta, y), x1, x2), log_lum + log_part

    def inverse(self, event: HadronicEvent, cond: Cond) -> tuple[Array, Array]:
        """``HadronicEvent -> (r [n_random], -log_weight)``."""
        x1, x2 = jnp.asarray(event.x1), jnp.asarray(event.x2)
        r_lum, log_lum = self.luminosity.inverse(jnp.stack([x1, x2]), cond)
        x1s = jnp.where((x1 > 0) & (x2 > 0), x1, 1.0)
        x2s = jnp.where((x1 > 0) & (x2 > 0), x2, 1.0)
        y = 0.5 * (jnp.log(x1s) - jnp.log(x2s))
        pa, pb = beams(jnp.sqrt(x1s * x2s) * jnp.asarray(cond["sqrt_s"]))
        momenta = kin.boost_z(jnp.asarray(event.momenta), -y)
        r_part, log_part = self.partonic.inverse_incoming(momenta, pa, pb, cond)
        return jnp.concatenate([r_lum, r_part]), log_lum + log_part


__all__ = ["DecayTree", "HadronicChannel", "HadronicEvent"]
