"""Codecs between data and the space the denoiser works in, and conditioning encoders."""

from diffuse.codecs.text_encoder import TextEncoder, TextEncoding

__all__ = ["TextEncoder", "TextEncoding"]
