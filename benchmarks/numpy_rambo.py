"""Plain NumPy RAMBO and RAMBO-on-diet: the baseline peer of the phase-space benchmark.

Batch-native (NumPy has no ``vmap``): ``r`` is ``[N, d]``, momenta come back as
``[N, n, 4]`` ordered ``(E, px, py, pz)`` in GeV, log weights as ``[N]``. The arithmetic
runs in the dtype of ``r`` (float32 in, float32 out). Weights follow the convention of
``REFERENCES.md``: ``dPhi_n = (2pi)^4 delta^4(P - sum p) prod d^3p / ((2pi)^3 2E)``, so
the massless weight is the constant :func:`massless_volume`.

* :func:`rambo`: Kleiss, Stirling, Ellis, Comput. Phys. Commun. 40 (1986) 359;
  ``4 n`` random numbers; massive momenta by the xi rescaling of the massless ones.
* :func:`rambo_on_diet`: Platzer, arXiv:1308.2922; ``3 n - 4`` random numbers; massive
  momenta by shifting the intermediate masses, ``M_i = K_i + sum_{j >= i} m_j``.

Random numbers must lie in the open interval ``(0, 1)`` (RAMBO takes their logarithm).

Run ``python benchmarks/numpy_rambo.py`` to recompute the massive reference volumes used
by ``benchmarks/phase_space.py``.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = [
    "massless_volume",
    "rambo",
    "rambo_on_diet",
    "run_blocks",
    "run_chunked",
    "solve_diet_mass",
]


def massless_volume(n: int, sqrt_s: float) -> float:
    """Massless n-body phase-space volume.

    ``Phi_n(s) = (2pi)^(4-3n) (pi/2)^(n-1) s^(n-2) / ((n-1)! (n-2)!)``.
    """
    s = float(sqrt_s) ** 2
    return ((2.0 * math.pi) ** (4 - 3 * n) * (math.pi / 2.0) ** (n - 1) * s ** (n - 2)
            / (math.factorial(n - 1) * math.factorial(n - 2)))


def _prepare(r, sqrt_s, masses, n: int):
    r = np.asarray(r)
    if r.dtype not in (np.float32, np.float64):
        raise ValueError(f"r must be float32 or float64, got {r.dtype}")
    dt = r.dtype.type
    sqrt_s = dt(sqrt_s)
    m = None if masses is None else np.asarray(masses, dtype=r.dtype).reshape(n)
    return r, dt, sqrt_s, m


def _unit_vectors(r_cos, r_phi):
    """Unit three-vectors ``[..., 3]`` from ``cos(theta) = 2 r_cos - 1``, ``phi = 2 pi r_phi``."""
    c = 2 * r_cos - 1
    s = np.sqrt(np.maximum(1 - c * c, 0))
    phi = (2 * np.pi) * r_phi
    return np.stack([s * np.cos(phi), s * np.sin(phi), c], axis=-1).astype(r_cos.dtype,
                                                                           copy=False)


def rambo(r, sqrt_s: float, masses=None) -> tuple[np.ndarray, np.ndarray]:
    """RAMBO for a batch: ``r [N, 4 n]`` -> ``(momenta [N, n, 4], log_weight [N])``.

    Per particle the numbers ``(r_cos, r_phi, r_a, r_b)`` give an isotropic massless vector
    of energy ``-log(r_a r_b)``; the sum is boosted to rest and scaled to ``sqrt_s``.
    With ``masses`` (``[n]``) the momenta are rescaled, ``|p_i| = xi |k_i|`` with
    ``sum_i sqrt(m_i^2 + xi^2 |k_i|^2) = sqrt_s`` (Newton), and the weight gets the factor
    ``xi^(2n-3) sqrt_s prod(|p_i|/E_i) / sum(|p_i|^2/E_i)``.
    """
    r = np.asarray(r)
    n = r.shape[-1] // 4
    r, dt, sqrt_s, m = _prepare(r, sqrt_s, masses, n)
    rr = r.reshape(r.shape[0], n, 4)
    q0 = -np.log(rr[..., 2] * rr[..., 3])  # [N, n]
    qv = q0[..., None] * _unit_vectors(rr[..., 0], rr[..., 1])  # [N, n, 3]
    big_q0 = q0.sum(-1)
    big_qv = qv.sum(-2)
    big_m = np.sqrt(big_q0 ** 2 - np.sum(big_qv ** 2, axis=-1))
    b = -big_qv / big_m[:, None]
    x = sqrt_s / big_m
    gamma = big_q0 / big_m
    a = 1 / (1 + gamma)
    bq = np.sum(b[:, None, :] * qv, axis=-1)  # [N, n]
    e = x[:, None] * (gamma[:, None] * q0 + bq)
    pv = x[:, None, None] * (qv + b[:, None, :] * q0[..., None]
                             + (a[:, None] * bq)[..., None] * b[:, None, :])
    logw0 = dt(math.log(massless_volume(n, 1.0))) + dt(2 * (n - 2)) * np.log(sqrt_s)
    logw = np.full(r.shape[0], logw0, dtype=r.dtype)
    if m is None:
        return np.concatenate([e[..., None], pv], axis=-1), logw
    return _rescale_to_massive(e, pv, sqrt_s, m, logw)


def _rescale_to_massive(e, pv, sqrt_s, m, logw):
    """Massless ``(e [N, n], p_vec [N, n, 3])`` summing to ``(sqrt_s, 0)`` -> massive momenta.

    ``|p_i| = xi e_i`` with ``sum_i sqrt(m_i^2 + xi^2 e_i^2) = sqrt_s``, solved by Newton's
    method (convex increasing in ``xi``; the start ``sqrt(1 - (sum m / sqrt_s)^2)`` lies
    above the root, so the iterates decrease monotonically). Adds
    ``log[xi^(2n-3) sqrt_s prod(|p_i|/E_i) / sum(|p_i|^2/E_i)]`` to ``logw``.
    """
    dt = e.dtype.type
    n = e.shape[-1]
    m2 = m * m
    xi = np.full(e.shape[0], np.sqrt(max(1 - (float(m.sum()) / float(sqrt_s)) ** 2, 0.0)),
                 dtype=e.dtype)
    e2 = e * e
    tol = 8 * np.finfo(e.dtype).eps
    for _ in range(50):
        ei = np.sqrt(m2 + (xi * xi)[:, None] * e2)
        step = (ei.sum(-1) - sqrt_s) / (xi * np.sum(e2 / ei, axis=-1))
        xi = xi - step
        if np.all(np.abs(step) <= tol * xi):
            break
    pabs = xi[:, None] * e
    en = np.sqrt(m2 + pabs * pabs)
    logw = (logw + dt(2 * n - 3) * np.log(xi) + np.log(sqrt_s)
            + np.sum(np.log(pabs / en), axis=-1) - np.log(np.sum(pabs * pabs / en, axis=-1)))
    return np.concatenate([en[..., None], xi[:, None, None] * pv], axis=-1), logw


def _ipow(x, k: int):
    """``x ** k`` for a small static integer ``k >= 1`` by repeated multiplication (no ``pow``)."""
    out = x
    for _ in range(k - 1):
        out = out * x
    return out


def solve_diet_mass(r, k: int):
    """Root ``x`` in ``[0, 1]`` of ``F(x) = (k+1) x^k - k x^(k+1) = r`` (fixed-count Newton).

    ``x = M_i^2 / M_(i-1)^2`` is the squared ratio of successive intermediate masses of
    RAMBO-on-diet. ``k = 1`` is solved in closed form, ``x = r / (1 + sqrt(1 - r))``
    (written without the cancellation of ``1 - sqrt(1 - r)``). For ``k >= 2`` the root is
    bracketed by ``lo = (r/(k+1))^(1/k)`` (as ``F(x) <= (k+1) x^k``) and
    ``hi = min(r^(1/k), 1 - sqrt(2 (1-r) / (k (k+1))))`` (as ``F(x^) >= x^k`` for the first,
    and ``1 - F(1-y) <= k (k+1) y^2 / 2`` for the second, which is sharp as ``r -> 1``).
    Newton starts at ``hi``: where ``F`` is convex it descends monotonically; where it is
    concave it overshoots once below the root and then climbs monotonically. Six steps
    (four in float32) reach ``|F(x) - r| < 10 eps`` for all ``k <= 7`` (checked on 1e6
    uniform ``r`` plus the ends ``eps`` and ``1 - eps``), so no data-dependent loop is needed.
    """
    r = np.asarray(r)
    if k == 1:
        return r / (1 + np.sqrt(1 - r))
    lo = (r / (k + 1)) ** (1.0 / k)
    near_one = 1 - np.sqrt((2.0 / (k * (k + 1))) * (1 - r))
    hi = np.minimum(r ** (1.0 / k), np.where(near_one > 0, near_one, 1))
    x = hi
    steps = 4 if r.dtype == np.float32 else 6
    for _ in range(steps):
        xk1 = _ipow(x, k - 1)
        f = xk1 * x * ((k + 1) - k * x) - r
        df = (k * (k + 1)) * xk1 * (1 - x)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_new = x - f / df  # df = 0 only at x = 0 or 1, where the clip below takes over
        x = np.where(np.isfinite(x_new), np.clip(x_new, lo, hi), x)
    return x


def _boost_from_rest(p, big_q, big_m):
    """Boost ``p [..., 4]`` from the rest frame of ``big_q [..., 4]`` (mass ``big_m``) to lab."""
    e = (big_q[..., 0] * p[..., 0] + np.sum(big_q[..., 1:] * p[..., 1:], axis=-1)) / big_m
    c = (p[..., 0] + e) / (big_q[..., 0] + big_m)
    return np.concatenate([e[..., None], p[..., 1:] + c[..., None] * big_q[..., 1:]], axis=-1)


def rambo_on_diet(r, sqrt_s: float, masses=None, method: str = "rescale"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """RAMBO-on-diet for a batch: ``r [N, 3 n - 4]`` -> ``(momenta [N, n, 4], log_weight [N])``.

    ``r[:, :n-2]`` fix the massless intermediate masses ``K_i``, ``i = 2..n-1``, through
    ``K_i^2 = x_i K_(i-1)^2`` with :func:`solve_diet_mass` (``k = n - i``); ``r[:, n-2:]``
    are ``(r_cos, r_phi)`` pairs of the ``n - 1`` two-body decays
    ``Q_i -> p_i + Q_(i+1)``, done in the rest frame of ``Q_i`` and boosted to the lab;
    ``p_n = Q_n``. Massless weight: ``Phi_n(K_1^2)`` with ``K_1 = sqrt_s`` (constant).

    Massive, ``method="rescale"`` (default, as in jaxnis): the massless momenta are
    rescaled as in :func:`rambo`. ``method="shift"`` (Platzer's): ``K_1 = sqrt_s - sum m``,
    ``M_i = K_i + sum_(j>=i) m_j`` and the weight
    ``Phi_n(K_1^2) (K_1 / sqrt_s) prod_i |q_i(M)| / |q_i(K)|`` with ``|q_i|`` the two-body
    momentum of decay ``i`` at the massive and massless masses.
    """
    if method not in ("rescale", "shift"):
        raise ValueError(f"method must be 'rescale' or 'shift', got method={method!r}")
    r = np.asarray(r)
    n = (r.shape[-1] + 4) // 3
    r, dt, sqrt_s, m = _prepare(r, sqrt_s, masses, n)
    if m is not None and method == "rescale":
        p, logw = rambo_on_diet(r, sqrt_s)
        return _rescale_to_massive(p[..., 0], p[..., 1:], sqrt_s, m, logw)
    nb = r.shape[0]
    k1 = sqrt_s if m is None else sqrt_s - m.sum(dtype=r.dtype)
    # Massless intermediate masses K_1 .. K_n (K_n = 0).
    big_k = [np.full(nb, k1, dtype=r.dtype)]
    for i in range(2, n):
        x = solve_diet_mass(r[:, i - 2], n - i)
        big_k.append(big_k[-1] * np.sqrt(x))
    big_k.append(np.zeros(nb, dtype=r.dtype))
    if m is None:
        big_m = big_k
        masses_i = [dt(0)] * n
    else:
        tail = np.cumsum(m[::-1])[::-1]  # sum_(j>=i) m_j
        big_m = [np.full(nb, sqrt_s, dtype=r.dtype)] + [big_k[i] + tail[i] for i in range(1, n)]
        masses_i = list(m)
    dirs = _unit_vectors(r[:, n - 2::2], r[:, n - 1::2])  # [N, n-1, 3]
    q_lab = np.zeros((nb, 4), dtype=r.dtype)
    q_lab[:, 0] = sqrt_s
    out = np.empty((nb, n, 4), dtype=r.dtype)
    log_ratio = np.zeros(nb, dtype=r.dtype)
    for i in range(n - 1):
        mi, mq, mnext = masses_i[i], big_m[i], big_m[i + 1]
        if m is None:
            q = (mq - mnext) * (mq + mnext) / (2 * mq)
        else:
            lam = (mq * mq - (mi + mnext) ** 2) * (mq * mq - (mi - mnext) ** 2)
            q = np.sqrt(np.maximum(lam, 0)) / (2 * mq)
            q0 = (big_k[i] - big_k[i + 1]) * (big_k[i] + big_k[i + 1]) / (2 * big_k[i])
            log_ratio += np.log(q / q0)
        p_rest = np.concatenate([np.sqrt(q * q + mi * mi)[:, None], q[:, None] * dirs[:, i]],
                                axis=-1)
        p = p_rest if i == 0 else _boost_from_rest(p_rest, q_lab, mq)
        out[:, i] = p
        q_lab = q_lab - p
    out[:, n - 1] = q_lab
    logw = np.full(nb, math.log(massless_volume(n, 1.0)), dtype=r.dtype)
    logw = logw + dt(2 * (n - 2)) * np.log(k1)
    if m is not None:
        logw = logw + np.log(k1 / sqrt_s) + log_ratio
    return out, logw.astype(r.dtype, copy=False)


def run_blocks(make_block, size: int, *, threads: int = 1, chunk: int = 1 << 14):
    """Fill ``(momenta [size, ...], log_weight [size])`` block by block in ``threads`` threads.

    ``make_block(start, stop) -> (momenta, log_weight)`` computes events ``start:stop``.
    NumPy ufuncs release the GIL, so blocks run in parallel; small blocks also keep the
    temporaries in cache.
    """
    starts = list(range(0, size, chunk))
    p0, w0 = make_block(0, min(chunk, size))
    p = np.empty((size,) + p0.shape[1:], dtype=p0.dtype)
    w = np.empty((size,), dtype=w0.dtype)
    p[:len(p0)], w[:len(w0)] = p0, w0

    def work(start):
        stop = min(start + chunk, size)
        p[start:stop], w[start:stop] = make_block(start, stop)

    if threads <= 1:
        for s in starts[1:]:
            work(s)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(work, starts[1:]))
    return p, w


def run_chunked(fn, r, *args, threads: int = 1, chunk: int = 1 << 14):
    """Apply the batch function ``fn(r_chunk, *args)`` over chunks of ``r`` (see run_blocks)."""
    r = np.asarray(r)
    return run_blocks(lambda a, b: fn(r[a:b], *args), r.shape[0], threads=threads, chunk=chunk)


def _reference_volumes(sqrt_s: float, masses, ns, n_events: int, seed: int) -> None:
    """Print massive volumes from RAMBO (xi rescaling) and RAMBO-on-diet (mass shift), two
    different constructions on independent streams, and their inverse-variance combination."""
    rng = np.random.default_rng(seed)
    for n in ns:
        ests = []
        shift = lambda r, s, m: rambo_on_diet(r, s, m, method="shift")  # noqa: E731
        for fn, d in ((rambo, 4 * n), (shift, 3 * n - 4)):
            sw = sw2 = 0.0
            done = 0
            while done < n_events:
                size = min(1 << 20, n_events - done)
                r = rng.random((size, d))
                np.clip(r, np.finfo(np.float64).eps, 1 - np.finfo(np.float64).eps, out=r)
                _, lw = run_chunked(fn, r, sqrt_s, masses[:n], threads=2)
                w = np.exp(lw)
                sw, sw2, done = sw + w.sum(), sw2 + (w * w).sum(), done + size
            mean = sw / done
            err = math.sqrt(max(sw2 / done - mean * mean, 0.0) / (done - 1))
            ests.append((mean, err))
        wts = [1 / e ** 2 for _, e in ests]
        mean = sum(w * v for w, (v, _) in zip(wts, ests, strict=True)) / sum(wts)
        err = 1 / math.sqrt(sum(wts))
        print(n, [f"{v:.8g} +- {e:.3g}" for v, e in ests], f"combined {mean:.10g} +- {err:.3g}")


if __name__ == "__main__":
    _reference_volumes(1000.0, (173.0, 173.0, 0.0, 80.4, 80.4, 4.7, 4.7, 0.0),
                       range(3, 9), 16_000_000, 20240607)
