"""Noise processes behind one interface (see `NoiseProcess`)."""

from diffuse.processes.base import NoiseProcess, add_noise, broadcast_to
from diffuse.processes.flow import RectifiedFlow, resolution_shift, shift_time
from diffuse.processes.ve import EDM, VE
from diffuse.processes.vp import CosineVP, DiscreteVP

__all__ = [
    "EDM",
    "VE",
    "CosineVP",
    "DiscreteVP",
    "NoiseProcess",
    "RectifiedFlow",
    "add_noise",
    "broadcast_to",
    "resolution_shift",
    "shift_time",
]
