"""Samplers of the text models: masked diffusion unmasking, and autoregressive decoding.

Masked diffusion (`unmask`) starts from a sequence whose unknown characters are the mask token
and runs a grid of times from t = 1 down to t = 0; at each step the network predicts every
masked character and some of them are committed. Two rules choose which:

- "ancestral": the exact reverse step of the absorbing process (MDLM, Sahoo et al. 2024,
  Eq. 7-8): from t to s each masked character is revealed with probability
  (alpha(s) - alpha(t)) / (1 - alpha(t)), drawn from the network's prediction.
- "confidence": LLaDA's low-confidence remasking (Nie et al. 2025, Alg. 5): every masked
  character is predicted, the most confident ones are kept so that a fraction 1 - alpha(s) of
  the characters stays masked, and the rest are masked again.

With `block_length` the masked positions are decoded in blocks left to right (LLaDA's
semi-autoregressive decoding), the step budget shared among the blocks, diffusion inside each.
A character once revealed is never changed, and a character that was given is never masked.

Randomness is per sample: sample i draws from its own CPU generator seeded by seeds[i], the
same numbers at every step whether or not the network is called, so the same seed gives the
same text in any batch, and the no-change cache (skipping the network when no character
changed since its last call, for networks without a time input) gives bit-identical output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from diffuse.text.masking import MaskSchedule
from diffuse.text.transformer import KVCache, TextTransformer

__all__ = [
    "TEXT_SAMPLERS",
    "Decoding",
    "SampleRandom",
    "TextStep",
    "autoregressive",
    "check_steps",
    "filter_probs",
    "unmask",
]

TEXT_SAMPLERS = ("ancestral", "confidence")


@dataclass(frozen=True)
class Decoding:
    """How a character is drawn from the network's logits.

    Args:
        temperature: logits are divided by it (> 0).
        top_k: keep the k most likely characters (0: all).
        top_p: keep the smallest set of most likely characters whose probability reaches p
            (nucleus sampling, Holtzman et al. 2020; 1: all).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0: off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def filter_probs(logits: Tensor, decoding: Decoding) -> Tensor:
    """Probabilities [..., V] after temperature, top-k and top-p (renormalised)."""
    probs = torch.softmax(logits.float() / decoding.temperature, dim=-1)
    if decoding.top_k and decoding.top_k < probs.shape[-1]:
        kth = probs.topk(decoding.top_k, dim=-1).values[..., -1:]
        probs = torch.where(probs >= kth, probs, torch.zeros_like(probs))
    if decoding.top_p < 1:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(dim=-1) - sorted_p  # mass of the more likely characters
        keep_sorted = before < decoding.top_p * sorted_p.sum(dim=-1, keepdim=True)
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        probs = torch.where(keep, probs, torch.zeros_like(probs))
    return probs / probs.sum(dim=-1, keepdim=True)


def _draw(probs: Tensor, u: Tensor) -> Tensor:
    """Inverse-CDF draw: tokens [...] from probabilities [..., V] and uniforms u [...]."""
    cdf = probs.cumsum(dim=-1)
    index = (cdf < u[..., None] * cdf[..., -1:]).sum(dim=-1)
    return index.clamp_(max=probs.shape[-1] - 1)


class SampleRandom:
    """One CPU generator per sample: `uniform(n)` gives [B, n], row i from seeds[i]."""

    def __init__(self, seeds: Sequence[int]) -> None:
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def uniform(self, n: int) -> Tensor:
        return torch.stack([torch.rand(n, generator=g) for g in self.generators])


@dataclass(frozen=True)
class TextStep:
    """What a sampler tells its callback after each step.

    Attributes:
        index: the step just done (0-based).
        steps: the total number of steps.
        tokens: [B, L] the sequence after the step (mask ids where still masked).
        evaluated: the network ran on this step (False: the no-change cache served it).
    """

    index: int
    steps: int
    tokens: Tensor
    evaluated: bool


