"""Procedural Shapes data for text-to-image: scenes, captions, renders, and an evaluator.

from diffuse.shapes import ShapesDataset, evaluate
data = ShapesDataset(size=32, split="train")
image, caption, scene = data[0]     # [3, 32, 32] in [-1, 1], "a red circle in the top left"
report = evaluate(images, prompts)  # fraction of prompts fully satisfied, per attribute

Moving Shapes clips (`motion`, `clip_captions`, `clip_dataset`):
clips = MovingShapesDataset(count=1000, frames=16, resolution=32, split="train")
clip, caption = clips[0]            # [3, 16, 32, 32] in [-1, 1], "a red circle moves right"
"""

from diffuse.shapes.clip_captions import clip_caption, clip_paraphrase
from diffuse.shapes.clip_dataset import MovingShapesDataset, collate_clips
from diffuse.shapes.dataset import ShapesDataset, collate_shapes, to_float_image
from diffuse.shapes.evaluator import AdherenceReport, detect_objects, evaluate, parse_prompt
from diffuse.shapes.motion import ClipScene, MovingObject, render_clip, sample_clip_scenes
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
from diffuse.shapes.video_evaluator import ClipAdherenceReport, evaluate_clips

__all__ = [
    "ClipAdherenceReport",
    "ClipScene",
    "MovingObject",
    "MovingShapesDataset",
    "clip_caption",
    "clip_paraphrase",
    "collate_clips",
    "evaluate_clips",
    "render_clip",
    "sample_clip_scenes",
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
