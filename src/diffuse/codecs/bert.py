"""A native BERT encoder: Hugging Face BERT folders loaded without transformers.

The default text encoder (all-MiniLM-L6-v2) is a 6-layer BERT. Importing transformers to run it
costs 1-3 s of a cold `diffuse generate` on a 2-core CPU, more than the model itself, so the
BERT family is implemented here in ~150 lines of PyTorch:

- `BertEncoder`: embeddings (word + token type + absolute position, LayerNorm), then N post-norm
  layers of self-attention (`scaled_dot_product_attention` with the padding mask) and a GELU
  (erf) feed-forward. Inference only: no dropout, no pooler head (the adapter pools itself).
- `load_bert(folder)`: config.json -> `BertConfig`, model.safetensors -> weights, mapping the
  Hugging Face parameter names onto ours.
- `BertTokenizer`: the folder's tokenizer.json run by the light `tokenizers` package, with the
  call convention of a transformers tokenizer (padding to the longest prompt, truncation to a
  maximum length, special tokens), so token ids are the ones transformers produces.

The forward pass performs the same operations in the same order as transformers' `BertModel`
with SDPA attention (embedding sums, LayerNorm, separate q/k/v projections, boolean mask only
when some token is padding, residual added before each LayerNorm), so outputs are bitwise equal
to it on CPU; tests/codecs/test_bert_encoder.py pins that.

`unsupported_reason(folder)` says why a folder cannot run natively (another model type, relative
position embeddings, a non-GELU activation, no tokenizer.json, non-float32 weights...);
`TextEncoder` then falls back to transformers.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from tokenizers import Tokenizer, normalizers
from torch import Tensor, nn

__all__ = [
    "BertConfig",
    "BertEncoder",
    "BertOutput",
    "BertTokenizer",
    "load_bert",
    "unsupported_reason",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

# transformers' stand-in for "no limit" in tokenizer_config.json's model_max_length.
_NO_LIMIT = int(1e30)
_TOKENIZER_CLASSES = (None, "BertTokenizer", "BertTokenizerFast")
# Hugging Face name pieces -> ours. Layer i: "encoder.layer.{i}." -> "layers.{i}.".
_EMBEDDING_NAMES = {
    "embeddings.word_embeddings.weight": "embeddings.word",
    "embeddings.position_embeddings.weight": "embeddings.position",
    "embeddings.token_type_embeddings.weight": "embeddings.token_type",
    "embeddings.LayerNorm.": "embeddings.norm.",
}
_LAYER_NAMES = {
    "attention.self.query.": "query.",
    "attention.self.key.": "key.",
    "attention.self.value.": "value.",
    "attention.output.dense.": "attn_out.",
    "attention.output.LayerNorm.": "attn_norm.",
    "intermediate.dense.": "ff_in.",
    "output.dense.": "ff_out.",
    "output.LayerNorm.": "ff_norm.",
}
# Tensors a BERT checkpoint may hold that the encoder does not use.
_IGNORED_PREFIXES = ("embeddings.position_ids", "pooler.", "cls.")


@dataclass(frozen=True)
class BertConfig:
    """The sizes of a BERT encoder, read from a Hugging Face config.json.

    Attributes:
        vocab_size: rows of the word embedding.
        hidden_size: D, the width of every token state.
        num_hidden_layers: N transformer layers.
        num_attention_heads: H heads; D must be divisible by H.
        intermediate_size: width of the feed-forward's hidden layer.
        max_position_embeddings: longest sequence the position table covers.
        type_vocab_size: rows of the token-type (segment) embedding.
        layer_norm_eps: epsilon of every LayerNorm.
    """

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_dict(cls, config: dict[str, Any], source: str = CONFIG_FILE) -> BertConfig:
        """Validate a config.json's content and keep the fields the encoder needs.

        Args:
            config: the parsed config.json.
            source: where it came from, for error messages.

        Returns:
            The config.

        Raises:
            ValueError: naming the field when the model is not a plain BERT encoder.
        """
        reason = _config_problem(config)
        if reason is not None:
            raise ValueError(f"{source}: {reason}")
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config["hidden_size"]),
            num_hidden_layers=int(config["num_hidden_layers"]),
            num_attention_heads=int(config["num_attention_heads"]),
            intermediate_size=int(config["intermediate_size"]),
            max_position_embeddings=int(config["max_position_embeddings"]),
            type_vocab_size=int(config.get("type_vocab_size", 2)),
            layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
        )


def _config_problem(config: dict[str, Any]) -> str | None:
    """Why a config.json does not describe a BERT encoder this module runs, or None."""
    model_type = config.get("model_type")
    if model_type != "bert":
        return f"model_type {model_type!r} is not 'bert'"
    required = (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
    )
    missing = [key for key in required if key not in config]
    if missing:
        return f"missing field(s) {missing}"
    position = config.get("position_embedding_type", "absolute")
    if position != "absolute":
        return f"position_embedding_type {position!r} is not supported (only 'absolute')"
    activation = config.get("hidden_act", "gelu")
    if activation != "gelu":
        return f"hidden_act {activation!r} is not supported (only 'gelu', the erf form)"
    for flag in ("is_decoder", "add_cross_attention"):
        if config.get(flag):
            return f"{flag}=true is not supported (encoder only)"
    chunk = config.get("chunk_size_feed_forward", 0)
    if chunk:
        return f"chunk_size_feed_forward {chunk} is not supported (only 0)"
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    if hidden % heads:
        return f"hidden_size {hidden} is not divisible by num_attention_heads {heads}"
    return None


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, with errors naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: unreadable JSON ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _weight_dtypes(path: Path) -> set[str]:
    """The dtypes in a safetensors file, read from its header alone (no tensor data).

    The format is an 8-byte little-endian header length, then that many bytes of JSON mapping
    each tensor name to {dtype, shape, data_offsets}.
    """
    try:
        with path.open("rb") as file:
            prefix = file.read(8)
            if len(prefix) < 8:
                raise ValueError(f"{path}: {len(prefix)} bytes, too short for a safetensors file")
            (size,) = struct.unpack("<Q", prefix)
            if size > path.stat().st_size - 8:
                raise ValueError(f"{path}: header length {size} exceeds the file size")
            header = json.loads(file.read(size))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a safetensors file ({error})") from error
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (header is not a JSON object)")
    return {v["dtype"] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}


def unsupported_reason(folder: str | Path) -> str | None:
    """Why `folder` cannot be run by this module (None: it can).

    Checks config.json (a plain BERT encoder), tokenizer.json (present; a BERT tokenizer class in
    tokenizer_config.json) and model.safetensors (present, float32). Cheap: reads JSON files and
    the weights' header, no tensors.

    Args:
        folder: a Hugging Face model folder.

    Returns:
        A one-line reason naming the file and field, or None.

    Raises:
        ValueError: a file exists but is corrupt (bad JSON, a truncated safetensors header).
    """
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        return f"no {CONFIG_FILE}"
    problem = _config_problem(_read_json(folder / CONFIG_FILE))
    if problem is not None:
        return f"{CONFIG_FILE}: {problem}"
    if not (folder / TOKENIZER_FILE).is_file():
        return f"no {TOKENIZER_FILE}"
    if (folder / TOKENIZER_CONFIG_FILE).is_file():
        tokenizer_class = _read_json(folder / TOKENIZER_CONFIG_FILE).get("tokenizer_class")
        if tokenizer_class not in _TOKENIZER_CLASSES:
            return f"{TOKENIZER_CONFIG_FILE}: tokenizer_class {tokenizer_class!r} is not BERT's"
    if not (folder / WEIGHTS_FILE).is_file():
        return f"no {WEIGHTS_FILE}"
    dtypes = _weight_dtypes(folder / WEIGHTS_FILE) - {"I64"}  # I64: position_ids buffer
    if dtypes != {"F32"}:
        return f"{WEIGHTS_FILE}: weights stored as {sorted(dtypes)}, not float32"
    return None


@dataclass(frozen=True)
class BertOutput:
    """What `BertEncoder` returns.

    Attributes:
        last_hidden_state: [B, L, D] token states after the last layer (padding rows included:
            they are computed like any row and carry no meaning).
    """

    last_hidden_state: Tensor


class BertEmbeddings(nn.Module):
    """Token ids -> LayerNorm(word + token type 0 + absolute position) embeddings.

    The three tables are plain [rows, D] parameters, created empty: they only ever hold loaded
    weights (and nn.Embedding's random init on the meta device imports torch._dynamo, ~2 s).
    """

    def __init__(self, config: BertConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        d = config.hidden_size
        self.word = nn.Parameter(torch.empty(config.vocab_size, d, device=device))
        self.position = nn.Parameter(torch.empty(config.max_position_embeddings, d, device=device))
        self.token_type = nn.Parameter(torch.empty(config.type_vocab_size, d, device=device))
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps, device=device)

    def forward(self, input_ids: Tensor) -> Tensor:
        """Args: input_ids [B, L] int64. Returns: [B, L, D]."""
        length = input_ids.shape[1]
        # Single-segment input: every token has type 0. Sum in transformers' order
        # ((word + type) + position) so the float results are identical.
        x = F.embedding(input_ids, self.word) + self.token_type[0]  # [B, L, D]
        x = x + self.position[:length]  # [L, D] broadcast over B
        return self.norm(x)


class BertLayer(nn.Module):
    """One post-norm transformer layer: x = LN(x + attn(x)); x = LN(x + ff(x))."""

    def __init__(self, config: BertConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        d, eps = config.hidden_size, config.layer_norm_eps
        self.heads = config.num_attention_heads
        self.head_dim = d // self.heads
        # Separate q/k/v projections (not one fused matmul) keep outputs bitwise equal to the
        # checkpoint's reference implementation.
        self.query = nn.Linear(d, d, device=device)
        self.key = nn.Linear(d, d, device=device)
        self.value = nn.Linear(d, d, device=device)
        self.attn_out = nn.Linear(d, d, device=device)
        self.attn_norm = nn.LayerNorm(d, eps=eps, device=device)
        self.ff_in = nn.Linear(d, config.intermediate_size, device=device)
        self.ff_out = nn.Linear(config.intermediate_size, d, device=device)
        self.ff_norm = nn.LayerNorm(d, eps=eps, device=device)

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        """Args: x [B, L, D]; attn_mask [B, 1, L, L] bool (True = attend) or None (no padding).

        Returns: [B, L, D].
        """
        b, length, d = x.shape
        heads_shape = (b, length, self.heads, self.head_dim)
        q = self.query(x).view(heads_shape).transpose(1, 2)  # [B, H, L, Dh]
        k = self.key(x).view(heads_shape).transpose(1, 2)  # [B, H, L, Dh]
        v = self.value(x).view(heads_shape).transpose(1, 2)  # [B, H, L, Dh]
        attn = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, scale=self.head_dim**-0.5
        )  # [B, H, L, Dh]
        attn = attn.transpose(1, 2).contiguous().reshape(b, length, d)  # [B, L, D]
        x = self.attn_norm(self.attn_out(attn) + x)
        return self.ff_norm(self.ff_out(F.gelu(self.ff_in(x))) + x)


class BertEncoder(nn.Module):
    """A BERT encoder (Devlin et al. 2019, "BERT", section 3): embeddings, then N layers.

    Made to run loaded weights: the embedding tables start uninitialised, so build it with
    `load_bert` rather than training one from scratch.

    Args:
        config: sizes (see `BertConfig`).
        device: where the parameters are created ("meta": shapes only, for loading weights by
            assignment without a random initialisation).

    Attributes:
        config: the config, as `TextEncoder` reads `hidden_size` / `max_position_embeddings`.
    """

    def __init__(self, config: BertConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config, device)
        self.layers = nn.ModuleList(
            BertLayer(config, device) for _ in range(config.num_hidden_layers)
        )

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> BertOutput:
        """Encode token ids.

        Args:
            input_ids: [B, L] int64 token ids, L <= max_position_embeddings.
            attention_mask: [B, L] (bool or 0/1 ints), true for real tokens; None = all real.

        Returns:
            BertOutput with last_hidden_state [B, L, D].
        """
        b, length = input_ids.shape
        if length > self.config.max_position_embeddings:
            raise ValueError(
                f"input of {length} tokens exceeds max_position_embeddings "
                f"{self.config.max_position_embeddings}"
            )
        x = self.embeddings(input_ids)  # [B, L, D]
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            # Keys that are padding get no weight; without padding no mask at all, so SDPA may
            # pick its fused kernel (and the result matches transformers, which does the same).
            keys = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, L]
            mask = keys.expand(b, 1, length, length)  # [B, 1, L, L]
        for layer in self.layers:
            x = layer(x, mask)
        return BertOutput(last_hidden_state=x)


def _map_name(name: str) -> str | None:
    """A Hugging Face BERT parameter name -> ours; None for tensors the encoder ignores.

    Accepts the "bert." prefix of checkpoints saved with a task head and the gamma/beta names of
    old LayerNorm checkpoints. Unknown names are returned unchanged (load_state_dict reports them).
    """
    name = name.removeprefix("bert.")
    if name.startswith(_IGNORED_PREFIXES):
        return None
    if name.endswith(".gamma"):
        name = name[: -len("gamma")] + "weight"
    elif name.endswith(".beta"):
        name = name[: -len("beta")] + "bias"
    for theirs, ours in _EMBEDDING_NAMES.items():
        if name.startswith(theirs):
            return ours + name[len(theirs) :]
    if name.startswith("encoder.layer."):
        index, _, rest = name[len("encoder.layer.") :].partition(".")
        for theirs, ours in _LAYER_NAMES.items():
            if rest.startswith(theirs):
                return f"layers.{index}.{ours}{rest[len(theirs) :]}"
    return name


def load_bert(folder: str | Path) -> BertEncoder:
    """Build a `BertEncoder` from a Hugging Face folder (config.json + model.safetensors).

    Args:
        folder: the model folder.

    Returns:
        The encoder on CPU in float32, eval mode, gradients off.

    Raises:
        ValueError: an unsupported config (naming the field), corrupt weights, or weights that
            do not match the config (naming the missing / unexpected / misshapen tensors).
    """
    folder = Path(folder)
    config = BertConfig.from_dict(_read_json(folder / CONFIG_FILE), str(folder / CONFIG_FILE))
    path = folder / WEIGHTS_FILE
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as error:
        raise ValueError(f"{path}: cannot read the weights ({error})") from error
    state: dict[str, Tensor] = {}
    for name, tensor in tensors.items():
        ours = _map_name(name)
        if ours is not None:
            state[ours] = tensor
    bad_dtypes = sorted({str(t.dtype) for t in state.values() if t.dtype != torch.float32})
    if bad_dtypes:
        raise ValueError(f"{path}: weights stored as {bad_dtypes}, expected float32")
    # Built on the meta device and filled by assignment: no time spent on a random init. The
    # device is passed to each layer: a `with torch.device("meta")` block imports torch._dynamo
    # (~2 s on a 2-core CPU, as much as the transformers import this module avoids).
    model = BertEncoder(config, device="meta")
    expected = {name: p.shape for name, p in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshapen = [
        f"{name} {tuple(state[name].shape)} != {tuple(shape)}"
        for name, shape in expected.items()
        if name in state and state[name].shape != shape
    ]
    if missing or unexpected or misshapen:
        raise ValueError(
            f"{path} does not match {CONFIG_FILE}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shape {misshapen[:5]}"
        )
    model.load_state_dict(state, assign=True)
    return model.eval().requires_grad_(False)


def _token_text(value: Any) -> str | None:
    """A special token from tokenizer_config.json: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class BertTokenizer:
    """A BERT WordPiece tokenizer from tokenizer.json, called like a transformers tokenizer.

    tokenizer.json is run by the `tokenizers` package; as transformers does, the lower-casing,
    accent-stripping and Chinese-character options of tokenizer_config.json override the
    normaliser stored in tokenizer.json, and the truncation / padding stored there are ignored
    in favour of each call's arguments.

    Args:
        folder: the model folder (tokenizer.json, optionally tokenizer_config.json).

    Attributes:
        model_max_length: tokenizer_config.json's limit (a huge number when it sets none).
        pad_token_id: id of the padding token.
    """

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        path = folder / TOKENIZER_FILE
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # tokenizers raises plain Exception on a bad file
            raise ValueError(f"{path}: cannot load the tokenizer ({error})") from error
        config_path = folder / TOKENIZER_CONFIG_FILE
        config = _read_json(config_path) if config_path.is_file() else {}
        self._tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
            strip_accents=config.get("strip_accents"),
            lowercase=bool(config.get("do_lower_case", True)),
        )
        self.model_max_length = int(config.get("model_max_length") or _NO_LIMIT)
        padding = self._tokenizer.padding or {}
        pad_token = _token_text(config.get("pad_token")) or padding.get("pad_token") or "[PAD]"
        pad_id = self._tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"{path}: pad token {pad_token!r} is not in the vocabulary")
        self.pad_token = pad_token
        self.pad_token_id = pad_id
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    def __call__(
        self,
        texts: Sequence[str],
        *,
        padding: bool = False,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
        verbose: bool = True,
    ) -> dict[str, Any]:
        """Tokenize a batch, [CLS] ... [SEP] around each text.

        Args:
            texts: B strings.
            padding: pad every row on the right to the longest one.
            truncation: cut rows longer than `max_length` (special tokens included).
            max_length: the limit for truncation; None = model_max_length.
            return_tensors: "pt" for [B, L] int64 tensors (needs padding when lengths differ);
                None for lists of ids.
            verbose: accepted for call compatibility with transformers (this class never warns).

        Returns:
            {"input_ids": ..., "attention_mask": ...}: ids and 1 for real tokens / 0 for padding.
        """
        del verbose
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors must be None or 'pt', got {return_tensors!r}")
        limit = max_length if max_length is not None else self.model_max_length
        if truncation:
            self._tokenizer.enable_truncation(limit, strategy="longest_first", direction="right")
        if padding:
            self._tokenizer.enable_padding(pad_id=self.pad_token_id, pad_token=self.pad_token)
        try:
            encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
        finally:
            self._tokenizer.no_truncation()
            self._tokenizer.no_padding()
        ids = [e.ids for e in encodings]
        mask = [e.attention_mask for e in encodings]
        if return_tensors == "pt":
            if len({len(row) for row in ids}) > 1:
                raise ValueError("rows of different lengths need padding=True for tensors")
            return {
                "input_ids": torch.tensor(ids, dtype=torch.long),  # [B, L]
                "attention_mask": torch.tensor(mask, dtype=torch.long),  # [B, L]
            }
        return {"input_ids": ids, "attention_mask": mask}
