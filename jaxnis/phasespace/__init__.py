"""Maps from the unit hypercube to particle momenta, with exact weights and inverses.

Every map acts on one event: ``forward(r, cond) -> (x, log_weight)`` and, where it is a
bijection, ``inverse(x, cond) -> (r, log_weight)`` with the opposite log weight; ``cond`` is a
dict of traced arrays (``sqrt_s``, masses, widths, ...). Weights follow
``dPhi_n = (2 pi)^4 delta^4(P - sum p) prod d^3p / ((2 pi)^3 2E)``.
"""

from jaxnis.phasespace.chain import DecayTree, HadronicChannel, HadronicEvent
from jaxnis.phasespace.decays import (
    TChannelMap,
    TwoBodyDecay,
    beams,
    two_body_decay,
    two_body_decay_inverse,
)
from jaxnis.phasespace.luminosity import LuminosityMap, parton_momenta
from jaxnis.phasespace.propagators import BreitWignerMap, PowerLawMap, UniformMap
from jaxnis.phasespace.rambo import Rambo, RamboOnDiet, log_massless_volume, make_cond

__all__ = [
    "BreitWignerMap",
    "DecayTree",
    "HadronicChannel",
    "HadronicEvent",
    "LuminosityMap",
    "PowerLawMap",
    "Rambo",
    "RamboOnDiet",
    "TChannelMap",
    "TwoBodyDecay",
    "UniformMap",
    "beams",
    "log_massless_volume",
    "make_cond",
    "parton_momenta",
    "two_body_decay",
    "two_body_decay_inverse",
]
