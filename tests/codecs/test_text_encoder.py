"""Text-encoder adapter: MiniLM default, tiny CLIP and T5 folders, caching, truncation, freezing."""

import logging
import shutil
import warnings

import pytest
import torch

from diffuse.codecs import TextEncoder, TextEncoding
from diffuse.codecs.text_encoder import (
    DEFAULT_TEXT_ENCODER,
    UNCONDITIONAL_PROMPT,
    resolve_text_encoder,
)

MINILM = resolve_text_encoder()
pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["a large blue square to the right of a small green triangle", "a red circle"]


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return TextEncoder()


def _tokenizer_files(folder) -> None:
    """Give a folder MiniLM's (BERT WordPiece) tokenizer: tiny test models reuse it."""
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(MINILM / name, folder / name)


def test_default_is_the_packaged_minilm(minilm):
    assert MINILM.is_dir() and (MINILM / "config.json").is_file()
    assert DEFAULT_TEXT_ENCODER in str(MINILM)
    assert minilm.family == "bert" and minilm.pooling == "mean" and minilm.normalize
    assert (minilm.dim, minilm.pooled_dim, minilm.max_length) == (384, 384, 256)


def test_encode_shapes_mask_and_cond_keys(minilm):
    enc = minilm.encode(PROMPTS)
    assert isinstance(enc, TextEncoding) and len(enc) == 2
    b, length, d = enc.context.shape
    assert (b, d) == (2, 384) and enc.pooled.shape == (2, 384)
    assert enc.context.dtype == enc.pooled.dtype == torch.float32
    assert enc.context_mask.dtype == torch.bool and enc.context_mask.shape == (2, length)
    # Right padding: the long prompt fills the length, the short one is masked after its tokens.
    assert enc.context_mask[0].all() and not enc.context_mask[1].all()
    n_short = int(enc.context_mask[1].sum())
    assert enc.context_mask[1, :n_short].all()
    assert torch.all(enc.context[1, n_short:] == 0)
    cond = enc.as_cond()
    assert list(cond) == ["context", "context_mask", "pooled"]
    assert cond["context"] is enc.context


def test_pooled_is_the_normalised_masked_mean(minilm):
    enc = minilm.encode(PROMPTS)
    weights = enc.context_mask[..., None].float()
    mean = (enc.context * weights).sum(1) / weights.sum(1)
    expected = torch.nn.functional.normalize(mean, dim=-1)
    torch.testing.assert_close(enc.pooled, expected, atol=1e-5, rtol=1e-5)


def test_pooled_matches_sentence_transformers(minilm):
    import sentence_transformers

    reference = sentence_transformers.SentenceTransformer(str(MINILM), device="cpu")
    expected = reference.encode(PROMPTS, convert_to_tensor=True)
    torch.testing.assert_close(minilm.encode(PROMPTS).pooled, expected, atol=1e-5, rtol=1e-4)


