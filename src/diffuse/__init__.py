"""diffuse: a PyTorch toolkit for diffusion models.

`diffuse.load_pipeline` and `diffuse.TextToImagePipeline` are the text-to-image entry points;
they are imported on first use (PEP 562), so `import diffuse` stays light for the command line
and for code that needs only the processes or samplers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["TextToImagePipeline", "__version__", "load_pipeline"]

if TYPE_CHECKING:
    from diffuse.pipelines.text_to_image import TextToImagePipeline, load_pipeline

_LAZY = {
    "load_pipeline": "diffuse.pipelines.text_to_image",
    "TextToImagePipeline": "diffuse.pipelines.text_to_image",
}


def __getattr__(name: str) -> Any:
    """The real function or class behind a lazy name (so `help()` shows its signature)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'diffuse' has no attribute {name!r}")