TextCallback = Callable[[TextStep], object]


def check_steps(steps: int, masked: int) -> None:
    """The step count must be in 1..masked: every step then reveals a character on average;
    more steps than masked characters would only repeat network calls that change nothing.

    Raises:
        ValueError: naming both numbers.
    """
    if masked < 1:
        raise ValueError("nothing to generate: the sequence has no masked character")
    if not 1 <= steps <= masked:
        raise ValueError(
            f"steps = {steps} must be between 1 and the number of characters to generate "
            f"({masked}): a step reveals at least one character on average, so more steps "
            "than characters cannot help"
        )


def _blocks(masked: Tensor, block_length: int) -> list[Tensor]:
    """Position masks [L] bool of the blocks holding masked characters, left to right."""
    length = masked.shape[-1]
    size = block_length or length
    out = []
    any_masked = masked.any(dim=0)
    for start in range(0, length, size):
        region = torch.zeros(length, dtype=torch.bool)
        region[start : start + size] = True
        if (any_masked & region).any():
            out.append(region)
    return out


@torch.no_grad()
def unmask(
    net: TextTransformer,
    tokens: Tensor,
    steps: int,
    seeds: Sequence[int],
    *,
    schedule: MaskSchedule | None = None,
    sampler: Literal["ancestral", "confidence"] = "confidence",
    block_length: int = 0,
    decoding: Decoding | None = None,
    cache: bool = True,
    callback: TextCallback | None = None,
) -> Tensor:
    """Fill the masked characters of `tokens` by masked diffusion.

    Args:
        net: the bidirectional network (eval mode).
        tokens: [B, L] ids; the mask id (net.config.vocab_size) marks what to generate, every
            other id is given and kept (a prompt, or the two sides of an infill).
        steps: network steps in all (1..masked characters per sample; with blocks, at least
            one per block).
        seeds: one seed per sample.
        schedule: alpha(t) of the step grid (default linear).
        sampler: "ancestral" or "confidence" (see the module docstring).
        block_length: semi-autoregressive block size in characters (0: one block).
        decoding: temperature, top-k, top-p.
        cache: skip the network when no character changed since its last call (only for
            networks without a time input; the output is identical either way).
        callback: called with a `TextStep` after each step.
    Returns:
        [B, L] tokens with every mask filled.
    """
    if sampler not in TEXT_SAMPLERS:
        raise ValueError(f"unknown text sampler {sampler!r}; one of {list(TEXT_SAMPLERS)}")
    if net.config.causal:
        raise ValueError("masked diffusion sampling needs a bidirectional (non-causal) network")
    if tokens.dim() != 2 or len(seeds) != tokens.shape[0]:
        raise ValueError(
            f"tokens must be [B, L] with one seed per row; got {tuple(tokens.shape)} and "
            f"{len(seeds)} seeds"
        )
    if block_length < 0:
        raise ValueError(f"block_length must be >= 0, got {block_length}")
    schedule = schedule or MaskSchedule("linear")
    decoding = decoding or Decoding()
    mask_id = net.config.vocab_size
    device = next(net.parameters()).device
    x = tokens.clone().cpu()
    start_masked = x == mask_id  # [B, L]
    check_steps(steps, int(start_masked.sum(dim=1).min()))
    blocks = _blocks(start_masked, block_length)
    if steps < len(blocks):
        raise ValueError(
            f"steps = {steps} is fewer than the {len(blocks)} blocks of {block_length} "
            "characters to decode: each block needs at least one step"
        )
    per_block = [steps // len(blocks) + (i < steps % len(blocks)) for i in range(len(blocks))]
    rng = SampleRandom(seeds)
    reuse = cache and not net.config.time_conditioning
    logits: Tensor | None = None
    last_input: Tensor | None = None
    index = 0
    for region, n_steps in zip(blocks, per_block):
        in_block = start_masked & region  # [B, L] what this block generates
        block_total = in_block.sum(dim=1)  # [B]
        grid = torch.linspace(1.0, 0.0, n_steps + 1)
        for k in range(n_steps):
            t, s = grid[k], grid[k + 1]
            u_token, u_reveal = rng.uniform(x.shape[1]), rng.uniform(x.shape[1])  # [B, L] each
            evaluated = not (reuse and last_input is not None and torch.equal(x, last_input))
            if evaluated:
                t_in = torch.full((x.shape[0],), float(t), device=device)
                logits = net(x.to(device), t_in).cpu()  # [B, L, V]
                last_input = x.clone()
            assert logits is not None
            probs = filter_probs(logits, decoding)
            proposal = _draw(probs, u_token)  # [B, L] a character for every position
            masked = (x == mask_id) & in_block
            alpha_t, alpha_s = schedule.alpha(t), schedule.alpha(s)
            if sampler == "ancestral":
                # reveal each masked character with prob (alpha_s - alpha_t) / (1 - alpha_t)
                p_reveal = 1.0 if k == n_steps - 1 else float((alpha_s - alpha_t) / (1 - alpha_t))
                reveal = masked & (u_reveal < p_reveal)
            else:
                # keep the most confident proposals; a fraction 1 - alpha_s of the block stays
                stay = torch.round(block_total * (1.0 - alpha_s)).long()
                stay = torch.zeros_like(stay) if k == n_steps - 1 else stay
                count = (masked.sum(dim=1) - stay).clamp(min=0)  # [B] reveal this many
                confidence = probs.gather(-1, proposal[..., None]).squeeze(-1)
                confidence = torch.where(masked, confidence, torch.full_like(confidence, -1.0))
                order = confidence.argsort(dim=1, descending=True, stable=True)
                ranks = torch.empty_like(order).scatter_(
                    1, order, torch.arange(x.shape[1]).expand_as(order).contiguous()
                )
                reveal = masked & (ranks < count[:, None])
            x = torch.where(reveal, proposal, x)
            if callback is not None:
                callback(TextStep(index, steps, x, evaluated))
            index += 1
    return x.to(tokens.device)


@torch.no_grad()
def autoregressive(
    net: TextTransformer,
    prompt: Tensor,
    length: int,
    seeds: Sequence[int],
    *,
    decoding: Decoding | None = None,
    callback: TextCallback | None = None,
) -> Tensor:
    """Generate `length` characters after `prompt` with the causal network and a key/value
    cache (one network call per character after reading the prompt).

    Args:
        net: the causal network (eval mode).
        prompt: [B, P] ids (P may be 0).
        length: characters to generate (>= 1).
        seeds: one seed per sample.
        decoding: temperature, top-k, top-p.
        callback: called with a `TextStep` after each character.
    Returns:
        [B, P + length] the prompt followed by the generated characters.
    """
    if not net.config.causal:
        raise ValueError("autoregressive sampling needs a causal network")
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if prompt.dim() != 2 or len(seeds) != prompt.shape[0]:
        raise ValueError(
            f"prompt must be [B, P] with one seed per row; got {tuple(prompt.shape)} and "
            f"{len(seeds)} seeds"
        )
    decoding = decoding or Decoding()
    device = next(net.parameters()).device
    rng = SampleRandom(seeds)
    begin = torch.full((prompt.shape[0], 1), net.config.vocab_size, dtype=torch.long)
    kv = KVCache()
    logits = net(torch.cat([begin, prompt.cpu()], dim=1).to(device), cache=kv)[:, -1].cpu()
    out = [prompt.cpu()]
    for i in range(length):
        nxt = _draw(filter_probs(logits, decoding), rng.uniform(1)[:, 0])  # [B]
        out.append(nxt[:, None])
        if callback is not None:
            callback(TextStep(i, length, torch.cat(out, dim=1), True))
        if i < length - 1:
            logits = net(nxt[:, None].to(device), cache=kv)[:, -1].cpu()
    return torch.cat(out, dim=1).to(prompt.device)
