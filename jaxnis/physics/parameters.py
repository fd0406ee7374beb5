"""Physics parameters of the toy processes: a flat pytree of traced inputs.

The electroweak inputs follow MadGraph's ``sm`` model scheme (alpha, G_F, M_Z): the W
mass and the weak mixing angle are *derived* inside traced code,

.. math::

    M_W^2 = \\frac{M_Z^2}{2} + \\sqrt{\\frac{M_Z^4}{4}
            - \\frac{\\pi \\alpha M_Z^2}{\\sqrt{2} G_F}},
    \\qquad \\sin^2\\theta_W = 1 - M_W^2 / M_Z^2,

so ``jax.grad`` with respect to ``M_Z`` moves ``M_W`` and ``sin^2 theta_W`` with it while
``alpha``, ``G_F`` and ``Gamma_Z`` stay fixed. With the defaults, ``M_W = 80.419002`` GeV and
``sin^2 theta_W = 0.2222465``.

Gauge-boson couplings to a massless fermion are written chirally: the vertex of boson ``V``
is ``-i e gamma^mu (c_L P_L + c_R P_R)`` with ``P_{L,R} = (1 -+ gamma_5) / 2``, ``e^2 = 4 pi
alpha``, and

* photon: ``c_L = c_R = Q``;
* Z: ``c_L = (T_3 - Q s_W^2) / (s_W c_W)``, ``c_R = -Q s_W^2 / (s_W c_W)``
  (the same as ``e / (2 s_W c_W) gamma^mu (v - a gamma_5)``, ``v = T_3 - 2 Q s_W^2``,
  ``a = T_3``);
* Z': vertex ``-i e gamma^mu (g_V - g_A gamma_5)``, i.e. ``c_L = g_V + g_A``,
  ``c_R = g_V - g_A``, with free ``g_V, g_A`` for charged leptons (``l``), up-type (``u``)
  and down-type (``d``) quarks.

The default Z' is a sequential-SM-like toy: its couplings are those of the Z at the default
``sin^2 theta_W`` (rounded to six digits), with ``M_Z' = 750`` GeV and ``Gamma_Z' = 22.5`` GeV
(3 % of the mass), light enough to be reached by radiative return at a 1 TeV lepton collider
and to show as a peak in 13 TeV Drell-Yan.

Units: GeV; cross sections in pb via ``GEV2_TO_PB = (hbar c)^2``.

Example:
    >>> from jaxnis.physics import parameters as pp
    >>> params = pp.default_params()
    >>> d = pp.derived(params)
    >>> round(float(d["M_W"]), 2)
    80.42
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxnis.numerics import is_concrete, safe_sqrt
from jaxnis.types import Array, ArrayLike, Params

#: (hbar c)^2 in pb GeV^2: multiply a cross section in GeV^-2 by this to get pb.
GEV2_TO_PB = 0.3893793721e9

#: Number of colours and the quark colour factor C_F = (N_c^2 - 1) / (2 N_c).
N_C = 3
C_F = 4.0 / 3.0

#: Documented default inputs (MadGraph ``sm`` values for the electroweak sector).
DEFAULTS: dict[str, float] = {
    "alpha": 1.0 / 132.507,  # electromagnetic coupling (MadGraph 'sm' aEWM1 = 132.507)
    "G_F": 1.16639e-5,  # Fermi constant, GeV^-2
    "M_Z": 91.188,  # Z mass, GeV
    "Gamma_Z": 2.441404,  # Z width, GeV
    "alpha_s": 0.118,  # strong coupling (fixed; used by e+e- -> q qbar g)
    "M_Zp": 750.0,  # Z' mass, GeV
    "Gamma_Zp": 22.5,  # Z' width, GeV
    "gV_Zp_l": -0.066754,  # Z' vector coupling to charged leptons (units of e)
    "gA_Zp_l": -0.601314,  # Z' axial coupling to charged leptons
    "gV_Zp_u": 0.244941,  # Z' vector coupling to up-type quarks
    "gA_Zp_u": 0.601314,  # Z' axial coupling to up-type quarks
    "gV_Zp_d": -0.423128,  # Z' vector coupling to down-type quarks
    "gA_Zp_d": -0.601314,  # Z' axial coupling to down-type quarks
}

#: Parameters that must be strictly positive / non-negative on concrete values.
_POSITIVE = ("alpha", "G_F", "M_Z", "M_Zp")
_NON_NEGATIVE = ("Gamma_Z", "Gamma_Zp", "alpha_s")

#: The gauge bosons a neutral-current process can be built from.
BOSONS = ("photon", "Z", "Zp")


@dataclass(frozen=True)
class Fermion:
    """Static quantum numbers of a massless fermion.

    Attributes:
        name: flavour name (``"e"``, ``"mu"``, ``"u"``, ...).
        charge: electric charge in units of the positron charge.
        t3: third component of weak isospin of the left-handed field.
        colours: 1 for leptons, ``N_C`` for quarks.
        zp_group: which Z' couplings it uses: ``"l"``, ``"u"`` or ``"d"``.
        pdg: PDG id of the particle (the antiparticle is ``-pdg``).
    """

    name: str
    charge: float
    t3: float
    colours: int
    zp_group: str
    pdg: int

    @property
    def is_quark(self) -> bool:
        return self.colours > 1


FERMIONS: dict[str, Fermion] = {
    "e": Fermion("e", -1.0, -0.5, 1, "l", 11),
    "mu": Fermion("mu", -1.0, -0.5, 1, "l", 13),
    "tau": Fermion("tau", -1.0, -0.5, 1, "l", 15),
    "d": Fermion("d", -1.0 / 3.0, -0.5, N_C, "d", 1),
    "u": Fermion("u", 2.0 / 3.0, 0.5, N_C, "u", 2),
    "s": Fermion("s", -1.0 / 3.0, -0.5, N_C, "d", 3),
    "c": Fermion("c", 2.0 / 3.0, 0.5, N_C, "u", 4),
    "b": Fermion("b", -1.0 / 3.0, -0.5, N_C, "d", 5),
}

#: The massless quark flavours of the toy processes.
LIGHT_QUARKS = ("d", "u", "s", "c", "b")
CHARGED_LEPTONS = ("e", "mu", "tau")


def fermion(name: str) -> Fermion:
    """Look up a flavour by name; raises ``ValueError`` naming an unknown flavour."""
    try:
        return FERMIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown flavour {name!r}; expected one of {sorted(FERMIONS)}"
        ) from None


def check_bosons(bosons) -> tuple[str, ...]:
    """Validate a static tuple of boson names; raises ``ValueError`` naming a bad entry."""
    if isinstance(bosons, str):
        bosons = (bosons,)
    bosons = tuple(bosons)
    if not bosons:
        raise ValueError("bosons must name at least one of 'photon', 'Z', 'Zp'")
    for b in bosons:
        if b not in BOSONS:
            raise ValueError(f"unknown boson {b!r}; expected some of {BOSONS}")
    if len(set(bosons)) != len(bosons):
        raise ValueError(f"bosons {bosons!r} repeats an entry")
    return bosons


def validate_params(params: Params) -> None:
    """Check concrete parameter values; traced values are skipped.

    Raises:
        ValueError: naming the first missing key, negative/zero mass or coupling, negative
            width, or an ``M_Z`` too small for a real ``M_W`` in the (alpha, G_F, M_Z) scheme.
    """
    for key in DEFAULTS:
        if key not in params:
            raise ValueError(f"parameter {key!r} is missing")
    concrete = {k: params[k] for k in DEFAULTS if is_concrete(params[k])}
    values = {}
    for k, v in concrete.items():
        arr = np.asarray(v)
        if arr.shape != ():
            raise ValueError(f"parameter {k!r} must be a scalar, got shape {arr.shape}")
        values[k] = float(arr)
        if not math.isfinite(values[k]):
            raise ValueError(f"parameter {k} = {values[k]} is not finite")
    for k in _POSITIVE:
        if k in values and values[k] <= 0.0:
            raise ValueError(f"parameter {k} = {values[k]} must be positive")
    for k in _NON_NEGATIVE:
        if k in values and values[k] < 0.0:
            raise ValueError(f"parameter {k} = {values[k]} must not be negative")
    if all(k in values for k in ("alpha", "G_F", "M_Z")):
        a, gf, mz = values["alpha"], values["G_F"], values["M_Z"]
        if mz**4 / 4.0 < math.pi * a * mz**2 / (math.sqrt(2.0) * gf):
            raise ValueError(
                f"parameter M_Z = {mz} is too small for a real M_W with alpha = {a} and "
                f"G_F = {gf} (needs M_Z^2 >= 4 pi alpha / (sqrt 2 G_F))"
            )


def default_params(dtype=None, **overrides: float) -> dict[str, Array]:
    """The default parameter pytree, optionally with some entries replaced.

    Args:
        dtype: floating dtype of every entry (default: JAX's default float).
        **overrides: new values for keys of :data:`DEFAULTS`.

    Returns:
        ``dict[str, Array]`` of 0-d arrays with the keys of :data:`DEFAULTS`.

    Raises:
        ValueError: for an unknown key or an invalid value (see :func:`validate_params`).
    """
    for k in overrides:
        if k not in DEFAULTS:
            raise ValueError(f"unknown parameter {k!r}; expected one of {sorted(DEFAULTS)}")
    dtype = jnp.dtype(float) if dtype is None else dtype
    dtype = jax.dtypes.canonicalize_dtype(dtype)
    values = {**DEFAULTS, **overrides}
    validate_params(values)
    return {k: jnp.asarray(v, dtype=dtype) for k, v in values.items()}


def cast_params(params: Params, dtype) -> Params:
    """Cast every leaf of ``params`` to ``dtype`` (the dtype of the momenta it meets)."""
    return jax.tree.map(lambda a: jnp.asarray(a, dtype=dtype), params)


def derived(params: Params) -> dict[str, Array]:
    """Derived electroweak quantities, traced.

    Returns:
        dict with ``e`` (``sqrt(4 pi alpha)``), ``g_s`` (``sqrt(4 pi alpha_s)``), ``M_W``,
        ``sw2`` (``sin^2 theta_W``), ``cw2`` and ``swcw`` (``s_W c_W``), all 0-d.
    """
    alpha, g_f, m_z = params["alpha"], params["G_F"], params["M_Z"]
    mz2 = m_z * m_z
    # safe_sqrt: an M_Z below the scheme's threshold gives M_W = M_Z / sqrt 2, not NaN.
    root = safe_sqrt(mz2 * mz2 / 4.0 - jnp.pi * alpha * mz2 / (math.sqrt(2.0) * g_f))
    mw2 = mz2 / 2.0 + root
    cw2 = mw2 / mz2
    sw2 = 1.0 - cw2
    return {
        "e": jnp.sqrt(4.0 * jnp.pi * alpha),
        "g_s": safe_sqrt(4.0 * jnp.pi * params["alpha_s"]),
        "M_W": jnp.sqrt(mw2),
        "sw2": sw2,
        "cw2": cw2,
        "swcw": safe_sqrt(sw2 * cw2),
    }


def chiral_couplings(params: Params, flavour: str, boson: str) -> tuple[Array, Array]:
    """Chiral couplings ``(c_L, c_R)`` of ``boson`` to ``flavour`` in units of ``e``.

    See the module docstring for the conventions. ``flavour`` and ``boson`` are static.
    """
    f = fermion(flavour)
    (boson,) = check_bosons((boson,))
    if boson == "photon":
        q = jnp.asarray(f.charge, dtype=jnp.result_type(params["alpha"]))
        return q, q
    if boson == "Z":
        d = derived(params)
        c_l = (f.t3 - f.charge * d["sw2"]) / d["swcw"]
        c_r = (-f.charge * d["sw2"]) / d["swcw"]
        return c_l, c_r
    g_v, g_a = params[f"gV_Zp_{f.zp_group}"], params[f"gA_Zp_{f.zp_group}"]
    return g_v + g_a, g_v - g_a


def boson_mass_width(params: Params, boson: str) -> tuple[Array, Array] | None:
    """``(M, Gamma)`` of a massive boson, ``None`` for the photon."""
    if boson == "photon":
        return None
    if boson == "Z":
        return params["M_Z"], params["Gamma_Z"]
    return params["M_Zp"], params["Gamma_Zp"]


def propagator(x: ArrayLike, params: Params, boson: str) -> tuple[Array, Array]:
    """Real and imaginary parts of the s-channel propagator ``1 / (x - M^2 + i M Gamma)``.

    Fixed-width Breit-Wigner for the Z and Z'; ``1 / x`` for the photon (``x > 0`` is the
    invariant mass squared of the s-channel). Shapes broadcast with ``x``.
    """
    x = jnp.asarray(x)
    mw = boson_mass_width(params, boson)
    if mw is None:
        # x = 0 only at an exactly soft/collinear s-channel, which has measure zero;
        # 1/x is guarded so the value stays finite there.
        nonzero = x != 0
        re = jnp.where(nonzero, 1.0 / jnp.where(nonzero, x, 1.0), 0.0)
        return re, jnp.zeros_like(re)
    m, w = mw
    dx = x - m * m
    mg = m * w
    den = dx * dx + mg * mg
    # den = 0 needs Gamma = 0 exactly on the pole; guarded for a finite value.
    ok = den > 0
    inv = jnp.where(ok, 1.0 / jnp.where(ok, den, 1.0), 0.0)
    return dx * inv, -mg * inv


def coupling_matrix(
    x: ArrayLike, params: Params, initial: str, final: str, bosons=("photon", "Z")
) -> tuple[Array, Array]:
    """Neutral-current amplitude coefficients ``G_{ij}(x)``, chirality ``i`` of the initial
    line and ``j`` of the final line (index 0 = L, 1 = R):

    .. math:: G_{ij}(x) = \\sum_V c^{(in)}_{V,i} c^{(out)}_{V,j} / (x - M_V^2 + i M_V \\Gamma_V).

    Args:
        x: invariant mass squared of the s-channel, shape ``[...]``.
        params: parameter pytree.
        initial, final: static flavour names.
        bosons: static tuple of bosons to include.

    Returns:
        ``(re, im)``, each of shape ``[..., 2, 2]``.
    """
    bosons = check_bosons(bosons)
    x = jnp.asarray(x)
    re = jnp.zeros(x.shape + (2, 2), dtype=x.dtype)
    im = jnp.zeros(x.shape + (2, 2), dtype=x.dtype)
    for b in bosons:
        ci = jnp.stack(chiral_couplings(params, initial, b))
        cf = jnp.stack(chiral_couplings(params, final, b))
        cc = ci[:, None] * cf[None, :]
        pre, pim = propagator(x, params, b)
        re = re + pre[..., None, None] * cc
        im = im + pim[..., None, None] * cc
    return re, im


__all__ = [
    "BOSONS",
    "CHARGED_LEPTONS",
    "C_F",
    "DEFAULTS",
    "FERMIONS",
    "Fermion",
    "GEV2_TO_PB",
    "LIGHT_QUARKS",
    "N_C",
    "boson_mass_width",
    "cast_params",
    "check_bosons",
    "chiral_couplings",
    "coupling_matrix",
    "default_params",
    "derived",
    "fermion",
    "propagator",
    "validate_params",
]
