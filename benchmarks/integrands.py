"""Integrands of the neural-importance-sampling benchmark (``benchmarks/nis.py``).

Each integrand on ``[0, 1]^d`` comes in two implementations computing the same function:

* a JAX version for jaxnis, ``f(x [d], theta) -> value`` for one point;
* a NumPy version for the peers, ``f(x [N, d]) -> [N]`` (float64) for a batch; madnis
  (PyTorch) gets it through a zero-copy ``torch.from_numpy`` wrapper.

The physics processes (:mod:`jaxnis.physics.processes`) exist only in JAX; the peers call
the same JAX code, compiled once per process for a fixed chunk of events, through
:class:`ProcessEvaluator` (NumPy in, NumPy out; the time spent there is measured).

Every integrand carries its known value with an error and where it comes from:

============  ===  ================================================================
name          d    reference
============  ===  ================================================================
camel{d}      d    exact: ``[(erf(2/(3a)) + erf(1/(3a))) / 2]^d``, ``a = 0.2``
two_circles   2    1-D quadrature of an exact polar reduction (see :func:`two_circles_reference`)
annulus       2    exact: ``pi (r_max^2 - r_min^2) / 4``
gauss16       16   exact: 1 (a Gaussian on ``R^16`` pulled back to the cube, see below)
drell_yan     4    quadrature of the factorised cross section (:func:`drell_yan_quadrature`)
three_jets    5    closed form ``sigma_0 C_F alpha_s / (2 pi) B(y_cut)`` (``reference_sigma``)
mumugamma     5    high-statistics VEGAS per channel, float64 (:func:`mumugamma_reference`)
============  ===  ================================================================

Run ``JAX_ENABLE_X64=1 python benchmarks/integrands.py`` to recompute the stored references
(the Monte Carlo one takes several minutes).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate as sp_integrate
from scipy import special as sp_special

# --------------------------------------------------------------------------------- registry


@dataclasses.dataclass(frozen=True)
class Integrand:
    """One benchmark integrand.

    Attributes:
        name: short name used on the command line and in the results.
        dim: number of dimensions.
        reference: known value of the integral over ``[0, 1]^dim`` (pb for processes).
        reference_error: its uncertainty (0 for an exact value).
        reference_source: how the reference was obtained.
        structure: ``"axis-aligned"`` (peaks along the axes or factorisable) or
            ``"correlated"`` (peaks that a factorised grid cannot follow).
        description: one line for the report.
        jax_fn: ``f(x [d], theta) -> []`` for one point (``None`` for a process).
        numpy_fn: ``f(x [N, d]) -> [N]`` float64 (``None`` for a process).
        process: a :mod:`jaxnis.physics.processes` instance (``None`` for a function).
        settings: the integrand's parameters, recorded in the results.
    """

    name: str
    dim: int
    reference: float
    reference_error: float
    reference_source: str
    structure: str
    description: str
    jax_fn: Callable[[jax.Array, Any], jax.Array] | None = None
    numpy_fn: Callable[[np.ndarray], np.ndarray] | None = None
    process: Any = None
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def is_process(self) -> bool:
        return self.process is not None

    @property
    def n_channels(self) -> int:
        return self.process.n_channels if self.is_process else 1

    def params(self):
        """The process parameters (default dtype), or ``None`` for a plain function."""
        return self.process.default_params() if self.is_process else None

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim, "reference": self.reference,
                "reference_error": self.reference_error,
                "reference_source": self.reference_source, "structure": self.structure,
                "description": self.description, "n_channels": self.n_channels,
                "settings": self.settings}


# --------------------------------------------------------------------------------- camel


def camel_reference(dim: int, a: float) -> float:
    """``[(erf(2/(3a)) + erf(1/(3a))) / 2]^dim``: each normalised Gaussian factor loses its
    tails outside ``[0, 1]``; both peaks lose the same by symmetry."""
    return (0.5 * (math.erf(2.0 / (3.0 * a)) + math.erf(1.0 / (3.0 * a)))) ** dim


def camel(dim: int, a: float = 0.2) -> Integrand:
    """Two Gaussians of width ``a`` centred at ``(1/3, ..., 1/3)`` and ``(2/3, ..., 2/3)``,
    each normalised to 1 on ``R^d``, averaged: peaks on the diagonal, a product of
    one-dimensional factors per peak (VEGAS's favourite, up to phantom peaks)."""
    log_norm = -dim * math.log(a * math.sqrt(math.pi))
    inv_a2 = 1.0 / (a * a)

    def jax_fn(x, theta=None):
        s1 = jnp.sum((x - 1.0 / 3.0) ** 2)
        s2 = jnp.sum((x - 2.0 / 3.0) ** 2)
        # log-sum-exp: in 16-D both exponentials underflow far from the peaks in float32
        return jnp.exp(math.log(0.5) + log_norm + jnp.logaddexp(-s1 * inv_a2, -s2 * inv_a2))

    def numpy_fn(x):
        s1 = np.sum((x - 1.0 / 3.0) ** 2, axis=1)
        s2 = np.sum((x - 2.0 / 3.0) ** 2, axis=1)
        return np.exp(math.log(0.5) + log_norm + np.logaddexp(-s1 * inv_a2, -s2 * inv_a2))

    return Integrand(
        name=f"camel{dim}", dim=dim, reference=camel_reference(dim, a), reference_error=0.0,
        reference_source="exact (erf formula)", structure="axis-aligned",
        description=f"camel, two Gaussians on the diagonal, a = {a}",
        jax_fn=jax_fn, numpy_fn=numpy_fn, settings={"a": a})


# --------------------------------------------------------------------------------- i-flow 2-D

#: Two entangled circles of i-flow (arXiv:2001.05486): exponent, sharpness, centre, radius.
CIRCLES = {"a": 3.0, "w": 250.0, "p1": 0.4, "p2": 0.6, "r": 0.25}


def two_circles_reference() -> tuple[float, float]:
    """Value and error of the two-circles integral.

    Term 1 is ``x2^a exp(-w |rho^2 - r^2|)`` in polar coordinates ``(rho, theta)`` around
    ``(p1, p2)``; for ``a = 3`` the angular integral is exact,
    ``int (p2 + rho sin theta)^3 dtheta = pi (2 p2^3 + 3 p2 rho^2)``, and with ``t = rho^2``
    term 1 is ``(pi/2) int_0^T (2 p2^3 + 3 p2 t) exp(-w |t - r^2|) dt``. Term 2 is term 1
    mirrored by ``x -> 1 - x``, so the total is twice that. The disc ``rho < 0.4`` lies in
    the square; outside it the integrand is below ``exp(-w (0.16 - r^2)) = 2.6e-11``, which
    bounds the truncation (added to the quadrature error).
    """
    c = CIRCLES
    assert c["a"] == 3.0, "the angular integral below is for a = 3"
    p, w, r2 = c["p2"], c["w"], c["r"] ** 2
    t_max = 0.4**2

    def g(t):
        return (2.0 * p**3 + 3.0 * p * t) * math.exp(-w * abs(t - r2))

    val1, err1 = sp_integrate.quad(g, 0.0, r2, epsabs=0.0, epsrel=1e-13, limit=200)
    val2, err2 = sp_integrate.quad(g, r2, t_max, epsabs=0.0, epsrel=1e-13, limit=200)
    truncation = 2.0 * math.exp(-w * (t_max - r2))  # both terms, area < 1, integrand <= bound
    return math.pi * (val1 + val2), math.pi * (err1 + err2) + truncation


def two_circles() -> Integrand:
    """i-flow's entangled circles: ``x2^a exp(-w |(x1-p1)^2 + (x2-p2)^2 - r^2|)`` plus the
    same mirrored through ``(1/2, 1/2)``: two thin rings, not aligned with any axis."""
    c = CIRCLES
    value, error = two_circles_reference()

    def rings(x1, x2, exp, xp):
        t1 = x2 ** c["a"] * exp(-c["w"] * xp.abs((x1 - c["p1"]) ** 2 + (x2 - c["p2"]) ** 2
                                                  - c["r"] ** 2))
        t2 = (1.0 - x2) ** c["a"] * exp(-c["w"] * xp.abs(
            (x1 - 1.0 + c["p1"]) ** 2 + (x2 - 1.0 + c["p2"]) ** 2 - c["r"] ** 2))
        return t1 + t2

    return Integrand(
        name="two_circles", dim=2, reference=value, reference_error=error,
        reference_source="polar reduction + scipy quad (epsrel 1e-13) + truncation bound",
        structure="correlated", description="i-flow's two entangled circles (thin rings)",
        jax_fn=lambda x, theta=None: rings(x[0], x[1], jnp.exp, jnp),
        numpy_fn=lambda x: rings(x[:, 0], x[:, 1], np.exp, np), settings=dict(c))


def annulus(r_min: float = 0.2, r_max: float = 0.45) -> Integrand:
    """Indicator of ``r_min < |x| < r_max`` (a quarter annulus at the origin; i-flow's
    annulus with cuts): a curved, sharp-edged support with zero weight elsewhere."""

    def jax_fn(x, theta=None):
        r2 = jnp.sum(x * x)
        return jnp.where((r2 > r_min**2) & (r2 < r_max**2), 1.0, 0.0).astype(x.dtype)

    def numpy_fn(x):
        r2 = np.sum(x * x, axis=1)
        return ((r2 > r_min**2) & (r2 < r_max**2)).astype(np.float64)

    return Integrand(
        name="annulus", dim=2, reference=math.pi * (r_max**2 - r_min**2) / 4.0,
        reference_error=0.0, reference_source="exact (area of the quarter annulus)",
        structure="correlated", description=f"quarter annulus {r_min} < |x| < {r_max}",
        jax_fn=jax_fn, numpy_fn=numpy_fn, settings={"r_min": r_min, "r_max": r_max})


# --------------------------------------------------------------------------------- rotated Gaussian


def rotated_gaussian(dim: int = 16, sigma_min: float = 0.15, seed: int = 0) -> Integrand:
    """A correlated Gaussian on ``R^dim`` pulled back to the cube by the normal quantile.

    With ``y_i = Phi^-1(x_i)``, ``f(x) = N(y; 0, Sigma) / prod_i phi(y_i)``, so that
    ``int_[0,1]^d f dx = int N(y; 0, Sigma) dy = 1`` exactly. ``Sigma = R diag(s^2) R^T``
    with a random rotation ``R`` (QR of a seeded Gaussian matrix) and ``s`` log-spaced in
    ``[sigma_min, 1]``: narrow ridges along rotated directions, which no product grid can
    follow. ``s <= 1`` keeps ``A = Sigma^-1 - 1`` positive semi-definite, so
    ``f = exp(-y^T A y / 2) / sqrt(det Sigma)`` is bounded and uniform sampling has the finite
    relative variance ``prod_k 1 / (s_k sqrt(2 - s_k^2)) - 1`` (5.7e4 for the defaults).
    """
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    rot = q * np.sign(np.diag(r))
    s = np.geomspace(sigma_min, 1.0, dim)
    a_mat = rot @ np.diag(1.0 / s**2 - 1.0) @ rot.T
    a_mat = 0.5 * (a_mat + a_mat.T)
    half_log_det = float(np.sum(np.log(s)))

    def jax_fn(x, theta=None):
        y = jax.scipy.special.ndtri(x)
        quad = y @ jnp.asarray(a_mat, dtype=x.dtype) @ y
        # x exactly 0 or 1 (measure zero) gives y = -+inf and a non-finite form: weight 0
        return jnp.where(jnp.isfinite(quad), jnp.exp(-0.5 * quad - half_log_det), 0.0)

    def numpy_fn(x):
        y = sp_special.ndtri(x)
        with np.errstate(invalid="ignore"):
            quad = np.einsum("ni,ij,nj->n", y, a_mat, y)
        return np.where(np.isfinite(quad), np.exp(-0.5 * np.nan_to_num(quad) - half_log_det),
                        0.0)

    var_uniform = float(np.prod(1.0 / (s * np.sqrt(2.0 - s * s))) - 1.0)
    return Integrand(
        name=f"gauss{dim}", dim=dim, reference=1.0, reference_error=0.0,
        reference_source="exact (normalised Gaussian under a bijection)",
        structure="correlated",
        description=f"rotated Gaussian (s in [{sigma_min}, 1]) via the normal quantile",
        jax_fn=jax_fn, numpy_fn=numpy_fn,
        settings={"sigma_min": sigma_min, "seed": seed,
                  "uniform_relative_variance": var_uniform})


# --------------------------------------------------------------------------------- processes

#: Drell-Yan (toy PDF, u d s, photon + Z + Z', sqrt(s) = 13 TeV, m_ll > 60 GeV) in pb, from
#: ``drell_yan_quadrature()`` in float64 (scipy quad, epsrel 1e-8 per piece).
DRELL_YAN_REFERENCE = (353.3510575340637, 3.1e-7)
#: e+e- -> mu mu gamma (default settings) in pb, from ``mumugamma_reference()`` in float64.
MUMUGAMMA_REFERENCE = (0.062281283635981136, 1.3583169098455584e-05)
MUMUGAMMA_SOURCE = ("VEGAS per channel, float64: 5 x (1e6 adapting + 2e6 frozen) evaluations, "
                    "chi2/dof 0.29-0.79 per channel")


def drell_yan_quadrature(epsrel: float = 1e-8) -> tuple[float, float]:
    """Drell-Yan cross section by quadrature of the factorised form.

    ``sigma = int dtau/tau int dy sum_q [f_q(x1) f_qbar(x2) + f_qbar(x1) f_q(x2)]
    sigma_hat_q(tau S)`` with ``x_{1,2} = sqrt(tau) e^{+-y}`` and the closed-form partonic
    cross section :func:`jaxnis.physics.cross_sections.sigma_ffbar` (photon, Z and Z').
    Outer integral in ``log s_hat`` (split at the resonances) by adaptive quadrature, inner
    in ``y`` by 128-point Gauss-Legendre (smooth). Run with ``JAX_ENABLE_X64=1``.
    """
    from jaxnis.physics import cross_sections as xs
    from jaxnis.physics import pdf

    proc = drell_yan().process
    params = proc.default_params()
    sqrt_s, m_min = float(params["sqrt_s"]), float(params["m_ll_min"])
    big_s = sqrt_s**2
    flavours = proc.flavours
    iq = [pdf.flavour_index(f) for f in flavours]
    iqb = [pdf.flavour_index(f + "bar") for f in flavours]
    partonic = jax.jit(lambda rs: jnp.stack([
        xs.sigma_ffbar(rs, params, f, proc.lepton, bosons=proc.bosons) for f in flavours]))
    xfx = jax.jit(pdf.toy_xfx)
    nodes, weights = np.polynomial.legendre.leggauss(128)

    def d_sigma_d_log_s(log_s):
        s = math.exp(log_s)
        tau = s / big_s
        half = -0.5 * math.log(tau)
        y, wy = half * nodes, half * weights
        x1, x2 = math.sqrt(tau) * np.exp(y), math.sqrt(tau) * np.exp(-y)
        f1 = np.asarray(xfx(x1), np.float64) / x1[:, None]  # number densities
        f2 = np.asarray(xfx(x2), np.float64) / x2[:, None]
        lum = np.sum(wy[:, None] * (f1[:, iq] * f2[:, iqb] + f1[:, iqb] * f2[:, iq]), axis=0)
        return float(np.sum(lum * np.asarray(partonic(math.sqrt(s)), np.float64))) * tau

    m_z, m_zp = float(params["M_Z"]), float(params["M_Zp"])
    edges = np.log([m_min**2, (m_z - 10) ** 2, (m_z + 10) ** 2, (m_zp - 100) ** 2,
                    (m_zp + 100) ** 2, big_s])
    total, err = 0.0, 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        v, e = sp_integrate.quad(d_sigma_d_log_s, lo, hi, epsrel=epsrel, limit=400)
        total, err = total + v, err + e
    return total, err


def mumugamma_reference(n_adapt: int = 1_000_000, n_final: int = 4_000_000, nitn: int = 10,
                        seed: int = 1) -> tuple[float, float, dict]:
    """``e+e- -> mu mu gamma`` by VEGAS, one integrator per channel (float64).

    Each channel ``c`` integrates ``alpha_c f J_c`` (prior channel weights) over its own
    unit cube: ``nitn`` adaptive iterations of ``n_adapt / nitn`` points (discarded), then
    ``nitn`` frozen iterations of ``n_final / nitn`` points, whose weighted average is the
    channel's value. Returns the sum, its error and per-channel details (with chi2/dof).
    """
    import vegas

    proc = mumugamma().process
    params = proc.default_params()
    evaluator = ProcessEvaluator(proc, params, chunk=8192)
    rng = np.random.default_rng(seed)
    total, var, details = 0.0, 0.0, {}
    for c, name in enumerate(proc.channel_names):

        @vegas.lbatchintegrand
        def g(x, c=c):
            fj, prior, _ = evaluator(np.full(x.shape[0], c), x)
            return fj * prior[:, c]

        integ = vegas.Integrator([[0.0, 1.0]] * proc.dim, ran_array_generator=rng.random)
        integ(g, nitn=nitn, neval=n_adapt // nitn)
        res = integ(g, nitn=nitn, neval=n_final // nitn, adapt=False)
        total += res.mean
        var += res.sdev**2
        details[name] = {"value": res.mean, "error": res.sdev, "chi2_dof": res.chi2 / res.dof}
    return total, math.sqrt(var), details


def _process_integrand(name, proc, value, error, source, description):
    return Integrand(name=name, dim=proc.dim, reference=value, reference_error=error,
                     reference_source=source, structure="multi-channel", description=description,
                     process=proc, settings={"channels": list(proc.channel_names)})


def drell_yan() -> Integrand:
    from jaxnis.physics import processes as pr

    proc = pr.DrellYan()
    return _process_integrand(
        "drell_yan", proc, *DRELL_YAN_REFERENCE,
        "quadrature of the factorised cross section (float64)",
        "p p -> mu mu via photon, Z, Z' (toy PDF, 13 TeV, m_ll > 60), 3 channels")


def three_jets() -> Integrand:
    from jaxnis.physics import processes as pr

    proc = pr.EEToQQG()
    value = float(proc.reference_sigma(proc.default_params(jnp.float32)))
    # float32 closed form in the default mode: its rounding (~1e-7) is the stated error
    return _process_integrand(
        "three_jets", proc, value, abs(value) * 1e-6, "closed form (reference_sigma)",
        "e+e- -> d dbar g at the Z pole, all y_ij > 0.05, 2 collinear channels")


def mumugamma() -> Integrand:
    from jaxnis.physics import processes as pr

    proc = pr.EEToMuMuGamma()
    return _process_integrand(
        "mumugamma", proc, *MUMUGAMMA_REFERENCE, MUMUGAMMA_SOURCE,
        "e+e- -> mu mu gamma at 1 TeV (radiative return to Z, Z'; FSR), 5 channels")


# --------------------------------------------------------------------------------- peers' side


class ProcessEvaluator:
    """A process's multi-channel integrand for NumPy callers, with timing.

    ``evaluator(channel [N], r [N, d]) -> (fj [N], prior [N, C], features [N, k])`` (NumPy
    float64): ``fj = sign * |f J_c|`` of each event's channel, the normalised prior channel
    weights and the channel-weight-network features. The JAX function is
    ``jit(vmap(process.multichannel().evaluate))`` on fixed chunks of ``chunk`` events
    (the last one padded), so it compiles once whatever the callers' batch sizes.

    Attributes:
        compile_s: seconds spent compiling (first call).
        seconds: seconds spent in calls after compilation; ``events`` events evaluated.
    """

    def __init__(self, process, params, chunk: int = 1024):
        self.process, self.params, self.chunk = process, params, chunk
        self.dim = process.dim
        self.dtype = np.dtype(jax.tree.leaves(params)[0].dtype)
        self._fn = jax.jit(jax.vmap(process.multichannel().evaluate, in_axes=(0, 0, None)))
        self.compile_s = 0.0
        self.seconds = 0.0
        self.events = 0
        self._compiled = False

    def warm_up(self) -> float:
        """Compile now; returns the compile time."""
        if not self._compiled:
            t0 = time.perf_counter()
            jax.block_until_ready(self._fn(np.zeros(self.chunk, np.int32),
                                           np.full((self.chunk, self.dim), 0.5, self.dtype),
                                           self.params))
            self.compile_s = time.perf_counter() - t0
            self._compiled = True
        return self.compile_s

    def reset_counters(self) -> None:
        self.seconds, self.events = 0.0, 0

    def __call__(self, channel, r):
        self.warm_up()
        t0 = time.perf_counter()
        channel = np.asarray(channel, np.int32)
        r = np.asarray(r)
        n = r.shape[0]
        outs = []
        for start in range(0, n, self.chunk):
            c = channel[start:start + self.chunk]
            x = r[start:start + self.chunk]
            pad = self.chunk - x.shape[0]
            if pad:
                c = np.concatenate([c, np.zeros(pad, np.int32)])
                x = np.concatenate([x, np.full((pad, self.dim), 0.5)])
            ev = self._fn(c, x.astype(self.dtype), self.params)
            outs.append([np.asarray(a, np.float64)[: self.chunk - pad]
                         for a in (ev.log_fj, ev.sign, ev.log_prior, ev.features)])
        log_fj, sign, log_prior, features = (np.concatenate(p) for p in zip(*outs, strict=True))
        fj = np.where(np.isfinite(log_fj), sign * np.exp(np.minimum(log_fj, 700.0)), 0.0)
        self.seconds += time.perf_counter() - t0
        self.events += n
        return fj, np.exp(log_prior), features


class CountedFunction:
    """A batched NumPy integrand ``f(x [N, d]) -> [N]`` that counts events and time."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray]):
        self.fn = fn
        self.seconds = 0.0
        self.events = 0

    def reset_counters(self) -> None:
        self.seconds, self.events = 0.0, 0

    def __call__(self, x):
        t0 = time.perf_counter()
        out = np.asarray(self.fn(np.asarray(x, np.float64)), np.float64)
        self.seconds += time.perf_counter() - t0
        self.events += out.shape[0]
        return out


# --------------------------------------------------------------------------------- the suite

FACTORIES: dict[str, Callable[[], Integrand]] = {
    "camel2": lambda: camel(2),
    "camel4": lambda: camel(4),
    "camel8": lambda: camel(8),
    "camel16": lambda: camel(16),
    "two_circles": two_circles,
    "annulus": annulus,
    "gauss16": rotated_gaussian,
    "drell_yan": drell_yan,
    "three_jets": three_jets,
    "mumugamma": mumugamma,
}

#: The default benchmark suite (``camel2`` is for the smoke test).
DEFAULT_SUITE = ("camel4", "camel8", "camel16", "two_circles", "annulus", "gauss16",
                 "drell_yan", "three_jets", "mumugamma")


def get(name: str) -> Integrand:
    """The integrand called ``name`` (``ValueError`` naming the known ones otherwise)."""
    if name not in FACTORIES:
        raise ValueError(f"unknown integrand {name!r}; known: {sorted(FACTORIES)}")
    return FACTORIES[name]()


if __name__ == "__main__":
    if not jax.config.read("jax_enable_x64"):
        raise SystemExit("run with JAX_ENABLE_X64=1 for float64 references")
    print("camel4", camel_reference(4, 0.2), "(REFERENCES.md: 0.9636569684018041)")
    print("two_circles", two_circles_reference())
    t0 = time.perf_counter()
    print("drell_yan", drell_yan_quadrature(), f"{time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    print("mumugamma", mumugamma_reference(), f"{time.perf_counter() - t0:.0f} s")
