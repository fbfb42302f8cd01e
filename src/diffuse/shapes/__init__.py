"""Procedural Shapes data for text-to-image: scenes, captions, renders, and an evaluator.

from diffuse.shapes import ShapesDataset, evaluate
data = ShapesDataset(size=32, split="train")
image, caption, scene = data[0]     # [3, 32, 32] in [-1, 1], "a red circle in the top left"
report = evaluate(images, prompts)  # fraction of prompts fully satisfied, per attribute
"""

from diffuse.shapes.dataset import ShapesDataset, collate_shapes, to_float_image
from diffuse.shapes.evaluator import AdherenceReport, detect_objects, evaluate, parse_prompt
from diffuse.shapes.render import render_scene, render_scenes
from diffuse.shapes.scenes import (
    COLOURS,
    SHAPES,
    SIZES,
    Scene,
    ShapeObject,
    caption,
    is_heldout,
    paraphrase,
    sample_scene,
    sample_split_scene,
)

__all__ = [
    "ShapesDataset",
    "collate_shapes",
    "to_float_image",
    "AdherenceReport",
    "detect_objects",
    "evaluate",
    "parse_prompt",
    "render_scene",
    "render_scenes",
    "COLOURS",
    "SHAPES",
    "SIZES",
    "Scene",
    "ShapeObject",
    "caption",
    "is_heldout",
    "paraphrase",
    "sample_scene",
    "sample_split_scene",
]
