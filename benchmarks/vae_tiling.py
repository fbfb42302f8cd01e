"""Memory of VAE decoding with and without tiling, for large images and a large batch.

    python benchmarks/vae_tiling.py --model models/shapes-vae --json docs/vae-tiling.json

Each case's latents are made by one child process and written to a temporary file; a fresh
child then loads the codec and the latents, resets the kernel's peak-RSS counter
(/proc/self/clear_refs) and decodes once: `peak_mib` is the peak resident memory during the
decode minus the resident memory just before it. Large images are
mosaics of Shapes scenes (each 64x64 scene encoded on its own, the latents laid side by side),
so the decode has real content; `psnr_vs_scenes_db` compares the decoded mosaic with the
rendered scenes, for the tiled and the whole-image decode alike. The batch case decodes 64
latents of 64x64 scenes with `decode_batch` 16 (sliced) and 64 (whole batch). JSON out, plus a
table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCENE = 64  # pixels of one mosaic piece


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def prepare(args: argparse.Namespace, path: Path) -> None:
    """Encode the case's scenes and write latents and images to `path` (safetensors)."""
    import torch
    from safetensors.torch import save_file

    from diffuse.codecs.vae import load_vae
    from diffuse.shapes.dataset import ShapesDataset

    torch.set_num_threads(args.threads)
    vae = load_vae(args.model)
    side = args.size // SCENE
    count = args.batch if args.batch else side * side
    scenes = ShapesDataset(SCENE, split="heldout", length=count, seed=7)
    images = torch.stack(
        [torch.from_numpy(scenes.image_uint8(i)).permute(2, 0, 1) for i in range(count)]
    )
    with torch.no_grad():
        latents = torch.cat([vae.encode(c.float() / 127.5 - 1) for c in images.split(64)])
    if not args.batch:  # lay the scenes out as one large image and its latent
        c, h, w = latents.shape[1:]
        latents = latents.reshape(side, side, c, h, w).permute(2, 0, 3, 1, 4)
        latents = latents.reshape(1, c, side * h, side * w)
        images = images.reshape(side, side, 3, SCENE, SCENE).permute(2, 0, 3, 1, 4)
        images = images.reshape(1, 3, args.size, args.size)
    save_file({"latents": latents.contiguous(), "images": images.contiguous()}, str(path))


def child(args: argparse.Namespace) -> None:
    """Load the codec and the prepared latents, decode once, measured; print one JSON line."""
    import torch
    from safetensors.torch import load_file

    from diffuse.codecs.vae import load_vae
    from diffuse.training.vae_loss import psnr

    torch.set_num_threads(args.threads)
    vae = load_vae(args.model)
    vae.tile_size = args.tile
    vae.decode_batch = args.decode_batch
    latents = load_file(args.latents)["latents"].clone()
    before = _rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    t0 = time.perf_counter()
    with torch.no_grad():
        decoded = vae.decode(latents)
    seconds = time.perf_counter() - t0
    peak = _rss_kib("VmHWM")
    images = load_file(args.latents)["images"].float() / 127.5 - 1
    quality = psnr(decoded.clamp(-1, 1), images).mean()
    result = {
        "peak_mib": round((peak - before) / 1024, 1),
        "decode_s": round(seconds, 3),
        "psnr_vs_scenes_db": round(float(quality), 2),
        "latent_shape": list(latents.shape),
    }
    print(json.dumps(result))


def run_case(args: argparse.Namespace, workdir: Path, **case: int) -> dict:
    """Prepare the case's latents (one child), then decode them (a fresh child)."""
    path = workdir / "case.safetensors"
    base = [sys.executable, __file__, "--model", args.model, "--threads", str(args.threads)]
    for key, value in case.items():
        base += [f"--{key.replace('_', '-')}", str(value)]
    result = {}
    for step in ("--prepare", "--child"):
        out = subprocess.run(
            base + [step, "--latents", str(path)], capture_output=True, text=True, env=os.environ
        )
        if out.returncode:
            raise SystemExit(f"case {case} failed:\n{out.stderr[-2000:]}")
        if step == "--child":
            result = json.loads(out.stdout.strip().splitlines()[-1])
    return {**case, **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/shapes-vae", help="codec folder")
    parser.add_argument("--sizes", default="256,512,1024", help="image sides of the mosaics")
    parser.add_argument("--tile", type=int, default=32, help="latent tile side when tiled")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="", help="write the results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--latents", default="", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=SCENE, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--decode-batch", type=int, default=16, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.prepare:
        prepare(args, Path(args.latents))
        return 0
    if args.child:
        child(args)
        return 0
    if not Path("/proc/self/clear_refs").exists():
        raise SystemExit("this benchmark reads Linux's /proc peak-RSS counters")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for size in (int(s) for s in args.sizes.split(",")):
            for tile in (args.tile, 0):
                case = f"{size}x{size} image, {'tiled' if tile else 'whole'}"
                rows.append({"case": case, **run_case(args, workdir, size=size, tile=tile)})
        for decode_batch in (16, 64):
            case = f"64 latents of 64x64, decode_batch {decode_batch}"
            measured = run_case(args, workdir, batch=64, decode_batch=decode_batch, tile=args.tile)
            rows.append({"case": case, **measured})
    print(f"{'case':40s} {'peak MiB':>9s} {'decode s':>9s} {'PSNR dB':>8s}")
    for r in rows:
        print(
            f"{r['case']:40s} {r['peak_mib']:9.1f} {r['decode_s']:9.3f} "
            f"{r['psnr_vs_scenes_db']:8.2f}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"model": args.model, "threads": args.threads, "tile": args.tile, "cases": rows},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
