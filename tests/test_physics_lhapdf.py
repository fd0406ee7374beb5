"""LHAPDF grid loader: the toy PDF tabulated in LHAPDF 6 format by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnis.physics import lhapdf, pdf
from tests.conftest import tol

#: x knots like a real grid: logarithmic at small x, linear at large x.
X_KNOTS = np.concatenate([np.geomspace(1e-7, 0.1, 100, endpoint=False),
                          np.linspace(0.1, 1.0, 150)])
#: Two Q subgrids meeting at 10 GeV (as at a heavy-quark threshold).
Q_BLOCKS = ([1.0, np.sqrt(2.0), 3.0, 10.0], [10.0, 100.0, 1000.0, 1e4])
#: Flavours written to the file (no c, b, t: they read back as zero).
PIDS = [-3, -2, -1, 21, 1, 2, 3]
SLOTS = [pdf.flavour_index(p) for p in PIDS]


def _toy_row(x, q, scale_dependent):
    """x f at one knot in float64 numpy (independent of the JAX code under test)."""
    if x >= 1.0:
        return np.zeros(len(PIDS))
    uv = 5.1072 * x**0.8 * (1 - x) ** 3
    dv = 3.06432 * x**0.8 * (1 - x) ** 4
    g = 1.7 * x**-0.1 * (1 - x) ** 5
    dbar = 0.1939875 * x**-0.1 * (1 - x) ** 6
    ubar = (1 - x) * dbar
    s = 0.2 * (ubar + dbar)
    row = np.array([s, ubar, dbar, g, dv + dbar, uv + ubar, s])
    # linear in log Q^2, which the Hermite interpolation in log Q^2 reproduces exactly
    return row * (1.0 + 0.05 * np.log(q * q / 2.0)) if scale_dependent else row


def write_set(root: Path, name: str, scale_dependent: bool = False) -> Path:
    """Write ``root/name/{name.info, name_0000.dat}`` in LHAPDF 6 ``lhagrid1`` format."""
    directory = root / name
    directory.mkdir(parents=True)
    (directory / f"{name}.info").write_text(
        "# toy PDF of hep-ph/0204316 tabulated for the tests\n"
        f"SetDesc: Les Houches toy PDF ({name})\n"
        "Authors: jaxnis tests\n"
        "Format: lhagrid1\n"
        "NumMembers: 1\n"
        f"Flavors: [{', '.join(str(p) for p in PIDS)}]\n"
        "XMin: 1e-07\nXMax: 1\nQMin: 1\nQMax: 10000\n"
    )
    lines = ["PdfType: central", "Format: lhagrid1", "---"]
    for block in Q_BLOCKS:
        lines.append(" ".join(f"{v:.12e}" for v in X_KNOTS))
        lines.append(" ".join(f"{v:.12e}" for v in block))
        lines.append(" ".join(str(p) for p in PIDS))
        for x in X_KNOTS:
            for q in block:
                lines.append(" ".join(f"{v: .12e}" for v in _toy_row(x, q, scale_dependent)))
        lines.append("---")
    (directory / f"{name}_0000.dat").write_text("\n".join(lines) + "\n")
    return directory


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("lhapdf")
    write_set(root, "ToyLH")
    write_set(root, "ToyLHQ", scale_dependent=True)
    return root


@pytest.fixture(scope="module")
def grid(sets):
    return lhapdf.load_lhapdf("ToyLH", data_path=sets)


def _x_samples():
    # away from the edges: x in [1e-6, 0.8]
    return np.concatenate([np.geomspace(1e-6, 0.1, 40), np.linspace(0.1, 0.8, 40)])


def test_loader_structure(sets, grid):
    assert len(grid.subgrids) == 2
    sg = grid.subgrids[0]
    assert sg.xf.shape == (13, X_KNOTS.size, 4)
    np.testing.assert_allclose(np.exp(sg.log_x), X_KNOTS, rtol=1e-12)
    np.testing.assert_allclose(np.exp(grid.subgrids[1].log_q2 / 2), Q_BLOCKS[1], rtol=1e-12)
    for name in ("c", "cbar", "b", "bbar", "t", "tbar"):
        assert np.all(sg.xf[pdf.flavour_index(name)] == 0.0)
    info = lhapdf.read_info(sets / "ToyLH" / "ToyLH.info")
    assert info["NumMembers"] == 1 and info["Flavors"] == PIDS and info["XMin"] == 1e-7
    # the set can also be given by its directory
    direct = lhapdf.load_lhapdf(sets / "ToyLH")
    np.testing.assert_array_equal(direct.subgrids[1].xf, grid.subgrids[1].xf)


def test_interpolation_matches_analytic_toy(dtype, grid):
    x = jnp.asarray(_x_samples(), dtype)
    want = np.stack([_toy_row(v, 1.0, False) for v in _x_samples()])
    fn = jax.jit(lhapdf.xfxq2)
    for q in (1.2, np.sqrt(2.0), 5.0, 10.0, 91.188, 5000.0):
        got = fn(grid, x, jnp.asarray(q * q, dtype))
        assert got.shape == (x.size, 13) and got.dtype == dtype
        got = np.asarray(got, np.float64)
        rel = np.abs(got[:, SLOTS] - want) / np.abs(want)
        assert rel.max() < 1e-4, (q, rel.max())
        assert np.all(got[:, [pdf.flavour_index(f) for f in ("c", "b", "t")]] == 0.0)
        # on the knots themselves the interpolation returns the tabulated values
        on = fn(grid, jnp.asarray(X_KNOTS[100:110], dtype), jnp.asarray(q * q, dtype))
        knot = np.stack([_toy_row(v, q, False) for v in X_KNOTS[100:110]])
        np.testing.assert_allclose(np.asarray(on)[:, SLOTS], knot, rtol=tol(dtype, 3e-6, 1e-11))


def test_interpolation_in_q_and_across_subgrids(dtype, sets):
    grid = lhapdf.load_lhapdf("ToyLHQ", data_path=sets)
    x = jnp.asarray(_x_samples(), dtype)
    fn = jax.jit(lhapdf.xfxq2)
    for q in (1.1, 2.0, 9.99, 10.0, 10.01, 30.0, 3000.0):
        got = np.asarray(fn(grid, x, jnp.asarray(q * q, dtype)), np.float64)
        want = np.stack([_toy_row(v, q, True) for v in _x_samples()])
        rel = np.abs(got[:, SLOTS] - want) / np.abs(want)
        assert rel.max() < 1e-4, (q, rel.max())


def test_outside_the_grid_is_frozen(dtype, grid):
    fn = jax.jit(lhapdf.xfxq2)
    # (x, Q^2) pairs, one batch: four copies of the x_min edge, two of x = 1, then the
    # Q_min edge three times and the Q_max edge twice (x = 0.01)
    x = jnp.asarray([1e-7, 1e-9, 0.0, -1.0, 1.0, 1.5, 0.01, 0.01, 0.01, 0.01, 0.01], dtype)
    q2 = jnp.asarray([100.0] * 6 + [1.0, 0.5, 1e-3, 1e8, 1e12], dtype)
    out = np.asarray(fn(grid, x, q2))
    np.testing.assert_allclose(out[1:4], np.broadcast_to(out[0], (3, 13)))
    assert np.all(out[4:6] == 0.0)
    np.testing.assert_allclose(out[7:9], np.broadcast_to(out[6], (2, 13)))
    np.testing.assert_allclose(out[10], out[9])
    g = jax.jit(jax.grad(lambda v: lhapdf.xfxq2(grid, v, jnp.asarray(100.0, dtype))[6]))(
        jnp.asarray(1e-9, dtype))
    assert float(g) == 0.0


@pytest.mark.x64
def test_gradients_are_exact_derivatives_of_the_interpolant(grid):
    """AD through the interpolation equals finite differences of the interpolant itself
    (it is C^1), and approximates the analytic derivative of the toy PDF."""
    slot = pdf.flavour_index("u")

    def f(x, q2):
        return lhapdf.xfxq2(grid, x, q2)[slot]

    value = jax.jit(f)
    grads = jax.jit(jax.grad(f, (0, 1)))
    toy_grad = jax.jit(jax.grad(lambda v: pdf.toy_xf(v, "u")))
    for x0, q0 in ((3e-4, 5.0), (0.05, 20.0), (0.45, 300.0), (0.1, 10.0)):
        x0, q2 = jnp.asarray(x0), jnp.asarray(q0 * q0)
        gx, gq = grads(x0, q2)
        h = 1e-7 * x0
        fd = (float(value(x0 + h, q2)) - float(value(x0 - h, q2))) / (2 * float(h))
        np.testing.assert_allclose(float(gx), fd, rtol=1e-6)
        assert abs(float(gq)) < 1e-9  # the toy table does not depend on Q
        np.testing.assert_allclose(float(gx), float(toy_grad(x0)), rtol=2e-2)


# ----------------------------------------------------------------------------- errors


def _corrupt(sets, tmp_path, name, edit):
    """Copy ToyLH to tmp_path/name with the member file lines edited; returns (dir, dat)."""
    src = sets / "ToyLH"
    directory = tmp_path / name
    directory.mkdir()
    (directory / f"{name}.info").write_text((src / "ToyLH.info").read_text())
    lines = (src / "ToyLH_0000.dat").read_text().splitlines()
    lines = edit(lines)
    dat = directory / f"{name}_0000.dat"
    dat.write_text("\n".join(lines) + "\n")
    return directory, dat


FIRST_ROW = 7  # header (2 lines), '---', x, Q, flavours, then the first row on line 7
N_ROWS = X_KNOTS.size * len(Q_BLOCKS[0])

CORRUPTIONS = [
    ("token", lambda ls: ls[:9] + [ls[9].replace(" ", " abc ", 1)] + ls[10:], 10,
     "'abc' is not a number"),
    ("short-row", lambda ls: ls[:11] + [" ".join(ls[11].split()[:-1])] + ls[12:], 12,
     "expected 7 values"),
    ("nan", lambda ls: ls[:7] + [ls[7].replace(ls[7].split()[0], "nan", 1)] + ls[8:], 8,
     "non-finite"),
    ("x-order", lambda ls: ls[:3] + [" ".join(reversed(ls[3].split()))] + ls[4:], 4,
     "x knots"),
    ("flavours", lambda ls: ls[:5] + ["-3 -2 -1 21 1 2 2"] + ls[6:], 6, "distinct"),
    ("missing-rows", lambda ls: ls[:FIRST_ROW + 5] + ls[FIRST_ROW - 1 + N_ROWS:], 13,
     "block ends after 6 rows"),
    ("no-final-separator", lambda ls: ls[:-1], None, "unexpected end of file"),
    ("no-separator", lambda ls: ls[:2], 2, "no '---'"),
    ("format", lambda ls: ["PdfType: central", "Format: lhagrid2"] + ls[2:], 2,
     "unsupported Format"),
    ("header", lambda ls: ["PdfType central"] + ls[1:], 1, "Key: value"),
]


@pytest.mark.parametrize("name,edit,line,message", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_malformed_member_names_file_and_line(sets, tmp_path, name, edit, line, message):
    directory, dat = _corrupt(sets, tmp_path, name, edit)
    with pytest.raises(lhapdf.LHAPDFFormatError, match=message) as err:
        lhapdf.load_lhapdf(directory)
    n_lines = len(dat.read_text().splitlines())
    want_line = n_lines if line is None else line
    assert err.value.path == str(dat)
    assert err.value.line == want_line
    assert str(err.value).startswith(f"{dat}:{want_line}: ")


def test_missing_and_malformed_info_and_sets(sets, tmp_path):
    with pytest.raises(FileNotFoundError, match="NoSuchSet"):
        lhapdf.load_lhapdf("NoSuchSet", data_path=[sets, tmp_path])
    directory, dat = _corrupt(sets, tmp_path, "NoMember", lambda ls: ls)
    dat.unlink()
    with pytest.raises(FileNotFoundError, match="NoMember_0000.dat"):
        lhapdf.load_lhapdf(directory)
    with pytest.raises(ValueError, match="member 1"):
        lhapdf.load_lhapdf(sets / "ToyLH", member=1)
    directory, _ = _corrupt(sets, tmp_path, "BadInfo", lambda ls: ls)
    info = directory / "BadInfo.info"
    info.write_text("SetDesc: fine\nthis line has no colon\nNumMembers: 1\n")
    with pytest.raises(lhapdf.LHAPDFFormatError, match=r"BadInfo.info:2: ") as err:
        lhapdf.load_lhapdf(directory)
    assert err.value.line == 2
    info.unlink()
    with pytest.raises(FileNotFoundError, match="BadInfo.info"):
        lhapdf.load_lhapdf(directory)


def test_data_path_from_environment(sets, monkeypatch):
    monkeypatch.setenv("LHAPDF_DATA_PATH", f"/nonexistent{':'}{sets}")
    grid = lhapdf.load_lhapdf("ToyLH")
    assert len(grid.subgrids) == 2
