"""The ``jaxnis`` command: the README's main job runs and its numbers agree with their
references (float64, as ``jaxnis demo`` runs by default)."""

from __future__ import annotations

import re

import pytest

from jaxnis import cli


@pytest.mark.x64
def test_quick_demo_runs_and_every_pull_is_small(capsys):
    assert cli.demo(quick=True) == 0
    text = capsys.readouterr().out
    assert "(float64)" in text and "done in" in text
    pulls = [float(p) for p in re.findall(r"\(pull ([+-][0-9.]+)\)", text)]
    # two volumes, sigma(ee -> mu mu), d sigma / d M_Z, sigma(Drell-Yan)
    assert len(pulls) == 5, text
    assert all(abs(p) < 4 for p in pulls), pulls
    channels = [float(v) for v in re.findall(r"channel \w+ +([0-9.]+) pb", text)]
    sigma, error = map(float, re.search(r"sigma \(m_ll > 60 GeV\) +([0-9.]+) \+- ([0-9.e+-]+)",
                                        text).groups())
    # the channel contributions (averaged over the refine iterations like the total) add up
    # to it, up to the printed digits; the Z dominates
    assert len(channels) == 3 and abs(sum(channels) - sigma) < 1e-4 * sigma, (channels, sigma)
    assert error > 0
    assert max(channels) == channels[1] > 0.9 * sigma


def test_unknown_command_is_an_error():
    with pytest.raises(SystemExit):
        cli.main(["fly"])


def test_volume_error_of_a_constant_weight_is_the_rounding_of_its_precision():
    """RAMBO on diet's massless weight is the same for every event: in float32 its mean sat
    4 ulp from the volume with a spread-based error of 1e-12 of it (printed pull +7e5)."""
    import jax
    import jax.numpy as jnp

    from jaxnis.phasespace import RamboOnDiet

    ps = RamboOnDiet(4)
    cond = {"sqrt_s": jnp.asarray(1000.0, jnp.float32)}
    value, error = cli._volume(ps, cond, jax.random.key(0), 2000, jnp.float32)
    assert error < 1e-5 * value
    assert abs(value - 132965.64302788844) < 4 * error, (value, error)
