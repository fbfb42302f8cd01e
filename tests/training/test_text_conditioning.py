"""Text-conditioned training: the caption bank, its cache file, the model folder, and resume.

One tiny run of the real recipe (configs/shapes-t2i.toml, shrunk with --set) trains through
`diffuse train` with the packaged MiniLM; the caption-bank tests compare against the encoder.
"""

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from diffuse.cli import main
from diffuse.codecs.text_encoder import (
    UNCONDITIONAL_PROMPT,
    TextEncoder,
)
from diffuse.training import captions as captions_module
from diffuse.training.captions import CaptionBank
from diffuse.training.checkpoint import list_checkpoints
from diffuse.training.datasets import ScenesDataset
from text_recipe import train_args

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "train.steps=2",
    "checkpoint.every_steps=2",
    "sample.every_steps=2",
    "sample.seeds=[0, 1]",
    "sample.steps=2",
    "log.every_steps=1",
]
CAPTIONS = [
    "a red circle",
    None,
    "a large blue square to the right of a small green triangle",
    "",
    "a red circle",
]


def _train_args(out: Path, *extra: str) -> list[str]:
    return train_args(out, *TINY, *extra)


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(None)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("t2i") / "run"
    assert main(_train_args(out)) == 0
    return out


def _expected(encoder: TextEncoder, texts: list[str]) -> dict[str, torch.Tensor]:
    encoder.clear_cache()
    return encoder.encode(texts).as_cond()


def _assert_matches(got: dict, want: dict) -> None:
    assert set(got) == {"context", "context_mask", "pooled"}
    assert got["context"].dtype == got["pooled"].dtype == torch.float32
    assert got["context_mask"].dtype == torch.bool
    assert got["context"].shape == want["context"].shape
    assert torch.equal(got["context_mask"], want["context_mask"])
    torch.testing.assert_close(got["context"], want["context"], atol=1e-2, rtol=0)
    torch.testing.assert_close(got["pooled"], want["pooled"], atol=1e-2, rtol=0)
    assert torch.all(got["context"][~got["context_mask"]] == 0)  # zero padding


def _count_encodes(monkeypatch) -> list[int]:
    """Count the bank's encoder passes (`captions._encode_all` calls)."""
    calls: list[int] = []
    real = captions_module._encode_all

    def spy(encoder, texts, batch_size):
        calls.append(len(texts))
        return real(encoder, texts, batch_size)

    monkeypatch.setattr(captions_module, "_encode_all", spy)
    return calls


# --- training through `diffuse train` ---------------------------------------------------------


