"""Editing from an image with the bundled latent model, on held-out Shapes scenes.

Sections (each scored by the Shapes evaluator, `diffuse.shapes.evaluator`):

- recolour: img2img of a held-out one-object render with a caption that changes only the
  object's colour. The strength is chosen on a separate scene stream (--choose-seed) among
  --strengths, then used once on the reported stream. Reports: target fully satisfied, and
  the object's shape and position kept (the evaluator's shape / position checks).
- inversion: invert a held-out render with its caption and regenerate with the same caption;
  PSNR against the render at each --inversion-steps, for each method.
- inversion-edit: two-object held-out scenes; invert with the caption, sample with the caption
  where one object's colour changed. Reports target fully satisfied (which includes the other
  object's shape, colour, size and position) and the per-attribute breakdown.
- inpaint: two- or three-object held-out scenes; the cell of one object is masked and the
  caption asks for another object (new shape and colour) there; training-free inpainting.
  Reports target fully satisfied, and the fraction of images whose pixels outside the mask are
  bit-identical to the input.
- inpaint-trained: the inpaint section's scenes, masks and prompts with a trained inpainting
  model (--inpaint-model), which samples from noise with the mask and masked latents as extra
  inputs; decoded and pasted into the input the same way.
- controlnet: held-out scenes (one to three objects); the control map of the render (kind of
  the --controlnet) plus the caption, against the same prompts and seeds without control.
  Reports every object in the right cell (as many detections as objects, and each object's
  shape detected in its cell), the caption fully satisfied, and whether control scale 0
  reproduces the base model's images bit for bit.
- speed: 4 images x 25 steps: generation, img2img (strength 0.6), inversion edit and
  inpainting (and controlled generation with --controlnet), in one run; seconds and the ratio
  to generation.

    python benchmarks/image_editing.py --json edit.json                 # everything, n = 300
    python benchmarks/image_editing.py --sections speed inversion -n 16
    python benchmarks/image_editing.py --sections controlnet \
        --controlnet models/shapes-controlnet-edges
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time

import numpy as np
import torch

from diffuse.codecs.controls import control_map
from diffuse.pipelines.control import controlled, load_controlnet
from diffuse.pipelines.image_to_image import (
    blend,
    edit_latents,
    inpaint_latents,
    inpaint_with_model,
    invert_latents,
    latent_mask,
    sample_from,
    start_levels,
)
from diffuse.pipelines.sample import to_uint8 as sample_to_uint8
from diffuse.pipelines.text_to_image import load_pipeline
from diffuse.samplers.inversion import get_inversion
from diffuse.samplers.registry import get_sampler
from diffuse.shapes.evaluator import Detection, detect_objects, evaluate, score_detections
from diffuse.shapes.render import render_scene
from diffuse.shapes.scenes import COLOURS, SHAPES, Scene, caption, sample_split_scene

EVAL_SEED = 7  # the reported scene stream (as benchmarks/shapes_adherence.py)
CHOOSE_SEED = 11  # the stream settings are chosen on
SIZE = 64
SECTIONS = (
    "recolour",
    "inversion",
    "inversion-edit",
    "inpaint",
    "inpaint-trained",
    "controlnet",
    "speed",
)


def recoloured(scene: Scene, index: int, k: int = 0) -> Scene:
    """The scene with object k in another colour (one no object of the scene has with that
    shape), chosen deterministically from the index."""
    obj = scene.objects[k]
    taken = {(o.colour, o.shape) for o in scene.objects}
    options = [c for c in COLOURS if c != obj.colour and (c, obj.shape) not in taken]
    new = dataclasses.replace(obj, colour=options[index % len(options)])
    return dataclasses.replace(scene, objects=scene.objects[:k] + (new,) + scene.objects[k + 1 :])


def replaced(scene: Scene, index: int, k: int = 0) -> Scene:
    """The scene with object k replaced by another shape in another colour, same cell/size."""
    obj = scene.objects[k]
    shapes = [s for s in SHAPES if s != obj.shape]
    colours = [c for c in COLOURS if c != obj.colour and all(o.colour != c for o in scene.objects)]
    new = dataclasses.replace(
        obj, shape=shapes[index % len(shapes)], colour=colours[index % len(colours)]
    )
    return dataclasses.replace(scene, objects=scene.objects[:k] + (new,) + scene.objects[k + 1 :])


def cell_mask(row: int, col: int, size: int = SIZE) -> np.ndarray:
    """A binary mask (255 = fill) of one cell of the 3 x 3 grid, rounded outwards."""
    mask = np.zeros((size, size), np.uint8)
    top, bottom = int(np.floor(row * size / 3)), int(np.ceil((row + 1) * size / 3))
    left, right = int(np.floor(col * size / 3)), int(np.ceil((col + 1) * size / 3))
    mask[top:bottom, left:right] = 255
    return mask


def batches(n: int, size: int):
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def encode(pipe, images: list[np.ndarray]) -> torch.Tensor:
    """Latents [N, ...] of uint8 renders [H, W, 3]."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return pipe.model.codec.encode(x)


