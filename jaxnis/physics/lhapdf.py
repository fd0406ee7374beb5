"""LHAPDF 6 grid loader and log-bicubic interpolation in JAX.

Reads a PDF set from a user's LHAPDF data directory (nothing is downloaded): a set is a
directory ``NAME/`` holding ``NAME.info`` (``Key: value`` lines) and one file per member,
``NAME/NAME_0000.dat`` for the central member. A member file in the ``lhagrid1`` format is a
header (``Key: value`` lines) followed by one or more subgrids, each introduced by a line
``---`` and made of

1. a line of ``x`` knots (increasing, in ``(0, 1]``),
2. a line of ``Q`` knots in GeV (increasing),
3. a line of PDG flavour ids (``21`` or ``0`` for the gluon),
4. ``n_x * n_Q`` lines of ``x f(x, Q)`` values, one column per flavour, ``x`` the outer and
   ``Q`` the inner loop,

and the file ends with a final ``---``. Subgrids split the ``Q`` range (e.g. at heavy-quark
thresholds). Any missing or malformed file raises an error naming the file and line.

Interpolation (:func:`xfxq2`) follows LHAPDF's ``logbicubic`` scheme: cubic Hermite
interpolation of ``x f`` in ``log x``, whose knot derivatives are the mean of the adjacent
finite-difference slopes (one-sided at the grid edges), evaluated at four neighbouring
``Q`` knots, then cubic Hermite interpolation in ``log Q^2`` with slopes formed the same
way. It is jit-able and differentiable in ``x`` and ``Q^2`` (piecewise cubic, C^1).

**Outside the grid** the density is *frozen*: ``x`` and ``Q^2`` are clamped to the grid
range, so the value is that at the nearest edge and the derivative across the edge is
zero (LHAPDF's ``Nearest`` extrapolator). In particular ``x`` above the last knot
(usually 1, where ``x f = 0``) gives the last knot's value, and ``x <= 0`` gives the value at
``x_min``. Users who need small-x extrapolation should choose a grid reaching low enough.

Example:
    >>> grid = load_lhapdf("CT18NLO", data_path="/usr/share/LHAPDF")  # doctest: +SKIP
    >>> xf = xfxq2(grid, 0.01, 100.0**2)  # [13], LHAPDF flavour order  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxnis.physics.pdf import PIDS, flavour_index
from jaxnis.types import Array, ArrayLike

N_FLAVOURS = len(PIDS)


class LHAPDFFormatError(ValueError):
    """A malformed LHAPDF file; the message starts with ``path:line:``."""

    def __init__(self, path: str | os.PathLike, line: int, message: str):
        self.path = str(path)
        self.line = line
        super().__init__(f"{path}:{line}: {message}")


class SubGrid(NamedTuple):
    """One ``Q`` block of a member grid (float64 numpy arrays).

    Attributes:
        log_x: ``[n_x]`` knots in ``log x``.
        log_q2: ``[n_Q]`` knots in ``log Q^2``.
        xf: ``[13, n_x, n_Q]`` values of ``x f`` in the LHAPDF flavour order (zero for
            flavours the file does not list).
        dxf_dlogx: ``[13, n_x, n_Q]`` knot derivatives in ``log x`` used by the Hermite
            interpolation.
    """

    log_x: np.ndarray
    log_q2: np.ndarray
    xf: np.ndarray
    dxf_dlogx: np.ndarray


class PDFGrid(NamedTuple):
    """A loaded member: a tuple of :class:`SubGrid` ordered in ``Q`` (a pytree of arrays)."""

    subgrids: tuple[SubGrid, ...]


# ----------------------------------------------------------------------------- parsing


def _parse_floats(path, lineno: int, line: str, what: str) -> list[float]:
    try:
        values = [float(tok) for tok in line.split()]
    except ValueError:
        bad = next(tok for tok in line.split() if not _is_float(tok))
        raise LHAPDFFormatError(path, lineno, f"{what}: {bad!r} is not a number") from None
    if not all(math.isfinite(v) for v in values):
        raise LHAPDFFormatError(path, lineno, f"{what}: non-finite value")
    return values


def _is_float(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


def _parse_info_value(raw: str):
    raw = raw.strip()
    if raw.startswith("[") and raw.endswith("]"):
        items = [item.strip() for item in raw[1:-1].split(",") if item.strip()]
        return [_parse_info_value(item) for item in items]
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw.strip("\"'")


def read_info(path: str | os.PathLike) -> dict:
    """Read a ``NAME.info`` file (``Key: value`` lines; ``#`` comments; indented lines
    continue the previous value; ``[a, b]`` lists; numbers converted).

    Raises:
        FileNotFoundError: naming the missing file.
        LHAPDFFormatError: naming the file and line of a malformed line, or an unsupported
            ``Format``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: LHAPDF info file not found")
    info: dict = {}
    raw: dict[str, str] = {}
    lines: dict[str, int] = {}
    last = None
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in " \t" and last is not None:
            raw[last] += " " + stripped
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip() or " " in key.strip():
            raise LHAPDFFormatError(path, lineno, f"expected 'Key: value', got {line!r}")
        last = key.strip()
        raw[last] = value
        lines[last] = lineno
    for key, value in raw.items():
        info[key] = _parse_info_value(value)
    fmt = info.get("Format", "lhagrid1")
    if fmt != "lhagrid1":
        raise LHAPDFFormatError(path, lines["Format"], f"unsupported Format {fmt!r}")
    return info