def test_text_run_writes_cache_and_a_text_model_folder(run):
    from safetensors import safe_open

    cache = run / "text-cache.safetensors"
    assert cache.is_file()
    captions = [ScenesDataset(64, 32, seed=0).scenes.caption(i) for i in range(64)]
    distinct = set(captions) | {UNCONDITIONAL_PROMPT}
    with safe_open(str(cache), "pt") as f:
        assert (f.metadata() or {}).get("key")
        pooled, offsets = f.get_tensor("pooled"), f.get_tensor("offsets")
        tokens = f.get_tensor("tokens")
    assert pooled.shape == (len(distinct), 384) and pooled.dtype == torch.float16
    assert offsets.shape == (len(distinct) + 1,) and int(offsets[-1]) == tokens.shape[0]
    assert tokens.shape[1] == 384 and tokens.dtype == torch.float16

    info = json.loads((run / "model" / "diffusion.json").read_text())
    assert info["text_encoder"] == "default"
    assert info["class_names"] == [] and info["image_size"] == 32 and info["channels"] == 3
    assert info["recipe"]["sample"]["prompts"]  # the sample prompts travel with the model
    net = json.loads((run / "model" / "config.json").read_text())["config"]
    assert net["context_dim"] == 384 and net["pooled_dim"] == 384 and net["num_classes"] == 0

    losses = [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert (run / "samples" / "step-0000002.png").is_file()  # text-conditioned sample grid


def test_trained_network_takes_the_caption_bank_conditioning(run, encoder):
    from diffuse.pipelines.sample import load_trained

    model = load_trained(run)
    bank = CaptionBank(encoder, ["a red circle", "a blue square above a green star"])
    cond = bank.batch([0, 1])
    x = torch.randn(2, *model.shape)
    out = model.denoiser(x, torch.full((2,), 1.0), cond)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_resume_reads_the_text_cache_instead_of_encoding(run, tmp_path, monkeypatch, caplog):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cache = copy / "text-cache.safetensors"
    before = (cache.stat().st_mtime_ns, cache.read_bytes())
    calls = _count_encodes(monkeypatch)
    caplog.set_level(logging.INFO, logger="diffuse.training.captions")
    assert main([*_train_args(copy, "train.steps=4"), "--resume"]) == 0
    assert calls == []  # no caption was encoded again
    assert "text encodings of" in caplog.text and "read from" in caplog.text
    assert (cache.stat().st_mtime_ns, cache.read_bytes()) == before
    assert [s for s, _ in list_checkpoints(copy)][-1] == 4
    assert len((copy / "metrics.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["model.text_encoder='/nonexistent/encoder'"], r"model.text_encoder.*nonexistent"),
        (
            ["data.source='procedural'", "data.size=16", "data.resolution=8"],
            r"has no captions",
        ),
    ],
)
def test_text_encoder_errors_exit_2_with_a_message(tmp_path, capsys, extra, message):
    assert main(_train_args(tmp_path / "run", *extra)) == 2
    assert re.search(message, capsys.readouterr().err)


def test_text_encoder_errors_leave_no_run_folder(tmp_path):
    out = tmp_path / "run"
    assert main(_train_args(out, "model.text_encoder='/nonexistent/encoder'")) == 2
    assert not out.exists()


# --- CaptionBank -------------------------------------------------------------------------------


def test_bank_batches_match_the_encoder(encoder):
    bank = CaptionBank(encoder, CAPTIONS)
    assert len(bank) == len(CAPTIONS) and bank.dim == bank.pooled_dim == 384
    _assert_matches(bank.batch([0, 2, 4]), _expected(encoder, [CAPTIONS[i] for i in (0, 2, 4)]))
    _assert_matches(bank.batch([2]), _expected(encoder, [CAPTIONS[2]]))
    # Items without a caption (None or "") get the empty prompt: the unconditional input.
    _assert_matches(bank.batch([1, 3]), _expected(encoder, ["", ""]))
    _assert_matches(bank.batch([1, 0]), _expected(encoder, ["", "a red circle"]))


def test_dropped_rows_get_the_empty_prompt(encoder):
    bank = CaptionBank(encoder, CAPTIONS)
    drop = torch.tensor([True, False, True])
    got = bank.batch([2, 0, 4], drop)
    _assert_matches(got, _expected(encoder, ["", "a red circle", ""]))
    no_drop = bank.batch([2, 0, 4], torch.zeros(3, dtype=torch.bool))
    _assert_matches(no_drop, _expected(encoder, [CAPTIONS[2], CAPTIONS[0], CAPTIONS[4]]))
    all_dropped = bank.batch([0, 2], torch.ones(2, dtype=torch.bool))
    _assert_matches(all_dropped, _expected(encoder, ["", ""]))


def test_cache_round_trip_and_key_mismatch(encoder, tmp_path, monkeypatch, caplog):
    from safetensors import safe_open

    def key() -> str:
        with safe_open(str(tmp_path / CaptionBank.CACHE_FILE), "pt") as f:
            return f.metadata()["key"]

    calls = _count_encodes(monkeypatch)
    first = CaptionBank(encoder, CAPTIONS, cache_dir=tmp_path)
    assert (tmp_path / CaptionBank.CACHE_FILE).is_file() and len(calls) == 1
    first_key = key()

    caplog.set_level(logging.INFO, logger="diffuse.training.captions")
    again = CaptionBank(encoder, CAPTIONS, cache_dir=tmp_path)
    assert len(calls) == 1 and "read from" in caplog.text  # read back, not re-encoded
    for idx in ([0, 2, 4], [1, 3]):
        a, b = first.batch(idx), again.batch(idx)
        assert all(torch.equal(a[k], b[k]) for k in a)

    # The same caption set in another order reuses the cache, row by row.
    shuffled = [CAPTIONS[i] for i in (2, 4, 1, 0, 3)]
    reordered = CaptionBank(encoder, shuffled, cache_dir=tmp_path)
    assert len(calls) == 1
    want = _expected(encoder, [CAPTIONS[2], CAPTIONS[4], ""])
    _assert_matches(reordered.batch([0, 1, 2]), want)

    # A cache built for other captions is not reused: re-encoded, and the file is replaced.
    other = CaptionBank(encoder, ["a small green star"], cache_dir=tmp_path)
    assert len(calls) == 2 and key() != first_key
    _assert_matches(other.batch([0]), _expected(encoder, ["a small green star"]))
    # ...and the first caption set is then re-encoded too (key mismatch the other way).
    CaptionBank(encoder, CAPTIONS, cache_dir=tmp_path)
    assert len(calls) == 3 and key() == first_key


def test_unreadable_cache_is_rebuilt(encoder, tmp_path, caplog):
    (tmp_path / CaptionBank.CACHE_FILE).write_bytes(b"not a safetensors file")
    with caplog.at_level(logging.WARNING, logger="diffuse.training.captions"):
        bank = CaptionBank(encoder, CAPTIONS, cache_dir=tmp_path)
    assert "ignoring unreadable text cache" in caplog.text
    _assert_matches(bank.batch([0, 1]), _expected(encoder, ["a red circle", ""]))
    again = CaptionBank(encoder, CAPTIONS, cache_dir=tmp_path)  # the rebuilt file reads back
    assert torch.equal(again.batch([2])["context"], bank.batch([2])["context"])


def test_no_cache_dir_writes_nothing(encoder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    CaptionBank(encoder, ["a red circle"])
    assert list(tmp_path.iterdir()) == []


def test_scenes_render_in_worker_processes_like_in_one(monkeypatch):
    serial = ScenesDataset(40, 32, seed=3)
    images, captions = serial.render_all(workers=1), serial.captions()
    monkeypatch.setattr(ScenesDataset, "PARALLEL_FROM", 10)
    parallel = ScenesDataset(40, 32, seed=3)
    assert np.array_equal(parallel.render_all(workers=2), images)
    assert parallel.captions() == captions
