"""Native BERT encoder: bitwise equal to transformers, no transformers import, clear errors."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from diffuse.codecs import TextEncoder
from diffuse.codecs import text_encoder as text_encoder_module
from diffuse.codecs.bert import (
    BertConfig,
    BertEncoder,
    BertTokenizer,
    load_bert,
    unsupported_reason,
)
from diffuse.codecs.text_encoder import resolve_text_encoder
from diffuse.pipelines.sample import to_uint8
from diffuse.pipelines.text_to_image import load_pipeline

MINILM = resolve_text_encoder()
pytestmark = pytest.mark.usefixtures("one_thread")

# Prompts that exercise the tokenizer: the unconditional "", plain text, a prompt over the
# 256-token limit, accents, CJK (split per character), emoji / control / zero-width characters,
# runs of punctuation, literal special-token strings, case, whitespace-only, long words.
PROMPTS = [
    "",
    "a red circle above a blue square",
    "a small green triangle to the left of a large yellow star " * 30,
    "Crème brûlée, naïve café — ÅÉÎ ﬁ",
    "中文字符 テスト 한국어",
    "emoji 🎨🟥 and \t tabs\n newlines \x00 zero\u200bwidth",
    "!!!???...,,,;;;::: (a) [b] {c} <d> 'e' \"f\" #g $h",
    "[CLS] [MASK] [SEP] [PAD] [UNK] literal specials",
    "ALLCAPS MiXeD cAsE",
    "x" * 150,
    "   ",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
]


def _transformers_encoder(source=None) -> TextEncoder:
    """A TextEncoder forced onto the transformers path, as every folder loaded before."""
    patch = pytest.MonkeyPatch()
    patch.setattr(text_encoder_module, "unsupported_reason", lambda folder: "forced")
    try:
        return TextEncoder(source)
    finally:
        patch.undo()


@pytest.fixture(scope="module")
def native() -> TextEncoder:
    return TextEncoder()


@pytest.fixture(scope="module")
def reference() -> TextEncoder:
    return _transformers_encoder()


def test_default_encoder_is_native(native, reference):
    assert unsupported_reason(MINILM) is None
    assert isinstance(native.model, BertEncoder) and isinstance(native.tokenizer, BertTokenizer)
    assert not isinstance(reference.model, BertEncoder)
    assert (native.family, native.pooling, native.normalize) == ("bert", "mean", True)
    assert (native.dim, native.pooled_dim, native.max_length) == (384, 384, 256)
    assert (reference.dim, reference.max_length) == (native.dim, native.max_length)


@pytest.mark.parametrize(
    "options",
    [{}, {"padding": True, "truncation": True, "max_length": 256}, {"truncation": True}],
    ids=["plain", "padded-256", "model-limit"],
)
def test_token_ids_match_transformers(native, reference, options):
    ours = native.tokenizer(PROMPTS, **options)
    theirs = reference.tokenizer(PROMPTS, **options)
    assert ours["input_ids"] == theirs["input_ids"]
    assert ours["attention_mask"] == theirs["attention_mask"]


def test_truncation_and_padding_tensors(native, reference):
    options = {"padding": True, "truncation": True, "max_length": 9, "return_tensors": "pt"}
    ours = native.tokenizer(PROMPTS, **options)
    theirs = reference.tokenizer(PROMPTS, **options)
    assert ours["input_ids"].shape == (len(PROMPTS), 9)
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
    assert ours["input_ids"][0].tolist() == [101, 102] + [0] * 7  # "" -> [CLS] [SEP], [PAD]s
    assert ours["input_ids"][2, -1] == 102  # truncated rows still end in [SEP]


@pytest.mark.filterwarnings("ignore::UserWarning")  # the truncated prompt's warning
@pytest.mark.parametrize(
    "batch",
    [
        PROMPTS[:2] + PROMPTS[3:],
        PROMPTS[:1],
        PROMPTS[1:2],
        PROMPTS[2:5],
        PROMPTS[7:8] + PROMPTS[:2],
    ],
    ids=["short-ones", "empty", "one", "truncated-first", "padded"],
)
def test_encodings_are_bitwise_equal_to_transformers(native, reference, batch):
    ours = native.encode_uncached(batch)
    theirs = reference.encode_uncached(batch)
    assert torch.equal(ours.context_mask, theirs.context_mask)
    assert torch.equal(ours.context, theirs.context)
    assert torch.equal(ours.pooled, theirs.pooled)


@pytest.mark.filterwarnings("ignore::UserWarning")  # the truncated prompt's warning
def test_cached_encode_matches_and_truncates(native, reference):
    native.clear_cache()
    ours = native.encode(PROMPTS[:4])
    theirs = reference.encode(PROMPTS[:4])
    assert ours.context.shape[1] == 256
    assert torch.equal(ours.context, theirs.context) and torch.equal(ours.pooled, theirs.pooled)
    hits = native.cache_hits
    again = native.encode(PROMPTS[1:2])
    assert native.cache_hits == hits + 1
    assert torch.equal(again.pooled[0], ours.pooled[1])


def test_default_path_never_imports_transformers(fresh_imports):
    code = (
        "import diffuse.codecs.text_encoder as t\n"
        "enc = t.TextEncoder().encode(['a red circle above a blue square'])\n"
        "assert enc.pooled.shape == (1, 384)\n"
    )
    loaded = fresh_imports(code)
    assert "diffuse.codecs.bert" in loaded
    assert [m for m in loaded if m.split(".")[0] == "transformers"] == []


def test_bundled_model_images_are_unchanged(native, reference):
    pipe = load_pipeline()
    assert isinstance(pipe.encoder.model, BertEncoder)
    settings = {"seeds": [0, 7], "steps": 8}
    prompts = ["a red circle above a blue square", "a small green triangle"]
    ours = [to_uint8(pipe.generate(pipe.params(p, **settings))) for p in prompts]
    # Encodings depend (in the last bits) on the batch they were computed in: start both
    # encoders from an empty cache so each prompt is encoded in the same batch.
    reference.clear_cache()
    pipe.encoder = reference
    theirs = [to_uint8(pipe.generate(pipe.params(p, **settings))) for p in prompts]
    for a, b in zip(ours, theirs):
        assert np.array_equal(np.asarray(a), np.asarray(b))


# Tiny random BERT folders, written by transformers, read natively.


def _tiny_bert(folder: Path, **overrides) -> Path:
    """A random 2-layer BERT folder (MiniLM's tokenizer) saved by transformers."""
    import transformers

    settings = dict(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
        layer_norm_eps=1e-5,
    )
    settings.update(overrides)
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(**settings)).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copy(MINILM / name, folder / name)
    return folder


