"""Generation parameters stored in, and read back from, a PNG text chunk.

Every image `diffuse generate` writes carries the full recipe under the key "diffuse", as JSON,
so `diffuse generate --from-png FILE` can reproduce it exactly.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from diffuse.io import atomic_path

KEY = "diffuse"


def save_png(image: Image.Image, path: str | Path, params: dict[str, Any], overwrite: bool) -> Path:
    """Write `image` to `path` with `params` as JSON in a PNG text chunk, atomically.

    Args:
        image: the picture.
        path: destination; a missing parent folder is created.
        params: JSON-serialisable generation parameters.
        overwrite: replace an existing file; otherwise an existing file is an error.
    Returns:
        the written path.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"output must be a .png file, got {str(path)!r}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "xb") as handle:
        image.save(handle, format="PNG", pnginfo=_info(params))
    return path


def png_bytes(image: Image.Image, params: dict[str, Any]) -> bytes:
    """The PNG file `save_png` would write, in memory (what a server returns)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=_info(params))
    return buffer.getvalue()


def params_from_bytes(data: bytes) -> dict[str, Any]:
    """The generation parameters inside PNG file contents (ValueError if there are none)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            text = image.text.get(KEY) if hasattr(image, "text") else None
    except OSError as err:
        raise ValueError(f"not a readable PNG: {err}") from None
    if text is None:
        raise ValueError("the PNG carries no diffuse generation parameters")
    return json.loads(text)


def _info(params: dict[str, Any]) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text(KEY, json.dumps(params, sort_keys=True))
    return info


def read_params(path: str | Path) -> dict[str, Any]:
    """The generation parameters stored in a PNG written by `save_png`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such PNG: {path}")
    try:
        with Image.open(path) as image:
            text = image.text.get(KEY) if hasattr(image, "text") else None
    except OSError as err:
        raise ValueError(f"{path} is not a readable PNG: {err}") from None
    if text is None:
        raise ValueError(f"{path} carries no diffuse generation parameters")
    return json.loads(text)