def test_batching_does_not_change_encodings(minilm):
    minilm.clear_cache()
    batch = minilm.encode(PROMPTS)
    minilm.clear_cache()
    alone = minilm.encode(PROMPTS[1:])
    n = alone.context.shape[1]
    torch.testing.assert_close(batch.context[1, :n], alone.context[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batch.pooled[1], alone.pooled[0], atol=1e-5, rtol=1e-4)


def test_empty_prompt_is_the_unconditional_input(minilm):
    enc = minilm.encode([UNCONDITIONAL_PROMPT, "a red circle"])
    # [CLS] [SEP]: a real, non-empty context, so masked attention is never all-False.
    assert int(enc.context_mask[0].sum()) == 2
    assert torch.isfinite(enc.context).all() and torch.isfinite(enc.pooled).all()
    assert not torch.allclose(enc.pooled[0], enc.pooled[1])


def test_cache_hits_skip_the_model(minilm, monkeypatch):
    minilm.clear_cache()
    first = minilm.encode(["a cached prompt"])
    hits = minilm.cache_hits

    def boom(*args, **kwargs):
        raise AssertionError("the model ran for a cached prompt")

    monkeypatch.setattr(minilm.model, "forward", boom)
    second = minilm.encode(["a cached prompt", "a cached prompt"])
    assert minilm.cache_hits == hits + 2
    assert torch.equal(second.context[0], first.context[0])
    assert torch.equal(second.pooled[1], first.pooled[0])
    second.context.zero_()  # callers may modify outputs without corrupting the cache
    assert not torch.equal(minilm.encode(["a cached prompt"]).context, second.context[:1])


def test_cache_is_lru_and_bounded(minilm, monkeypatch):
    monkeypatch.setattr(minilm, "cache_size", 2)
    minilm.clear_cache()
    minilm.encode(["one", "two"])
    minilm.encode(["one"])  # "one" is now the most recent
    minilm.encode(["three"])  # evicts "two"
    assert list(minilm._cache) == ["one", "three"]
    misses = minilm.cache_misses
    minilm.encode(["two"])
    assert minilm.cache_misses == misses + 1
    monkeypatch.setattr(minilm, "cache_size", 0)
    minilm.clear_cache()
    minilm.encode(["four"])
    assert not minilm._cache


def test_long_prompts_are_truncated_with_a_logged_warning(minilm, caplog):
    prompt = "word " * 300
    with caplog.at_level(logging.WARNING, logger="diffuse"):
        enc = minilm.encode([prompt])
    assert enc.context.shape[1] == 256
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "302 tokens truncated to the encoder limit of 256" in caplog.records[0].getMessage()
    caplog.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a logged warning, never a Python warning
        minilm.encode(["a star within the limit"])
    assert not caplog.records  # no warning


def test_encoder_is_frozen_but_outputs_feed_training(minilm):
    assert not minilm.model.training
    assert not any(p.requires_grad for p in minilm.model.parameters())
    enc = minilm.encode(["a red circle in the center"])
    assert not enc.context.requires_grad and not enc.context.is_inference()
    layer = torch.nn.Linear(384, 4)
    layer(enc.context).sum().backward()  # not an inference tensor: usable in autograd
    assert layer.weight.grad is not None


def test_argument_errors(minilm):
    with pytest.raises(TypeError, match=r"\[prompt\]"):
        minilm.encode("a red circle")
    with pytest.raises(ValueError, match="at least one"):
        minilm.encode([])
    with pytest.raises(ValueError, match="max_length must be >= 2, got 1"):
        TextEncoder(max_length=1)


def test_missing_sources_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a local folder nor an installed"):
        resolve_text_encoder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_text_encoder(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither"):
        resolve_text_encoder("surely_not_an_installed_package_xyz")


def test_tiny_clip_pools_the_eos_token(tmp_path):
    import transformers

    config = transformers.CLIPTextConfig(
        vocab_size=30522,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        eos_token_id=102,  # [SEP] of the BERT tokenizer reused here
        bos_token_id=101,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    transformers.CLIPTextModel(config).save_pretrained(tmp_path)
    _tokenizer_files(tmp_path)
    encoder = TextEncoder(tmp_path)
    assert (encoder.family, encoder.pooling, encoder.dim, encoder.max_length) == (
        "clip",
        "eos",
        32,
        77,
    )
    enc = encoder.encode(PROMPTS)
    for i in range(2):
        last = int(enc.context_mask[i].sum()) - 1  # [SEP], the EOS token
        torch.testing.assert_close(enc.pooled[i], enc.context[i, last])


def test_tiny_t5_mean_pools(tmp_path):
    import transformers

    config = transformers.T5Config(
        vocab_size=30522, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4
    )
    torch.manual_seed(0)
    transformers.T5EncoderModel(config).save_pretrained(tmp_path / "model")
    _tokenizer_files(tmp_path / "model")
    encoder = TextEncoder(tmp_path)  # found in the direct subfolder
    assert (encoder.family, encoder.pooling, encoder.dim) == ("t5", "mean", 32)
    assert not encoder.normalize
    enc = encoder.encode(PROMPTS)
    weights = enc.context_mask[..., None].float()
    torch.testing.assert_close(enc.pooled, (enc.context * weights).sum(1) / weights.sum(1))
