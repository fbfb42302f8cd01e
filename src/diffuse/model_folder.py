"""The saved-model folder: the one place that names its files (and, soon, reads and writes it)."""

from __future__ import annotations

INFO_FILE = "diffusion.json"  # process, parametrisation, conditioning, codec, sampling defaults
WEIGHTS_FILE = "model.safetensors"  # the network's weights (safetensors)