def read_member(path: str | os.PathLike) -> list[tuple[np.ndarray, np.ndarray, list[int],
                                                       np.ndarray]]:
    """Parse a member file into raw blocks ``(x, Q, pids, values [n_x * n_Q, n_flav])``.

    Raises:
        FileNotFoundError: naming the missing file.
        LHAPDFFormatError: naming the file and line of the first problem (non-numeric or
            non-finite value, wrong number of columns or rows, knots not increasing or out
            of range, repeated flavour, missing ``---`` separator, unsupported ``Format``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: LHAPDF member file not found")
    lines = path.read_text().splitlines()
    n = len(lines)
    i = 0
    # header: Key: value lines up to the first '---'
    while i < n and lines[i].strip() != "---":
        stripped = lines[i].strip()
        if stripped and not stripped.startswith("#"):
            key, sep, value = stripped.partition(":")
            if not sep:
                raise LHAPDFFormatError(path, i + 1, f"expected 'Key: value' header line or "
                                        f"'---', got {lines[i]!r}")
            if key.strip() == "Format" and value.strip() != "lhagrid1":
                raise LHAPDFFormatError(path, i + 1, f"unsupported Format {value.strip()!r}")
        i += 1
    if i == n:
        raise LHAPDFFormatError(path, n, "no '---' separator: no grid found")
    i += 1  # skip '---'
    blocks = []

    def need(what: str) -> tuple[int, str]:
        if i >= n:
            raise LHAPDFFormatError(path, n, f"unexpected end of file, expected {what}")
        return i + 1, lines[i]

    while True:
        # end of file after a separator (blank lines allowed)
        rest = [ln for ln in lines[i:] if ln.strip()]
        if not rest and blocks:
            break
        lineno, line = need("x knots")
        x = np.asarray(_parse_floats(path, lineno, line, "x knots"))
        if x.size < 2 or np.any(np.diff(x) <= 0) or x[0] <= 0 or x[-1] > 1:
            raise LHAPDFFormatError(path, lineno, "x knots must be >= 2 increasing values "
                                    "in (0, 1]")
        i += 1
        lineno, line = need("Q knots")
        q = np.asarray(_parse_floats(path, lineno, line, "Q knots"))
        if q.size < 1 or np.any(np.diff(q) <= 0) or q[0] <= 0:
            raise LHAPDFFormatError(path, lineno, "Q knots must be increasing positive values")
        i += 1
        lineno, line = need("flavour ids")
        try:
            pids = [int(tok) for tok in line.split()]
        except ValueError:
            raise LHAPDFFormatError(path, lineno, f"flavour ids must be integers, got "
                                    f"{line!r}") from None
        slots = [21 if p == 0 else p for p in pids]
        if not pids or len(set(slots)) != len(slots):
            raise LHAPDFFormatError(path, lineno, "flavour ids must be non-empty and distinct")
        i += 1
        rows = np.empty((x.size * q.size, len(pids)))
        for r in range(rows.shape[0]):
            lineno, line = need(f"{rows.shape[0]} rows of {len(pids)} values")
            if line.strip() == "---":
                raise LHAPDFFormatError(path, lineno, f"block ends after {r} rows, expected "
                                        f"{rows.shape[0]} (n_x * n_Q)")
            vals = _parse_floats(path, lineno, line, "x f values")
            if len(vals) != len(pids):
                raise LHAPDFFormatError(path, lineno, f"expected {len(pids)} values (one per "
                                        f"flavour), got {len(vals)}")
            rows[r] = vals
            i += 1
        lineno, line = need("'---'")
        if line.strip() != "---":
            raise LHAPDFFormatError(path, lineno, f"expected '---' after {rows.shape[0]} rows, "
                                    f"got {line!r}")
        i += 1
        blocks.append((x, q, pids, rows))
    return blocks


def _knot_slopes(values: np.ndarray, knots: np.ndarray, axis: int) -> np.ndarray:
    """Mean of adjacent finite-difference slopes along ``axis`` (one-sided at the edges)."""
    v = np.moveaxis(values, axis, -1)
    h = np.diff(knots)
    slopes = np.diff(v, axis=-1) / h
    out = np.empty_like(v)
    out[..., 0] = slopes[..., 0]
    out[..., -1] = slopes[..., -1]
    out[..., 1:-1] = 0.5 * (slopes[..., 1:] + slopes[..., :-1])
    return np.moveaxis(out, -1, axis)


def _subgrid(x, q, pids, rows) -> SubGrid:
    xf = np.zeros((N_FLAVOURS, x.size, q.size))
    table = rows.reshape(x.size, q.size, len(pids))
    for col, pid in enumerate(pids):
        try:
            slot = flavour_index(pid)
        except ValueError:
            continue  # flavours outside the 13 QCD slots (e.g. the photon, 22) are dropped
        xf[slot] = table[..., col]
    log_x = np.log(x)
    return SubGrid(log_x=log_x, log_q2=2.0 * np.log(q), xf=xf,
                   dxf_dlogx=_knot_slopes(xf, log_x, axis=1))


def _search_paths(data_path) -> list[Path]:
    if data_path is None:
        env = os.environ.get("LHAPDF_DATA_PATH", "") or os.environ.get("LHAPATH", "")
        return [Path(p) for p in env.split(os.pathsep) if p]
    if isinstance(data_path, str | os.PathLike):
        return [Path(data_path)]
    return [Path(p) for p in data_path]


def find_set(name_or_path: str | os.PathLike,
             data_path: str | os.PathLike | Sequence[str | os.PathLike] | None = None) -> Path:
    """Directory of a PDF set: ``name_or_path`` itself if it is a directory, else
    ``DIR/name`` for the first ``DIR`` of ``data_path`` (default: ``$LHAPDF_DATA_PATH``,
    colon separated) that holds it.

    Raises:
        FileNotFoundError: naming the set and the directories searched.
    """
    direct = Path(name_or_path)
    if direct.is_dir():
        return direct
    searched = _search_paths(data_path)
    for base in searched:
        candidate = base / str(name_or_path)
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"PDF set {str(name_or_path)!r} not found; searched {[str(p) for p in searched]} "
        "(pass data_path= or set LHAPDF_DATA_PATH to your LHAPDF data directory)"
    )


def load_lhapdf(name_or_path: str | os.PathLike, member: int = 0, *,
                data_path: str | os.PathLike | Sequence[str | os.PathLike] | None = None
                ) -> PDFGrid:
    """Load one member of an LHAPDF 6 set into a :class:`PDFGrid`.

    Args:
        name_or_path: set name (looked up in ``data_path``) or the set directory.
        member: member number (``0`` = central), reads ``NAME_{member:04d}.dat``.
        data_path: directory or list of directories holding sets; default
            ``$LHAPDF_DATA_PATH``.

    Returns:
        The grid, ready for :func:`xfxq2`.

    Raises:
        FileNotFoundError: missing set, info or member file (naming it).
        LHAPDFFormatError: malformed info or member file (naming file and line).
        ValueError: a ``member`` beyond the set's ``NumMembers``.
    """
    directory = find_set(name_or_path, data_path)
    name = directory.name
    info = read_info(directory / f"{name}.info")
    n_members = info.get("NumMembers")
    if not isinstance(member, int) or member < 0 or (
        isinstance(n_members, int) and member >= n_members
    ):
        raise ValueError(f"member {member!r} out of range for {name} "
                         f"(NumMembers = {n_members})")
    blocks = read_member(directory / f"{name}_{member:04d}.dat")
    subgrids = tuple(_subgrid(*block) for block in blocks)
    return PDFGrid(subgrids=subgrids)


# ----------------------------------------------------------------------------- interpolation


def _hermite(t, f0, f1, d0, d1):
    """Cubic Hermite on ``[0, 1]`` with end values ``f0, f1`` and scaled slopes ``d0, d1``."""
    t2 = t * t
    t3 = t2 * t
    return ((2 * t3 - 3 * t2 + 1) * f0 + (t3 - 2 * t2 + t) * d0
            + (-2 * t3 + 3 * t2) * f1 + (t3 - t2) * d1)


def _interval(knots, v):
    """Index ``i`` with ``knots[i] <= v < knots[i + 1]`` (clipped), width, fraction."""
    i = jnp.clip(jnp.searchsorted(knots, v, side="right") - 1, 0, knots.shape[0] - 2)
    h = knots[i + 1] - knots[i]
    return i, h, (v - knots[i]) / h


def _interp_subgrid(sg: SubGrid, lx: Array, lq: Array, dtype) -> Array:
    """Log-bicubic interpolation of one subgrid at ``lx, lq`` (shape ``[...]``) -> [13, ...]."""
    kx = jnp.asarray(sg.log_x, dtype)
    kq = jnp.asarray(sg.log_q2, dtype)
    xf = jnp.asarray(sg.xf, dtype)
    dxf = jnp.asarray(sg.dxf_dlogx, dtype)
    lx = jnp.clip(lx, kx[0], kx[-1])
    ix, hx, tx = _interval(kx, lx)

    def in_x(j):  # x-interpolated values at Q knot index j -> [13, ...]
        return _hermite(tx, xf[:, ix, j], xf[:, ix + 1, j], dxf[:, ix, j] * hx,
                        dxf[:, ix + 1, j] * hx)

    nq = kq.shape[0]
    if nq == 1:
        return in_x(jnp.zeros_like(ix))
    lq = jnp.clip(lq, kq[0], kq[-1])
    iq, hq, tq = _interval(kq, lq)
    jm, jp2 = jnp.maximum(iq - 1, 0), jnp.minimum(iq + 2, nq - 1)
    f_m, f_0, f_1, f_2 = in_x(jm), in_x(iq), in_x(iq + 1), in_x(jp2)
    slope_mid = (f_1 - f_0) / hq
    # one-sided slopes at the first/last Q knot, else the mean of the adjacent slopes;
    # the where-guarded widths avoid 0/0 on the unused branch at the edges.
    has_lo, has_hi = iq > 0, iq + 2 < nq
    h_lo = jnp.where(has_lo, kq[iq] - kq[jm], 1.0)
    h_hi = jnp.where(has_hi, kq[jp2] - kq[iq + 1], 1.0)
    d0 = jnp.where(has_lo, 0.5 * (slope_mid + (f_0 - f_m) / h_lo), slope_mid)
    d1 = jnp.where(has_hi, 0.5 * (slope_mid + (f_2 - f_1) / h_hi), slope_mid)
    return _hermite(tq, f_0, f_1, d0 * hq, d1 * hq)


def xfxq2(grid: PDFGrid, x: ArrayLike, q2: ArrayLike) -> Array:
    """Interpolated ``x f(x, Q^2)`` for all 13 flavours, shape ``[..., 13]`` (LHAPDF order,
    see :mod:`jaxnis.physics.pdf`).

    Args:
        grid: a loaded :class:`PDFGrid`.
        x: momentum fractions, shape ``[...]``.
        q2: factorisation scales squared in GeV^2, broadcastable with ``x``.

    Returns:
        ``x f``; dtype follows ``x`` and ``q2``. Outside the grid the value is frozen at the
        nearest edge (see the module docstring).
    """
    x = jnp.asarray(x)
    q2 = jnp.asarray(q2)
    dtype = jnp.result_type(x, q2)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    x, q2 = jnp.broadcast_arrays(x.astype(dtype), q2.astype(dtype))
    first = grid.subgrids[0]
    # clamp before the log (x <= 0 would give -inf or nan); gradient 0 outside the grid
    lx = jnp.log(jnp.maximum(x, jnp.exp(jnp.asarray(first.log_x[0], dtype))))
    lq = jnp.log(jnp.maximum(q2, jnp.exp(jnp.asarray(first.log_q2[0], dtype))))
    out = _interp_subgrid(first, lx, lq, dtype)
    for sg in grid.subgrids[1:]:
        # subgrids are ordered in Q; from its lowest knot on, the next one takes over
        start = jnp.asarray(sg.log_q2[0], dtype)
        out = jnp.where(lq >= start, _interp_subgrid(sg, lx, lq, dtype), out)
    return jnp.moveaxis(out, 0, -1)


def xfxq(grid: PDFGrid, x: ArrayLike, q: ArrayLike) -> Array:
    """:func:`xfxq2` at ``Q^2 = q^2`` (``q`` in GeV)."""
    q = jnp.asarray(q)
    return xfxq2(grid, x, q * q)


__all__ = [
    "LHAPDFFormatError",
    "N_FLAVOURS",
    "PDFGrid",
    "SubGrid",
    "find_set",
    "load_lhapdf",
    "read_info",
    "read_member",
    "xfxq",
    "xfxq2",
]
