r"""Process integrands on the unit hypercube: phase-space channels + |M|^2 + flux + PDFs + cuts.

A process composes, for one event,

    r in [0, 1]^d  --channel map c-->  momenta (and x1, x2),  log J_c(r)
    f(x) = (PDFs) * |M|^2 / (2 s_hat) * cuts * GEV2_TO_PB       (pb per unit phase space)

so that ``E_r[f(x(r)) J_c(r)]`` over uniform ``r`` is the cross section in pb. Multi-channel
processes have one map per resonance or topology and prior channel weights ``alpha_c(x)``
from single-diagram enhancement (``|M_c|^2 / sum_j |M_j|^2``, Maltoni & Stelzer,
hep-ph/0208156); then ``sigma = sum_c E_r[alpha_c f J_c]``. Everything is traced in the
parameter pytree (physics parameters of :mod:`jaxnis.physics.parameters` plus the process
settings: energy, cuts, propagator-map exponents), so ``jax.grad`` of a cross-section
estimate reaches masses, widths and couplings *through the phase-space map and the matrix
element*.

Every process offers (``r`` ``[dim]``, one event; batch with ``jax.vmap``):

* ``default_params(dtype=None, **overrides)``: physics defaults + settings.
* ``integrand(r, params, channel=0)``: ``alpha_c f J_c`` in pb (``alpha = 1`` for one channel);
  ``log_integrand`` its log (``-inf`` where cut).
* ``event(r, params, channel)``: ``(Event, log J_c)``; ``inverse(event, params, channel)``.
* ``log_f(event, params)``, ``log_prior(event, params)`` ``[C]`` (normalised).
* ``multichannel()``: a :class:`jaxnis.channels.MultiChannelIntegrand` (traced channel index).
* ``channel_maps``, ``channel_names``, ``dim``, ``n_channels``.

Processes: :class:`EEToFFbar` (``e+e- -> mu+mu-`` or ``q qbar``, one channel),
:class:`EEToQQG` (three jets, two collinear channels), :class:`DrellYan` (``p p -> l+ l-``
through photon, Z and Z', three channels), :class:`EEToMuMuGamma` (radiative return to the Z
and Z' plus final-state radiation, five channels).

Example:
    >>> import jax, jax.numpy as jnp
    >>> proc = EEToFFbar("mu")
    >>> params = proc.default_params(sqrt_s=91.188)
    >>> r = jax.random.uniform(jax.random.key(0), (4096, proc.dim))
    >>> sigma = jax.vmap(proc.integrand, in_axes=(0, None))(r, params).mean()  # ~2099 pb
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnis import kinematics as kin
from jaxnis.channels import ChannelEval, MultiChannelIntegrand, normalise_log_weights
from jaxnis.numerics import is_concrete, safe_div, safe_log
from jaxnis.phasespace.chain import DecayTree, HadronicChannel, HadronicEvent
from jaxnis.phasespace.decays import beams
from jaxnis.phasespace.luminosity import LuminosityMap, parton_momenta
from jaxnis.phasespace.propagators import BreitWignerMap, PowerLawMap
from jaxnis.physics import cross_sections as xs
from jaxnis.physics import matrix_elements as me
from jaxnis.physics import parameters as pp
from jaxnis.physics import pdf as pdfs
from jaxnis.types import Array, ArrayLike, Params


class Event(NamedTuple):
    """One event of a process.

    Attributes:
        momenta: ``[2 + n_out, 4]`` incoming then outgoing momenta (lab frame), in the row
            order of the process's matrix element.
        x1, x2: ``[]`` momentum fractions of the incoming partons (1 at lepton colliders).
    """

    momenta: Array
    x1: Array
    x2: Array


class _Process:
    """Shared machinery; subclasses define ``SETTINGS``, ``_maps``, ``_names``, ``_log_f`` and
    (multi-channel) ``_log_prior``."""

    #: name -> default value of the traced process settings
    SETTINGS: dict[str, float] = {}
    hadronic = False

    # ---- static structure --------------------------------------------------------------
    @property
    def channel_maps(self) -> tuple:
        return self._maps()

    @property
    def channel_names(self) -> tuple[str, ...]:
        return self._names()

    @property
    def n_channels(self) -> int:
        return len(self._names())

    @property
    def dim(self) -> int:
        return self._maps()[0].n_random

    @property
    def n_out(self) -> int:
        maps = self._maps()
        tree = maps[0].partonic if self.hadronic else maps[0]
        return tree.n_particles

    # ---- parameters --------------------------------------------------------------------
    def default_params(self, dtype=None, **overrides: float) -> dict[str, Array]:
        """Physics defaults (:func:`~jaxnis.physics.parameters.default_params`) plus this
        process's settings, with ``overrides`` applied; raises ``ValueError`` naming an
        unknown key or an invalid setting."""
        settings = {k: v for k, v in overrides.items() if k in self.SETTINGS}
        physics = {k: v for k, v in overrides.items() if k not in self.SETTINGS}
        params = pp.default_params(dtype, **physics)
        values = {**self.SETTINGS, **settings}
        self._validate_settings(values)
        dtype = next(iter(params.values())).dtype
        return {**params, **{k: jnp.asarray(v, dtype=dtype) for k, v in values.items()}}

    def _validate_settings(self, values: dict[str, float]) -> None:
        for key in ("sqrt_s",):
            if key in values and not values[key] > 0:
                raise ValueError(f"setting {key} = {values[key]} must be positive")

    def check_params(self, params: Params) -> None:
        """``ValueError`` naming a missing key or, for concrete values, an invalid one
        (:func:`~jaxnis.physics.parameters.validate_params`, and this process's settings
        when none of them is traced); traced values pass. Other keys are carried along
        unread (the limits of :mod:`jaxnis.studies` windows live there), so a misspelt
        key is not caught here: :meth:`default_params` refuses unknown overrides."""
        missing = [k for k in self.SETTINGS if k not in params]
        if missing:
            raise ValueError(f"{type(self).__name__} needs params {missing}; use "
                             "default_params()")
        pp.validate_params(params)
        if all(is_concrete(params[k]) for k in self.SETTINGS):
            self._validate_settings({k: float(np.asarray(params[k])) for k in self.SETTINGS})

    def _cast(self, params: Params, dtype) -> Params:
        self.check_params(params)
        return pp.cast_params(params, dtype)

    def cond(self, params: Params) -> dict:
        """The traced ``cond`` of the channel maps (parameters + massless final state)."""
        dtype = params["sqrt_s"].dtype
        return {**params, "masses": jnp.zeros(self.n_out, dtype)}

    # ---- maps ----------------------------------------------------------------------------
    def event(self, r: ArrayLike, params: Params, channel: int = 0) -> tuple[Event, Array]:
        """Map ``r`` ``[dim]`` with channel ``channel`` (static int) to ``(Event, log J)``."""
        r = jnp.asarray(r)
        params = self._cast(params, r.dtype)
        return self._event(r, params, self._maps()[channel])

    def _event(self, r, params, chmap) -> tuple[Event, Array]:
        cond = self.cond(params)
        sqrt_s = params["sqrt_s"]
        if self.hadronic:
            hev, log_j = chmap.forward(r, cond)
            incoming = parton_momenta(hev.x1, hev.x2, sqrt_s)
            return Event(jnp.concatenate([incoming, hev.momenta]), hev.x1, hev.x2), log_j
        out, log_j = chmap.forward(r, cond)
        one = jnp.ones((), r.dtype)
        return Event(jnp.concatenate([beams(sqrt_s), out]), one, one), log_j

    def inverse(self, event: Event, params: Params, channel: int = 0) -> tuple[Array, Array]:
        """``(r [dim], -log J)`` of ``event`` under channel ``channel`` (static int)."""
        momenta = jnp.asarray(event.momenta)
        params = self._cast(params, momenta.dtype)
        cond = self.cond(params)
        chmap = self._maps()[channel]
        if self.hadronic:
            return chmap.inverse(HadronicEvent(momenta[2:], event.x1, event.x2), cond)
        return chmap.inverse(momenta[2:], cond)

    # ---- integrand -----------------------------------------------------------------------
    def log_f(self, event: Event, params: Params) -> Array:
        """``log f(x)``: log of (PDFs) |M|^2 flux cuts in pb per unit phase space."""
        params = self._cast(params, event.momenta.dtype)
        return self._log_f(event, params)

    def log_prior(self, event: Event, params: Params) -> Array:
        """Normalised log prior channel weights ``[C]`` (``logsumexp = 0``)."""
        params = self._cast(params, event.momenta.dtype)
        return self._log_prior(event, params)

    def _log_prior(self, event, params) -> Array:
        return jnp.zeros((1,), event.momenta.dtype)

    def features(self, event: Event, params: Params) -> Array:
        """Inputs of a channel-weight network: outgoing momenta / sqrt_s (and x1, x2)."""
        out = (event.momenta[2:] / params["sqrt_s"]).ravel()
        if self.hadronic:
            out = jnp.concatenate([out, jnp.stack([event.x1, event.x2])])
        return out

    @property
    def n_features(self) -> int:
        return 4 * self.n_out + (2 if self.hadronic else 0)

    def log_integrand(self, r: ArrayLike, params: Params, channel: int = 0) -> Array:
        """``log(alpha_c f J_c)`` at ``r`` for channel ``channel`` (static int)."""
        r = jnp.asarray(r)
        params = self._cast(params, r.dtype)
        event, log_j = self._event(r, params, self._maps()[channel])
        log_fj = self._log_f(event, params) + log_j
        if self.n_channels > 1:
            log_fj = log_fj + self._log_prior(event, params)[channel]
        # -inf stays -inf; never nan (e.g. -inf + inf cannot occur: log J < inf)
        return jnp.where(jnp.isnan(log_fj), -jnp.inf, log_fj)

    def integrand(self, r: ArrayLike, params: Params, channel: int = 0) -> Array:
        """``alpha_c f J_c`` in pb: its mean over uniform ``r``, summed over channels, is
        the cross section."""
        return jnp.exp(self.log_integrand(r, params, channel))

    def evaluate(self, channel: ArrayLike, r: ArrayLike, params: Params) -> ChannelEval:
        """:class:`~jaxnis.channels.ChannelEval` for a traced channel index."""
        r = jnp.asarray(r)
        params = self._cast(params, r.dtype)
        branches = [
            (lambda rr, pp_, m=m: self._event(rr, pp_, m)) for m in self._maps()
        ]
        event, log_j = jax.lax.switch(jnp.asarray(channel), branches, r, params)
        log_fj = self._log_f(event, params) + log_j
        log_fj = jnp.where(jnp.isnan(log_fj), -jnp.inf, log_fj)
        return ChannelEval(log_fj=log_fj, sign=jnp.ones((), r.dtype),
                           log_prior=self._log_prior(event, params),
                           features=self.features(event, params))

    def multichannel(self) -> MultiChannelIntegrand:
        """The process as a :class:`~jaxnis.channels.MultiChannelIntegrand`."""
        return MultiChannelIntegrand(dim=self.dim, n_channels=self.n_channels,
                                     n_features=self.n_features, evaluate=self.evaluate,
                                     names=self.channel_names)

    # subclasses
    def _maps(self) -> tuple:  # pragma: no cover - interface
        raise NotImplementedError

    def _names(self) -> tuple[str, ...]:  # pragma: no cover - interface
        raise NotImplementedError

    def _log_f(self, event, params) -> Array:  # pragma: no cover - interface
        raise NotImplementedError


def _flux_pb(s_hat: Array) -> Array:
    """``GEV2_TO_PB / (2 s_hat)``, zero for ``s_hat <= 0``."""
    return safe_div(pp.GEV2_TO_PB, 2.0 * s_hat)


def _cos_angle(p: Array, q: Array) -> Array:
    """Cosine of the angle between the three-momenta of ``p`` and ``q``."""
    num = jnp.sum(p[1:] * q[1:])
    return safe_div(num, kin.momentum(p) * kin.momentum(q))


# ================================================================================ e+e- -> f fbar


@dataclasses.dataclass(frozen=True)
class EEToFFbar(_Process):
    """``e- e+ -> f fbar`` (``f`` = ``mu``, ``tau`` or a light quark), one channel.

    Channel: an isotropic two-body decay of the CM system
    (:class:`~jaxnis.phasespace.chain.DecayTree` ``(0, 1)``), ``dim = 2``. Momenta rows
    ``[e-, e+, f, fbar]``. Cut: ``|cos theta_f| <= cos_max`` (angle to the ``e-`` beam).

    Settings: ``sqrt_s`` (default 91.188 GeV), ``cos_max`` (default 1, no cut).
    :meth:`reference_sigma` gives the closed form with the cut:
    ``C (pi alpha^2 s / 8) (S_same + S_opp) (2c + 2c^3/3)``.

    Args:
        final: static final-state flavour.
        bosons: static subset of ``("photon", "Z", "Zp")``.
    """

    final: str = "mu"
    bosons: tuple = ("photon", "Z")
    SETTINGS = {"sqrt_s": 91.188, "cos_max": 1.0}

    def __post_init__(self):
        me._check_pair("e", self.final)
        object.__setattr__(self, "bosons", pp.check_bosons(self.bosons))

    def _maps(self):
        return (DecayTree((0, 1)),)

    def _names(self):
        return ("s-channel",)

    def _log_f(self, event, params):
        p = event.momenta
        m2 = me.me_ffbar_to_ffbar(p, params, "e", self.final, bosons=self.bosons)
        s_hat = 2.0 * kin.minkowski_dot(p[0], p[1])
        passed = jnp.abs(_cos_angle(p[2], p[0])) <= params["cos_max"]
        return safe_log(jnp.where(passed, m2 * _flux_pb(s_hat), 0.0))

    def reference_sigma(self, params: Params) -> Array:
        """Closed-form cross section in pb with the ``cos_max`` cut."""
        self.check_params(params)
        c = jnp.clip(params["cos_max"], 0.0, 1.0)
        full = xs.sigma_ffbar(params["sqrt_s"], params, "e", self.final, bosons=self.bosons)
        return full * (2.0 * c + 2.0 * c**3 / 3.0) / (8.0 / 3.0)


# ================================================================================ e+e- -> q qbar g


def three_jet_b(y: ArrayLike) -> Array:
    """``B(y)`` of the three-jet rate ``R_3 = (C_F alpha_s / 2 pi) B(y)`` (all ``s_ij / s > y``):

    ``(3 - 6y) ln(y / (1 - 2y)) + 2 ln^2(y / (1 - y)) + 5/2 - 6y - 9y^2/2
    + 4 Li2(y / (1 - y)) - pi^2 / 3``, valid for ``0 < y < 1/3``.
    """
    y = jnp.asarray(y)
    z = y / (1.0 - y)
    li2 = jax.scipy.special.spence(1.0 - z)  # spence(1 - z) = Li2(z)
    return ((3.0 - 6.0 * y) * jnp.log(y / (1.0 - 2.0 * y)) + 2.0 * jnp.log(z) ** 2 + 2.5
            - 6.0 * y - 4.5 * y * y + 4.0 * li2 - jnp.pi**2 / 3.0)


@dataclasses.dataclass(frozen=True)
class EEToQQG(_Process):
    """``e- e+ -> q qbar g`` at leading order with a three-jet cut, two channels.

    Momenta rows ``[e-, e+, q, qbar, g]``. Cut: every ``s_ij / s > y_cut`` (final-state
    pairs). Channels (``dim = 5``): decay trees with the quark-gluon (``"qg"``) or
    antiquark-gluon (``"qbarg"``) invariant mass drawn from a power law ``s^-nu``
    (:class:`~jaxnis.phasespace.propagators.PowerLawMap`, traced exponent ``nu < 1``), which
    follow the collinear poles. Prior weights from the partial fractions of the eikonal
    factor, ``1 / (s_qg s_qbarg) = (1/s_qg + 1/s_qbarg) / (s_qg + s_qbarg)``:
    ``alpha_qg = (1/s_qg) / (1/s_qg + 1/s_qbarg)`` (the squared matrix element has no
    gauge-invariant split into the two emission diagrams).

    Settings: ``sqrt_s`` (91.188 GeV), ``y_cut`` (0.05), ``nu`` (0.5).
    :meth:`reference_sigma` is ``sigma_0 (C_F alpha_s / 2 pi) B(y_cut)``.
    """

    flavour: str = "d"
    bosons: tuple = ("photon", "Z")
    SETTINGS = {"sqrt_s": 91.188, "y_cut": 0.05, "nu": 0.5}

    def __post_init__(self):
        if self.flavour not in pp.LIGHT_QUARKS:
            raise ValueError(f"unknown quark flavour {self.flavour!r}; expected one of "
                             f"{pp.LIGHT_QUARKS}")
        object.__setattr__(self, "bosons", pp.check_bosons(self.bosons))

    def _validate_settings(self, values):
        super()._validate_settings(values)
        if not 0.0 < values["y_cut"] < 1.0 / 3.0:
            raise ValueError(f"setting y_cut = {values['y_cut']} must be in (0, 1/3)")
        if not values["nu"] < 1.0:
            raise ValueError(f"setting nu = {values['nu']} must be < 1 (massless power law)")

    def _maps(self):
        return (DecayTree(((0, 2), 1), {(0, 2): PowerLawMap("nu")}),
                DecayTree(((1, 2), 0), {(1, 2): PowerLawMap("nu")}))

    def _names(self):
        return ("qg", "qbarg")

    def _log_f(self, event, params):
        p = event.momenta
        m2 = me.me_ee_to_qqg(p, params, self.flavour, bosons=self.bosons)
        s_hat = 2.0 * kin.minkowski_dot(p[0], p[1])
        y = params["y_cut"] * s_hat
        s34 = 2.0 * kin.minkowski_dot(p[2], p[3])
        s35 = 2.0 * kin.minkowski_dot(p[2], p[4])
        s45 = 2.0 * kin.minkowski_dot(p[3], p[4])
        passed = (s34 > y) & (s35 > y) & (s45 > y)
        return safe_log(jnp.where(passed, m2 * _flux_pb(s_hat), 0.0))

    def _log_prior(self, event, params):
        p = event.momenta
        s_qg = kin.minkowski_dot(p[2], p[4])
        s_qbg = kin.minkowski_dot(p[3], p[4])
        # (1/s_qg) / (1/s_qg + 1/s_qbg) = s_qbg / (s_qg + s_qbg): finite at s_qg = 0
        return normalise_log_weights(safe_log(jnp.stack([s_qbg, s_qg])))

    def reference_sigma(self, params: Params) -> Array:
        """``sigma_0 (C_F alpha_s / 2 pi) B(y_cut)`` in pb."""
        self.check_params(params)
        sigma0 = xs.sigma_ffbar(params["sqrt_s"], params, "e", self.flavour,
                                bosons=self.bosons)
        return sigma0 * pp.C_F * params["alpha_s"] / (2.0 * jnp.pi) * three_jet_b(
            params["y_cut"])


# ================================================================================ Drell-Yan


_DY_BOSON_CHANNEL = {
    "photon": lambda: LuminosityMap(PowerLawMap("nu")),
    "Z": lambda: LuminosityMap(BreitWignerMap("M_Z", "Gamma_Z")),
    "Zp": lambda: LuminosityMap(BreitWignerMap("M_Zp", "Gamma_Zp")),
}


@dataclasses.dataclass(frozen=True)
class DrellYan(_Process):
    """``p p -> l- l+`` through photon, Z and Z' at a hadron collider, one channel per boson.

    ``sigma = sum_q int dx1 dx2 [f_q(x1) f_qbar(x2) |M(q qbar)|^2 + f_qbar(x1) f_q(x2)
    |M(qbar q)|^2] / (2 s_hat) dPhi_2`` with ``|M|^2`` of
    :func:`~jaxnis.physics.matrix_elements.me_qq_to_ll` and the factorisation scale
    ``mu_F^2 = s_hat``. Momenta rows ``[q, qbar, l-, l+]`` with the quark first whichever
    beam it comes from (:attr:`Event.momenta` keeps the beam order ``[p_a, p_b, l-, l+]``).

    Channels (``dim = 4``, :class:`~jaxnis.phasespace.chain.HadronicChannel`): the luminosity
    map draws ``s_hat`` from a power law ``s^-nu`` (``"photon"``) or a Breit-Wigner at the Z
    (``"Z"``) or Z' (``"Zp"``), reading masses and widths from the parameters (so the maps
    follow them under ``jax.grad``); then an isotropic decay. Prior weights by
    single-diagram enhancement, weighted with the parton luminosity of each flavour:
    ``alpha_V = sum_q L_q |M_q^V|^2 / sum_W sum_q L_q |M_q^W|^2``.

    Settings: ``sqrt_s`` (13000 GeV), ``m_ll_min`` (60 GeV; ``s_hat >= m_ll_min^2``),
    ``pt_min`` (0) and ``eta_max`` (inf) on both leptons, ``nu`` (2) for the photon channel.

    Args:
        flavours: static quark flavours summed over.
        lepton: static charged-lepton flavour.
        bosons: static exchanged bosons; one channel each.
        pdf: ``xfxq2(x, q2) -> [..., 13]`` (LHAPDF order, :mod:`jaxnis.physics.pdf`); default
            the Les Houches toy PDF. For a grid: ``functools.partial(lhapdf.xfxq2, grid)``.
    """

    flavours: tuple = pp.LIGHT_QUARKS
    lepton: str = "mu"
    bosons: tuple = ("photon", "Z", "Zp")
    pdf: Callable | None = None
    SETTINGS = {"sqrt_s": 13000.0, "m_ll_min": 60.0, "pt_min": 0.0, "eta_max": float("inf"),
                "nu": 2.0}
    hadronic = True

    def __post_init__(self):
        flavours = tuple(self.flavours)
        for f in flavours:
            if f not in pp.LIGHT_QUARKS:
                raise ValueError(f"unknown quark flavour {f!r}; expected some of "
                                 f"{pp.LIGHT_QUARKS}")
        if not flavours or len(set(flavours)) != len(flavours):
            raise ValueError(f"flavours {self.flavours!r} must be non-empty and distinct")
        if self.lepton not in pp.CHARGED_LEPTONS:
            raise ValueError(f"unknown lepton {self.lepton!r}; expected one of "
                             f"{pp.CHARGED_LEPTONS}")
        object.__setattr__(self, "flavours", flavours)
        object.__setattr__(self, "bosons", pp.check_bosons(self.bosons))

    def _validate_settings(self, values):
        super()._validate_settings(values)
        if not 0.0 < values["m_ll_min"] < values["sqrt_s"]:
            raise ValueError(f"setting m_ll_min = {values['m_ll_min']} must be in "
                             f"(0, sqrt_s)")

    def cond(self, params):
        cond = super().cond(params)
        cond["s_hat_min"] = params["m_ll_min"] ** 2
        return cond

    def _maps(self):
        return tuple(HadronicChannel(_DY_BOSON_CHANNEL[b](), DecayTree((0, 1)))
                     for b in self.bosons)

    def _names(self):
        return self.bosons

    def _pdf(self, x, q2):
        return (self.pdf or pdfs.toy_xfxq2)(x, q2)

    def _flavour_rows(self, event, params, couplings):
        """Parton-luminosity-weighted ``|M|^2`` per flavour, ``[..., n_flavours, 2]`` (last
        axis: quark from beam a or from beam b), and ``s_hat``.

        ``couplings(s_hat, flavour) -> (re, im)`` gives chiral coupling matrices
        ``[..., 2, 2]`` (amplitudes add linearly, so a sum of bosons is one matrix); the
        formula is that of :mod:`jaxnis.physics.matrix_elements`, and swapping the beams
        swaps the two chiral weights ``W_same <-> W_opp``.
        """
        p = event.momenta
        s_hat = 2.0 * kin.minkowski_dot(p[0], p[1])
        w_same, w_opp = me._chiral_weights(p)
        e2 = pp.derived(params)["e"] ** 2
        norm = 2.0 * me.colour_factor(self.flavours[0], self.lepton) * e2 * e2
        xf1 = self._pdf(event.x1, s_hat)
        xf2 = self._pdf(event.x2, s_hat)
        rows = []
        for f in self.flavours:
            re, im = couplings(s_hat, f)
            g2 = re * re + im * im
            same = g2[..., 0, 0] + g2[..., 1, 1]
            opp = g2[..., 0, 1] + g2[..., 1, 0]
            m_a = norm * (same * w_same + opp * w_opp)  # quark from beam a
            m_b = norm * (same * w_opp + opp * w_same)  # quark from beam b
            q, qb = pdfs.flavour_index(f), pdfs.flavour_index(f + "bar")
            rows.append(jnp.stack([xf1[q] * xf2[qb] * m_a, xf1[qb] * xf2[q] * m_b], axis=-1))
        return jnp.stack(rows, axis=-2), s_hat

    def _terms(self, event, params):
        """Parton-luminosity-weighted ``|M|^2``, ``[n_bosons + 1, n_flavours, 2]``: one boson
        at a time, then all together (for the channel weights)."""

        def per_boson(s_hat, f):
            pieces = [pp.coupling_matrix(s_hat, params, f, self.lepton, (b,))
                      for b in self.bosons]
            re = jnp.stack([pc[0] for pc in pieces])
            im = jnp.stack([pc[1] for pc in pieces])
            return (jnp.concatenate([re, jnp.sum(re, axis=0, keepdims=True)]),  # [nb + 1, 2, 2]
                    jnp.concatenate([im, jnp.sum(im, axis=0, keepdims=True)]))

        return self._flavour_rows(event, params, per_boson)

    def _summed(self, event, params):
        """``|M|^2`` summed over flavours, beams and bosons (the total of :meth:`_terms`'s
        last row) from the summed coupling matrix alone: a scan over a Z' parameter then
        recomputes only the propagator-dependent sum, not one matrix per boson."""
        rows, s_hat = self._flavour_rows(
            event, params,
            lambda s_hat, f: pp.coupling_matrix(s_hat, params, f, self.lepton, self.bosons))
        return jnp.sum(rows), s_hat

    def reference_sigma(self, params: Params, n_nodes: int = 48) -> Array:
        """Cross section in pb by quadrature of the factorised form (no lepton cuts):

        ``sigma = int d log s_hat tau sum_q int dy [f_q(x1) f_qbar(x2) + f_qbar(x1) f_q(x2)]
        sigma_hat_q(s_hat)``, ``tau = s_hat / s``, ``x_{1,2} = sqrt(tau) e^{+-y}``, with the
        closed-form partonic cross section :func:`jaxnis.physics.cross_sections.sigma_ffbar`
        and this process's PDF at ``mu_F^2 = s_hat``. Gauss-Legendre in ``y`` and in
        ``log s_hat`` from ``m_ll_min^2`` to ``s``, the latter split at ``M +- (1, 4, 16,
        64) Gamma`` of every massive boson so the resonances are resolved. Plain JAX: it
        follows the parameters under ``jax.grad`` (e.g. ``d sigma / d M_Z``) and runs in the
        dtype of ``params``. In float64 it agrees with adaptive quadrature (scipy, relative
        tolerance 1e-10) to better than 1e-9 relative (default settings: 353.35105753 pb).

        Args:
            params: parameters with settings (``default_params``); ``pt_min`` must be 0 and
                ``eta_max`` infinite (the lepton cuts are not in the factorised form; checked
                when the values are concrete).
            n_nodes: static Gauss-Legendre nodes per piece and in ``y``.

        Raises:
            ValueError: with lepton cuts.
        """
        self.check_params(params)
        for name, free in (("pt_min", 0.0), ("eta_max", float("inf"))):
            value = params[name]
            if is_concrete(value) and float(value) != free:
                raise ValueError(f"reference_sigma has no lepton cuts: {name} must be {free}, "
                                 f"got {float(value)}")
        dtype = jnp.result_type(params["sqrt_s"], float)
        nodes, weights = (jnp.asarray(a, dtype) for a in np.polynomial.legendre.leggauss(n_nodes))
        big_s = params["sqrt_s"] ** 2
        lo, hi = jnp.log(params["m_ll_min"] ** 2), jnp.log(big_s)
        edges = [lo, hi]
        for boson in self.bosons:
            mass_width = pp.boson_mass_width(params, boson)
            if mass_width is None:
                continue
            mass, width = mass_width
            for k in (1.0, 4.0, 16.0, 64.0):
                for side in (-1.0, 1.0):
                    m = jnp.maximum(mass + side * k * width, 1e-3 * mass)
                    edges.append(jnp.clip(2.0 * jnp.log(m), lo, hi))
        edges = jnp.sort(jnp.stack(edges))
        a, b = edges[:-1, None], edges[1:, None]  # pieces [P, 1]
        log_s = (0.5 * (b - a) * nodes + 0.5 * (a + b)).reshape(-1)
        jac_s = (0.5 * (b - a) * weights).reshape(-1)
        s_hat = jnp.exp(log_s)
        tau = s_hat / big_s
        half = -0.5 * jnp.log(tau)  # y in [-half, half]
        y, jac_y = half[:, None] * nodes, half[:, None] * weights  # [S, Y]
        root = jnp.sqrt(tau)[:, None]
        xf1 = self._pdf(root * jnp.exp(y), s_hat[:, None])  # x f(x), [S, Y, 13]
        xf2 = self._pdf(root * jnp.exp(-y), s_hat[:, None])
        total = jnp.zeros_like(s_hat)
        for f in self.flavours:
            q, qb = pdfs.flavour_index(f), pdfs.flavour_index(f + "bar")
            # number densities: f(x1) f(x2) = xf1 xf2 / tau
            lum = jnp.sum(jac_y * (xf1[..., q] * xf2[..., qb] + xf1[..., qb] * xf2[..., q]),
                          axis=-1) / tau
            partonic = xs.sigma_ffbar(jnp.sqrt(s_hat), params, f, self.lepton,
                                      bosons=self.bosons)
            total = total + lum * partonic
        return jnp.sum(jac_s * tau * total)

    def _log_f(self, event, params):
        summed, s_hat = self._summed(event, params)
        # x f(x) from the PDFs: divide by x1 x2 once for the number densities
        dens = safe_div(summed, event.x1 * event.x2)
        leptons = event.momenta[2:]
        passed = (jnp.all(kin.pt(leptons) >= params["pt_min"])
                  & jnp.all(jnp.abs(kin.pseudorapidity(leptons)) <= params["eta_max"]))
        return safe_log(jnp.where(passed, dens * _flux_pb(s_hat), 0.0))

    def _log_prior(self, event, params):
        if len(self.bosons) == 1:
            return jnp.zeros((1,), event.momenta.dtype)
        terms, _ = self._terms(event, params)
        return normalise_log_weights(safe_log(jnp.sum(terms[:-1], axis=(1, 2))))


# ============================================================================ e+e- -> mu mu gamma


@dataclasses.dataclass(frozen=True)
class EEToMuMuGamma(_Process):
    """``e- e+ -> mu- mu+ gamma`` with photon, Z and Z' exchange, ISR and FSR; five channels.

    Momenta rows ``[e-, e+, mu-, mu+, gamma]``; ``|M|^2`` of
    :func:`~jaxnis.physics.matrix_elements.me_ee_to_mumua`. Above the Z' mass the initial-
    state radiation returns to both resonances, so the ``m_mumu`` spectrum has a Z and a Z'
    peak on top of the photon continuum, and final-state radiation is collinear to the
    muons.

    Channels (``dim = 5``, decay trees of the final state ``[mu-, mu+, gamma]``):

    * ``"isr_photon"``: ``(mu mu) gamma``, ``m_mumu^2`` from a power law ``s^-nu_isr``;
    * ``"isr_Z"``, ``"isr_Zp"``: the same with a Breit-Wigner at the Z or Z' (masses and
      widths read from the parameters);
    * ``"fsr_mu"``, ``"fsr_mubar"``: ``(mu- gamma) mu+`` / ``(mu+ gamma) mu-`` with the
      muon-photon mass from a power law ``s^-nu_fsr``.

    Prior weights (single-diagram enhancement with gauge-invariant pieces): the ISR parts
    with one boson each, ``|M_ISR^gamma|^2``, ``|M_ISR^Z|^2``, ``|M_ISR^Z'|^2``, and the FSR
    part ``|M_FSR|^2`` (all bosons) split between the two FSR channels in proportion to
    ``1 / s_{mu gamma}``; normalised to sum to one.

    Cuts: ``E_gamma > E_gamma_min``, ``|cos theta_gamma| < cos_gamma_max`` (to the beam),
    ``cos(mu, gamma) < cos_mu_gamma_max`` for both muons, ``m_mumu > m_mumu_min``.

    Settings: ``sqrt_s`` (1000 GeV), ``E_gamma_min`` (10), ``cos_gamma_max`` (0.95),
    ``cos_mu_gamma_max`` (0.95), ``m_mumu_min`` (20), ``nu_isr`` (0.5), ``nu_fsr`` (0.5).
    """

    bosons: tuple = ("photon", "Z", "Zp")
    SETTINGS = {"sqrt_s": 1000.0, "E_gamma_min": 10.0, "cos_gamma_max": 0.95,
                "cos_mu_gamma_max": 0.95, "m_mumu_min": 20.0, "nu_isr": 0.5, "nu_fsr": 0.5}

    def __post_init__(self):
        object.__setattr__(self, "bosons", pp.check_bosons(self.bosons))

    def _validate_settings(self, values):
        super()._validate_settings(values)
        for key in ("nu_isr", "nu_fsr"):
            if not values[key] < 1.0:
                raise ValueError(f"setting {key} = {values[key]} must be < 1 (massless "
                                 "power law)")

    def _isr_channels(self):
        maps = {"photon": PowerLawMap("nu_isr"), "Z": BreitWignerMap("M_Z", "Gamma_Z"),
                "Zp": BreitWignerMap("M_Zp", "Gamma_Zp")}
        return [(f"isr_{b}", DecayTree(((0, 1), 2), {(0, 1): maps[b]})) for b in self.bosons]

    def _maps(self):
        fsr = (DecayTree(((0, 2), 1), {(0, 2): PowerLawMap("nu_fsr")}),
               DecayTree(((1, 2), 0), {(1, 2): PowerLawMap("nu_fsr")}))
        return tuple(m for _, m in self._isr_channels()) + fsr

    def _names(self):
        return tuple(n for n, _ in self._isr_channels()) + ("fsr_mu", "fsr_mubar")

    def _amplitudes(self, p, params):
        """ISR amplitudes per boson ``[n_bosons, 2, 2, 4]`` and the FSR amplitude (all
        bosons); their sum is the full amplitude (amplitudes are linear in both)."""
        pieces = me.radiative_amplitudes_by_boson(p, params, bosons=self.bosons)
        return pieces[0], jnp.sum(pieces[1], axis=0)

    def _log_f(self, event, params):
        p = event.momenta
        isr, fsr = self._amplitudes(p, params)
        m2 = me.radiative_me_from_amplitudes(jnp.sum(isr, axis=0) + fsr, params)
        s_hat = 2.0 * kin.minkowski_dot(p[0], p[1])
        k = p[4]
        passed = ((k[0] > params["E_gamma_min"])
                  & (jnp.abs(_cos_angle(k, p[0])) < params["cos_gamma_max"])
                  & (_cos_angle(k, p[2]) < params["cos_mu_gamma_max"])
                  & (_cos_angle(k, p[3]) < params["cos_mu_gamma_max"])
                  & (2.0 * kin.minkowski_dot(p[2], p[3]) > params["m_mumu_min"] ** 2))
        return safe_log(jnp.where(passed, m2 * _flux_pb(s_hat), 0.0))

    def _log_prior(self, event, params):
        p = event.momenta
        isr, fsr = self._amplitudes(p, params)
        m2_isr = me.radiative_me_from_amplitudes(isr, params)  # [n_bosons]
        m2_fsr = me.radiative_me_from_amplitudes(fsr, params)
        s_a = kin.minkowski_dot(p[2], p[4])
        s_b = kin.minkowski_dot(p[3], p[4])
        share = safe_div(s_b, s_a + s_b)  # (1/s_a) / (1/s_a + 1/s_b), finite at s_a = 0
        weights = jnp.concatenate([m2_isr, jnp.stack([m2_fsr * share, m2_fsr * (1 - share)])])
        return normalise_log_weights(safe_log(weights))


__all__ = [
    "DrellYan",
    "EEToFFbar",
    "EEToMuMuGamma",
    "EEToQQG",
    "Event",
    "three_jet_b",
]