def conditioning(pipe, prompts: list[str], guidance: float) -> dict:
    """cond / uncond / guidance keywords for one prompt per row."""
    cond = pipe.encoder.encode(prompts).as_cond()
    return {"cond": cond, "uncond": pipe.encoder.encode([""]).as_cond(), "guidance": guidance}


def to_uint8(pipe, latents: torch.Tensor) -> np.ndarray:
    return sample_to_uint8(pipe.model.decode(latents))


def run_recolour(pipe, n: int, choose_n: int, strengths: list[float], batch: int) -> dict:
    guidance = pipe.defaults.guidance
    steps = pipe.defaults.steps

    def score(seed: int, count: int, strength: float) -> dict:
        outs, prompts = [], []
        for rows in batches(count, batch):
            scenes = [sample_split_scene(seed, i, "heldout-1") for i in rows]
            targets = [caption(recoloured(sc, i), seed, i) for sc, i in zip(scenes, rows)]
            latents = encode(pipe, [render_scene(sc, SIZE) for sc in scenes])
            out = edit_latents(
                pipe.model.denoiser,
                latents,
                list(rows),
                strength=strength,
                steps=steps,
                **conditioning(pipe, targets, guidance),
            )
            outs.append(to_uint8(pipe, out))
            prompts += targets
        return evaluate(np.concatenate(outs), prompts).summary()

    choice = {s: score(CHOOSE_SEED, choose_n, s) for s in strengths}
    best = max(strengths, key=lambda s: (choice[s]["score"], -s))
    return {
        "chosen_on": {str(s): choice[s] for s in strengths},
        "strength": best,
        "result": score(EVAL_SEED, n, best),
    }


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()) / 255.0**2
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def inversion_round(
    pipe,
    latents,
    source: dict,
    target: dict,
    method: str,
    refine: int,
    steps: int,
    strength: float = 1.0,
) -> torch.Tensor:
    """Invert latents with `source` conditioning (up to `strength`), sample back with
    `target` (batched)."""
    denoiser = pipe.model.denoiser
    noisy = invert_latents(
        denoiser,
        latents,
        method=method,
        refine=refine,
        steps=steps,
        schedule=pipe.defaults.schedule,
        strength=strength,
        **source,
    )
    levels = start_levels(denoiser.process, pipe.defaults.schedule, steps, strength)
    sampler = get_sampler(get_inversion(method)[1])
    return sample_from(
        denoiser,
        lambda noise, start, count: noisy[start : start + count],
        range(latents.shape[0]),
        lambda denoise, x, noise, start, count: sampler(denoise, x, levels),
        **target,
    )


