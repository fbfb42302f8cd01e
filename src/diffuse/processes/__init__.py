"""Noise processes behind one interface (see `NoiseProcess`)."""

from diffuse.processes.base import NoiseProcess, add_noise, broadcast_to
from diffuse.processes.flow import RectifiedFlow, resolution_shift, shift_time
from diffuse.processes.ve import EDM, VE
from diffuse.processes.vp import CosineVP, DiscreteVP

__all__ = [
    "EDM",
    "PROCESSES",
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

# The closed set of processes a recipe or a saved model may name, by its `process.kind` (a
# table of classes, not a string lookup of arbitrary globals).
PROCESSES: dict[str, type[NoiseProcess]] = {
    "edm": EDM,
    "cosine_vp": CosineVP,
    "discrete_vp": DiscreteVP,
    "ve": VE,
    "rectified_flow": RectifiedFlow,
}
