"""Codecs between data and the space the denoiser works in, and conditioning encoders."""

from diffuse.codecs.base import Codec, PromptEncoder
from diffuse.codecs.text_encoder import TextEncoder, TextEncoding

__all__ = ["Codec", "PromptEncoder", "TextEncoder", "TextEncoding"]