def run_inversion(pipe, n: int, steps_list: list[int], methods: list[str], guidance: float) -> dict:
    scenes = [sample_split_scene(EVAL_SEED, i, "heldout") for i in range(n)]
    images = [render_scene(s, SIZE) for s in scenes]
    prompts = [caption(s, EVAL_SEED, i) for i, s in enumerate(scenes)]
    results = {}
    latents = encode(pipe, images)
    cond = conditioning(pipe, prompts, guidance)
    for method in methods:
        name, refine = (method.split("+") + ["0"])[:2]
        for steps in steps_list:
            start = time.perf_counter()
            out = inversion_round(pipe, latents, cond, cond, name, int(refine), steps)
            values = [psnr(a, b) for a, b in zip(to_uint8(pipe, out), images)]
            results[f"{method}@{steps}"] = {
                "psnr_mean": float(np.mean(values)),
                "psnr_median": float(np.median(values)),
                "psnr_min": float(np.min(values)),
                "seconds": time.perf_counter() - start,
            }
    codec = []
    for image in images:
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
        back = pipe.model.decode(pipe.model.codec.encode(x))
        rec = ((back[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        codec.append(psnr(rec, image))
    results["codec_only"] = {"psnr_mean": float(np.mean(codec))}
    return results


def run_inversion_edit(
    pipe,
    n: int,
    steps: int,
    guidance: float,
    refine: int,
    method: str = "ddim",
    strength: float = 1.0,
    source_guidance: float | None = None,
    seed: int = EVAL_SEED,
    negative_source: bool = False,
) -> dict:
    """Edit by inversion of scenes of stream `seed`; `source_guidance` (default: `guidance`)
    is the inversion's, `guidance` the way down's; `negative_source`: the source prompt is the
    way down's negative prompt (guidance then pushes along target - source only)."""
    outs, prompts = [], []
    up = guidance if source_guidance is None else source_guidance
    for rows in batches(n, 16):
        scenes = [sample_split_scene(seed, i, "heldout-2") for i in rows]
        sources = [caption(sc, seed, i) for sc, i in zip(scenes, rows)]
        targets = [caption(recoloured(sc, i), seed, i) for sc, i in zip(scenes, rows)]
        latents = encode(pipe, [render_scene(sc, SIZE) for sc in scenes])
        down = conditioning(pipe, targets, guidance)
        if negative_source:
            down["uncond"] = pipe.encoder.encode(sources).as_cond()
        out = inversion_round(
            pipe,
            latents,
            conditioning(pipe, sources, up),
            down,
            method,
            refine,
            steps,
            strength,
        )
        outs.append(to_uint8(pipe, out))
        prompts += targets
    return evaluate(np.concatenate(outs), prompts).summary()


def run_inpaint(pipe, n: int, steps: int, resample: int, trained: bool = False) -> dict:
    """Training-free inpainting with `pipe`'s model, or (trained) its inpainting model."""
    outs, prompts, exact = [], [], 0
    guidance = pipe.defaults.guidance
    for rows in batches(n, 16):
        scenes = [
            sample_split_scene(EVAL_SEED, i, "heldout-2" if i % 2 == 0 else "heldout-3")
            for i in rows
        ]
        images = [render_scene(sc, SIZE) for sc in scenes]
        masks = [cell_mask(sc.objects[0].row, sc.objects[0].col) for sc in scenes]
        targets = [caption(replaced(sc, i), EVAL_SEED, i) for sc, i in zip(scenes, rows)]
        mask = torch.from_numpy(np.stack(masks) == 255).float()[:, None]
        pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
        latents = pipe.model.codec.encode(pixels)
        small = latent_mask(mask, pipe.model.codec.downsample)
        common = conditioning(pipe, targets, guidance)
        if trained:
            out = inpaint_with_model(
                pipe.model.denoiser, latents, small, list(rows), steps=steps, **common
            )
        else:
            out = inpaint_latents(
                pipe.model.denoiser,
                latents,
                small,
                list(rows),
                steps=steps,
                resample=resample,
                **common,
            )
        pasted = sample_to_uint8(blend(pipe.model.decode(out), pixels, mask))
        for picture, image, m in zip(pasted, images, masks):
            exact += bool(np.array_equal(picture[m == 0], image[m == 0]))
        outs.append(pasted)
        prompts += targets
    return evaluate(np.concatenate(outs), prompts).summary() | {"outside_mask_identical": exact / n}


def in_cells(detections: list[Detection], scene: Scene) -> dict[str, bool]:
    """Whether the detections put every object of `scene` in its cell: "cells" (as many
    detections as objects, one in each object's cell) and "cells_and_shapes" (each there with
    the object's shape)."""
    count = len(detections) == len(scene.objects)
    cells = {d.cell for d in detections}
    pairs = {(d.cell, d.shape) for d in detections}
    return {
        "cells": count and all((o.row, o.col) in cells for o in scene.objects),
        "cells_and_shapes": count
        and all(((o.row, o.col), o.shape) in pairs for o in scene.objects),
    }


def placement(images: np.ndarray, scenes: list[Scene], prompts: list[str]) -> dict:
    """Caption adherence and object placement of images made for `scenes`."""
    detections = detect_objects(images)
    cells = [in_cells(d, sc) for d, sc in zip(detections, scenes)]
    return score_detections(detections, prompts).summary() | {
        key: float(np.mean([c[key] for c in cells])) for key in ("cells", "cells_and_shapes")
    }


def run_controlnet(
    pipe,
    folder: str,
    n: int,
    steps: int,
    batch: int,
    scale: float,
    baseline: bool = True,
    seed: int = EVAL_SEED,
) -> dict:
    """Controlled generation of held-out scenes of stream `seed`; `baseline`: also the base
    alone on all of them (else only on the first batch, for the scale-0 check)."""
    controlnet = load_controlnet(folder, pipe.model)
    kind = controlnet.config.kind
    scenes = [sample_split_scene(seed, i, "heldout") for i in range(n)]
    prompts = [caption(sc, seed, i) for i, sc in enumerate(scenes)]
    hints = torch.stack([control_map(kind, render_scene(sc, SIZE)) for sc in scenes])
    plain, steered, zero_equal = [], [], None
    for rows in batches(n, batch):
        params = pipe.params(prompts[rows[0]], seeds=list(rows), steps=steps)
        texts = [prompts[i] for i in rows]
        base = pipe.generate(params, prompts=texts) if baseline or zero_equal is None else None
        if baseline:
            plain.append(sample_to_uint8(base))
        with controlled(pipe.model, controlnet, scale) as extra:
            steered.append(
                sample_to_uint8(
                    pipe.generate(
                        params, prompts=texts, extra_cond=extra(hints[rows.start : rows.stop])
                    )
                )
            )
        if zero_equal is None:  # scale 0 against the base, on the first batch
            with controlled(pipe.model, controlnet, 0.0) as extra:
                off = pipe.generate(
                    params, prompts=texts, extra_cond=extra(hints[rows.start : rows.stop])
                )
            zero_equal = bool(torch.equal(off, base))
    return {
        "controlnet": folder,
        "kind": kind,
        "scale": scale,
        "steps": steps,
        "controlled": placement(np.concatenate(steered), scenes, prompts),
        "base_alone": placement(np.concatenate(plain), scenes, prompts) if baseline else None,
        "scale_0_equals_base": zero_equal,
    }


def run_speed(
    pipe,
    repeats: int,
    controlnet_folder: str | None = None,
    inpaint_model: str | None = None,
    only: list[str] | None = None,
) -> dict:
    scene = sample_split_scene(EVAL_SEED, 0, "heldout-2")
    image, prompt = render_scene(scene, SIZE), caption(scene, EVAL_SEED, 0)
    mask = cell_mask(scene.objects[0].row, scene.objects[0].col)
    seeds = [0, 1, 2, 3]
    tasks = {
        "generate": lambda: pipe(prompt, seeds=seeds, steps=25),
        "img2img": lambda: pipe.edit(image, prompt, strength=0.6, seeds=seeds, steps=25),
        "inpaint": lambda: pipe.inpaint(image, mask, prompt, seeds=seeds, steps=25),
        "inversion_edit": lambda: pipe.edit_by_inversion(
            np.stack([image] * 4)[0], prompt, prompt, steps=25
        ),
    }
    if controlnet_folder:
        controlnet = load_controlnet(controlnet_folder, pipe.model)
        hint = control_map(controlnet.config.kind, image)

        def steered() -> torch.Tensor:
            with controlled(pipe.model, controlnet) as extra:
                params = pipe.params(prompt, seeds=seeds, steps=25)
                return pipe.generate(params, extra_cond=extra(hint))

        tasks["controlled"] = steered
    if inpaint_model:
        trained = load_pipeline(inpaint_model)
        tasks["inpaint_trained"] = lambda: trained.inpaint(
            image, mask, prompt, seeds=seeds, steps=25
        )
    if only:
        tasks = {k: v for k, v in tasks.items() if k == "generate" or k in only}
    times: dict[str, list[float]] = {k: [] for k in tasks}
    for _ in range(repeats):  # interleaved, so load changes hit every task alike
        for name, task in tasks.items():
            start = time.perf_counter()
            task()
            times[name].append(time.perf_counter() - start)
    best = {k: min(v) for k, v in times.items()}
    return {
        "seconds": best,
        "ratio_to_generate": {k: best[k] / best["generate"] for k in best},
        "note": "inversion_edit inverts one image (deterministic) and samples it for 1 seed; "
        "the others make 4 images",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        help="default: all (controlnet with --controlnet)",
    )
    ap.add_argument("-n", type=int, default=300, help="scenes per section (default 300)")
    ap.add_argument("--choose-n", type=int, default=32, help="scenes to choose the strength on")
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.4, 0.5, 0.6, 0.7])
    ap.add_argument("--inversion-steps", type=int, nargs="+", default=[10, 25, 50])
    ap.add_argument(
        "--methods",
        nargs="+",
        default=["ddim", "dpmpp_2m", "ddim+3"],
        help="inversion methods; NAME+K refines each step K times",
    )
    ap.add_argument("--inversion-guidance", type=float, default=1.0)
    ap.add_argument(
        "--edit-guidance",
        type=float,
        nargs="+",
        default=[4.0],
        help="inversion-edit: the way down's guidance; several: chosen on --choose-n scenes of "
        "stream 11",
    )
    ap.add_argument("--edit-refine", type=int, default=3)
    ap.add_argument("--edit-method", default="ddim", help="inversion method of inversion-edit")
    ap.add_argument("--edit-strength", type=float, default=1.0, help="partial inversion")
    ap.add_argument(
        "--edit-source-guidance",
        type=float,
        default=None,
        help="inversion's (default: --edit-guidance)",
    )
    ap.add_argument(
        "--edit-negative-source",
        action="store_true",
        help="inversion-edit: the source prompt is the negative prompt of the way down",
    )
    ap.add_argument("--resample", type=int, default=1)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=3, help="speed: timed rounds (best kept)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--controlnet", default=None, help="ControlNet folder (controlnet, speed)")
    ap.add_argument(
        "--control-scales",
        type=float,
        nargs="+",
        default=[1.0],
        help="controlnet: control scale; several: chosen on --choose-n scenes of stream 11",
    )
    ap.add_argument(
        "--speed-tasks", nargs="+", default=None, help="speed: only these tasks (and generate)"
    )
    ap.add_argument(
        "--no-baseline", action="store_true", help="controlnet: skip the base alone on every scene"
    )
    ap.add_argument("--inpaint-model", default=None, help="inpainting model (inpaint-trained)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    if args.sections is None:
        optional = {"controlnet": args.controlnet, "inpaint-trained": args.inpaint_model}
        args.sections = [s for s in SECTIONS if optional.get(s, True)]
    torch.set_num_threads(args.threads)
    pipe = load_pipeline()
    results: dict = {"n": args.n, "platform": platform.platform(), "threads": args.threads}
    for section in args.sections:
        start = time.perf_counter()
        if section == "recolour":
            out = run_recolour(pipe, args.n, args.choose_n, args.strengths, args.batch)
        elif section == "inversion":
            out = run_inversion(
                pipe, args.n, args.inversion_steps, args.methods, args.inversion_guidance
            )
        elif section == "inversion-edit":
            edit = {
                "steps": args.steps,
                "refine": args.edit_refine,
                "method": args.edit_method,
                "strength": args.edit_strength,
                "source_guidance": args.edit_source_guidance,
                "negative_source": args.edit_negative_source,
            }
            chosen_on, guidance = {}, args.edit_guidance[0]
            if len(args.edit_guidance) > 1:  # chosen on another scene stream
                for value in args.edit_guidance:
                    found = run_inversion_edit(
                        pipe, args.choose_n, guidance=value, seed=CHOOSE_SEED, **edit
                    )
                    chosen_on[str(value)] = found
                    print(json.dumps({"guidance": value, **found}), flush=True)
                guidance = max(
                    args.edit_guidance, key=lambda v: (chosen_on[str(v)]["score"], -abs(v - 4))
                )
            out = run_inversion_edit(pipe, args.n, guidance=guidance, **edit)
            out["settings"] = edit | {"guidance": guidance}
            out["chosen_on"] = chosen_on
        elif section == "inpaint":
            out = run_inpaint(pipe, args.n, args.steps, args.resample)
        elif section == "inpaint-trained":
            if not args.inpaint_model:
                ap.error("the inpaint-trained section needs --inpaint-model DIR")
            out = run_inpaint(load_pipeline(args.inpaint_model), args.n, args.steps, 1, True)
            out["model"] = args.inpaint_model
        elif section == "controlnet":
            if not args.controlnet:
                ap.error("the controlnet section needs --controlnet DIR")
            chosen_on, scale = {}, args.control_scales[0]
            if len(args.control_scales) > 1:  # chosen on another scene stream
                for value in args.control_scales:
                    found = run_controlnet(
                        pipe, args.controlnet, args.choose_n, args.steps, args.batch, value,
                        baseline=False, seed=CHOOSE_SEED,
                    )  # fmt: skip
                    chosen_on[str(value)] = found["controlled"]
                    print(json.dumps({"scale": value, **found["controlled"]}), flush=True)
                scale = max(
                    args.control_scales,
                    key=lambda v: (chosen_on[str(v)]["cells"], chosen_on[str(v)]["score"], -v),
                )
            out = run_controlnet(
                pipe,
                args.controlnet,
                args.n,
                args.steps,
                args.batch,
                scale,
                not args.no_baseline,
            )
            out["chosen_on"] = chosen_on
        else:
            out = run_speed(
                pipe, args.repeats, args.controlnet, args.inpaint_model, args.speed_tasks
            )
        results[section] = out | {"wall_seconds": time.perf_counter() - start}
        print(json.dumps({section: results[section]}, indent=1), flush=True)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
