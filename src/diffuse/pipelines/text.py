"""Text generation, infilling and scoring with a trained text model (masked diffusion or its
autoregressive baseline): what `diffuse text` calls, and the Python entry points.

    model = load_text_model("models/shakespeare-mdlm")
    texts = generate_text(model, length=256, steps=64, seeds=[0, 1])
    filled = infill_text(model, "ROMEO: [____] my lord", steps=4, seeds=[0])
    score = evaluate_text(model)             # bits/char on the recipe's validation split
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from diffuse.data_files import TEXT_VALIDATION_FRACTION, read_text_corpus
from diffuse.text.bound import BitsPerChar, ProgressFn, ar_bits_per_char, mdlm_bound, windows_of
from diffuse.text.sampling import Decoding, TextCallback, autoregressive, check_steps, unmask
from diffuse.text.template import parse_template
from diffuse.text_model_folder import TextModel

__all__ = ["Infill", "evaluate_text", "generate_text", "infill_text", "validation_windows"]


def _check_length(model: TextModel, total: int, what: str) -> None:
    """A sequence must fit the length the model was trained on."""
    if total > model.net.config.max_length:
        raise ValueError(
            f"{what} is {total} characters, longer than the {model.net.config.max_length} "
            "the model was trained on"
        )


def generate_text(
    model: TextModel,
    length: int,
    seeds: Sequence[int],
    *,
    steps: int | None = None,
    prompt: str = "",
    sampler: str | None = None,
    block_length: int = 0,
    decoding: Decoding | None = None,
    cache: bool = True,
    callback: TextCallback | None = None,
) -> list[str]:
    """Generate `length` characters after `prompt`, one text per seed.

    A diffusion model unmasks them in `steps` steps (default: the model's); the autoregressive
    model writes them one at a time with its key/value cache (`steps`, `sampler` and
    `block_length` do not apply to it).

    Args:
        model: a loaded text model.
        length: characters to generate (>= 1; prompt + length <= the trained length).
        seeds: one seed per text.
        steps: diffusion steps, 1..length.
        prompt: given text the generated characters follow.
        sampler: "ancestral" or "confidence" (default: the model's).
        block_length: semi-autoregressive block size (0: none).
        decoding: temperature, top-k, top-p.
        cache: the no-change cache of the diffusion sampler.
        callback: called after each step.
    Returns:
        the texts, the prompt followed by the generated characters.
    Raises:
        ValueError: length <= 0, steps out of range, unknown characters in the prompt, or a
            sequence longer than the trained length.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if not seeds:
        raise ValueError("give at least one seed")
    vocab = model.vocab
    given = vocab.encode(prompt)
    _check_length(model, len(prompt) + length, "prompt + length")
    rows = given.expand(len(seeds), -1)
    if not model.is_diffusion:
        if steps is not None and steps != length:
            raise ValueError(
                f"an autoregressive model writes one character per step: steps must be "
                f"{length} (the length) or left out, got {steps}"
            )
        out = autoregressive(model.net, rows, length, seeds, decoding=decoding, callback=callback)
    else:
        steps = model.info.steps if steps is None else steps
        check_steps(steps, length)
        masks = torch.full((len(seeds), length), vocab.mask_id, dtype=torch.long)
        out = unmask(
            model.net,
            torch.cat([rows, masks], dim=1),
            steps,
            seeds,
            schedule=model.schedule,
            sampler=sampler or model.info.sampler,  # type: ignore[arg-type]
            block_length=block_length,
            decoding=decoding,
            cache=cache,
            callback=callback,
        )
    return [vocab.decode(row) for row in out]


@dataclass(frozen=True)
class Infill:
    """One filled template: the whole text and the text of each gap."""

    seed: int
    text: str
    gaps: list[str]


def infill_text(
    model: TextModel,
    template: str,
    seeds: Sequence[int],
    *,
    steps: int | None = None,
    sampler: str | None = None,
    decoding: Decoding | None = None,
    cache: bool = True,
    callback: TextCallback | None = None,
) -> list[Infill]:
    """Fill the gaps of a template (`diffuse.text.template` syntax) with a diffusion model.

    Args:
        model: a masked diffusion model (an autoregressive one cannot see the right side).
        template: e.g. "ROMEO: [____] my lord".
        seeds: one seed per filling.
        steps: diffusion steps, 1..characters to fill (default: min(model's, that number)).
        sampler, decoding, cache, callback: as in `generate_text`.
    Returns:
        one `Infill` per seed.
    Raises:
        TemplateError: a mask syntax error; ValueError: an autoregressive model, unknown
            characters, steps out of range, a template longer than the trained length.
    """
    if not model.is_diffusion:
        raise ValueError(
            "an autoregressive model cannot infill (it never sees the text after a gap); "
            "use a masked diffusion model"
        )
    if not seeds:
        raise ValueError("give at least one seed")
    parsed = parse_template(template)
    vocab = model.vocab
    tokens = parsed.tokens(vocab)
    _check_length(model, parsed.length, "the filled template")
    steps = min(model.info.steps, parsed.masked) if steps is None else steps
    check_steps(steps, parsed.masked)
    out = unmask(
        model.net,
        tokens.expand(len(seeds), -1),
        steps,
        seeds,
        schedule=model.schedule,
        sampler=sampler or model.info.sampler,  # type: ignore[arg-type]
        decoding=decoding,
        cache=cache,
        callback=callback,
    )
    results = []
    for seed, row in zip(seeds, out):
        text, gaps = parsed.fill(row, vocab)
        results.append(Infill(int(seed), text, gaps))
    return results


def validation_windows(model: TextModel, data: str | None = None, limit: int = 0) -> torch.Tensor:
    """The validation windows [N, L] a model is scored on: the held-out tail of its training
    corpus (or of `data`), cut into non-overlapping windows of its trained length.

    Args:
        model: the model (its recipe names the corpus and the split).
        data: another corpus file (None: the recipe's); split by the same rule.
        limit: the first `limit` windows only (0: all).
    """
    recipe = model.info.recipe or {}
    section = recipe.get("data", {})
    path = data or section.get("path") or "shared:tinyshakespeare.txt"
    fraction = float(section.get("validation_fraction", TEXT_VALIDATION_FRACTION))
    corpus = read_text_corpus(path, fraction, vocab=model.vocab)
    return windows_of(corpus.validation, model.net.config.max_length, limit)


def evaluate_text(
    model: TextModel,
    *,
    data: str | None = None,
    windows: int = 0,
    times: int = 8,
    batch_size: int = 64,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> BitsPerChar:
    """Validation bits per character: the MDLM bound (with its Monte Carlo standard error)
    for a diffusion model, the exact NLL for the autoregressive one.

    Args:
        model: the model.
        data: another corpus file (None: the recipe's).
        windows: score only the first `windows` windows (0: all).
        times: diffusion times per window (even, >= 2).
        batch_size: sequences per network call.
        seed: the random source of the bound.
        progress: called with (done, total) after each batch.
    """
    x = validation_windows(model, data, windows)
    if model.is_diffusion:
        return mdlm_bound(model.net, x, model.schedule, times, batch_size, seed, progress)
    return ar_bits_per_char(model.net, x, batch_size, progress)
