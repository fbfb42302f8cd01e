"""Images sent in a request body: base64 (or a data: URL) decoded into a checked PIL image.

Every check happens before the pixels are decoded: the size of the upload in bytes, that it is
an image of an accepted format, and its width and height (so a small file cannot expand into a
huge picture). A failure names the request field.
"""

from __future__ import annotations

import base64
import binascii
import io
import re

from PIL import Image, UnidentifiedImageError

__all__ = ["FORMATS", "UploadError", "UploadTooLarge", "decode_image", "encoded_length"]

FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
"""What an uploaded image may be (a mask must stay binary, so PNG or BMP for masks)."""

_DATA_URL = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)


class UploadError(ValueError):
    """An upload that is not a usable image (answered 422, naming the field)."""


class UploadTooLarge(UploadError):
    """An upload over the size limit (answered 413, naming the field)."""


def encoded_length(max_bytes: int) -> int:
    """The longest base64 text (with a data: URL prefix) of `max_bytes` bytes."""
    return 4 * ((max_bytes + 2) // 3) + 64


def decode_image(field: str, text: str, *, size: int, max_bytes: int) -> Image.Image:
    """The image a request field carries, checked and loaded.

    Args:
        field: the field's name, for the messages.
        text: base64 of the file, or a data: URL ("data:image/png;base64,...").
        size: the side in pixels the image must have (the model's; images are not resized).
        max_bytes: the largest file accepted.
    Returns:
        the loaded image (its own mode; `pipelines.image_to_image` converts it).
    Raises:
        UploadTooLarge: over `max_bytes`.
        UploadError: not base64, not an image of `FORMATS`, another size, a damaged file.
    """
    payload = _DATA_URL.sub("", text.strip(), count=1)
    if len(payload) > encoded_length(max_bytes):
        raise UploadTooLarge(f"{field}: the upload is over {max_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise UploadError(f"{field}: not base64 (send the file's bytes in base64)") from None
    if len(data) > max_bytes:
        raise UploadTooLarge(f"{field}: the upload is {len(data)} bytes, over {max_bytes} bytes")
    if not data:
        raise UploadError(f"{field}: the upload is empty")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        raise UploadError(f"{field}: not an image ({', '.join(FORMATS)} are accepted)") from None
    if image.size != (size, size):
        width, height = image.size
        raise UploadError(
            f"{field} is {width}x{height} pixels; the model works at {size}x{size} (images "
            "are not resized, so that what is kept comes back exactly)"
        )
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as err:
        raise UploadError(f"{field}: a damaged image ({err})") from None
    return image