@pytest.mark.filterwarnings("ignore::UserWarning")  # the truncated prompt's warning
def test_tiny_bert_other_sizes_and_checkpoint_names(tmp_path):
    folder = _tiny_bert(tmp_path)
    reference = _transformers_encoder(folder)
    native = TextEncoder(folder)
    assert isinstance(native.model, BertEncoder) and native.max_length == 64
    assert native.model.config == BertConfig(30522, 32, 2, 4, 48, 64, 2, 1e-5)
    batch = PROMPTS[:3]  # the long prompt is cut to the 64 positions
    ours, theirs = native.encode_uncached(batch), reference.encode_uncached(batch)
    assert ours.context.shape[1] == 64
    assert torch.equal(ours.context, theirs.context) and torch.equal(ours.pooled, theirs.pooled)
    # A checkpoint saved with a task head ("bert." prefix) and old LayerNorm gamma/beta names.
    tensors = load_file(folder / "model.safetensors")
    renamed = {
        "bert."
        + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        ): v
        for k, v in tensors.items()
    }
    renamed["cls.predictions.bias"] = torch.zeros(30522)
    save_file(renamed, folder / "model.safetensors")
    ids = native.tokenizer(batch[:2], padding=True, return_tensors="pt")
    again = load_bert(folder)(**ids).last_hidden_state
    assert torch.equal(again, native.model(**ids).last_hidden_state)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("position_embedding_type", "relative_key", "position_embedding_type 'relative_key'"),
        ("model_type", "roberta", "model_type 'roberta' is not 'bert'"),
        ("hidden_act", "relu", "hidden_act 'relu'"),
        ("is_decoder", True, "is_decoder=true"),
        ("num_attention_heads", 5, "not divisible by num_attention_heads 5"),
    ],
)
def test_unsupported_configs_name_the_field(tmp_path, field, value, message):
    config = json.loads((MINILM / "config.json").read_text())
    config[field] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert message in unsupported_reason(tmp_path)
    with pytest.raises(ValueError, match=message):
        load_bert(tmp_path)


def test_unsupported_folders_fall_back_to_transformers(tmp_path):
    folder = _tiny_bert(tmp_path / "relative", position_embedding_type="relative_key")
    assert "position_embedding_type" in unsupported_reason(folder)
    encoder = TextEncoder(folder)
    assert not isinstance(encoder.model, BertEncoder) and encoder.family == "bert"
    assert encoder.encode(["a red circle"]).context.shape == (1, 5, 32)
    folder = _tiny_bert(tmp_path / "no-tokenizer-json")
    (folder / "tokenizer.json").unlink()
    assert unsupported_reason(folder) == "no tokenizer.json"


def test_other_families_need_transformers(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    assert TextEncoder().encode([""]).context.shape == (1, 2, 384)  # the default needs none
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(ImportError, match=r"pip install diffuse\[text\]"):
        TextEncoder(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "0 bytes, too short for a safetensors file"),
        (b"\xff" * 64, "header length .* exceeds the file size"),
        (b"\x08\x00\x00\x00\x00\x00\x00\x00not json", "not a safetensors file"),
    ],
    ids=["empty", "bad-length", "bad-header"],
)
def test_corrupt_weights_name_the_file(tmp_path, content, message):
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(MINILM / name, tmp_path / name)
    (tmp_path / "model.safetensors").write_bytes(content)
    with pytest.raises(ValueError, match=f"model.safetensors: {message}"):
        TextEncoder(tmp_path)
    with pytest.raises(ValueError, match="model.safetensors"):
        load_bert(tmp_path)


def test_mismatched_weights_and_bad_files_are_reported(tmp_path):
    folder = _tiny_bert(tmp_path)
    tensors = load_file(folder / "model.safetensors")
    del tensors["encoder.layer.1.output.dense.weight"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing \['layers.1.ff_out.weight'\]"):
        load_bert(folder)
    (folder / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json: cannot load the tokenizer"):
        BertTokenizer(folder)
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="config.json: expected a JSON object, got list"):
        unsupported_reason(folder)
