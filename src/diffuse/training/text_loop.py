"""Training the text models: `diffuse train` on a recipe with a [text] table.

One trainer for both objectives: `text.objective = "mdlm"` trains a bidirectional
`TextTransformer` on the masked diffusion ELBO (`diffuse.text.objectives.mdlm_elbo`), `"ar"`
trains the same class with a causal mask on next-token prediction. Both see exactly the same
windows in the same order (random crops of the training split drawn from `train.seed` and the
step), so at equal width, depth and steps they have equal parameters (up to the time MLP of a
time-conditioned diffusion network) and equal training tokens.

The run folder, checkpoints, resume, time budget, logging and Ctrl-C handling are the shared
ones (`run_loop.run_steps`); the EMA is the image trainer's. Every `eval.every_steps` steps the
EMA network's validation bits per character (the MDLM bound with its standard error, or the
AR model's exact NLL) goes into metrics.jsonl; at the end the EMA network is written to
RUN/model as a text model folder (`model_folder.save_text_model`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffuse.config import TextTrainConfig, to_dict
from diffuse.data_files import TextCorpus, read_text_corpus
from diffuse.text.bound import BitsPerChar, ar_bits_per_char, mdlm_bound, windows_of
from diffuse.text.masking import MaskSchedule
from diffuse.text.objectives import ar_nll, mdlm_elbo
from diffuse.text.transformer import TextNetConfig, TextTransformer, text_preset
from diffuse.text_model_folder import TextModelInfo, save_text_model
from diffuse.training import checkpoint as ckpt
from diffuse.training import dist
from diffuse.training.counter_rng import mix_seeds
from diffuse.training.ema import EMA
from diffuse.training.loop_state import LoopState, load_resume_checkpoint
from diffuse.training.model import count_parameters, param_groups
from diffuse.training.run_folder import open_run
from diffuse.training.run_loop import NonFiniteError, StepReport, interruptible, run_steps

logger = logging.getLogger(__name__)

__all__ = ["TextTrainResult", "text_network_config", "train_text"]

EVAL_SEED = 0  # the validation bound's times and masks: the same at every evaluation


def text_network_config(cfg: TextTrainConfig, vocab_size: int) -> TextNetConfig:
    """The network of a [text] section: its preset with the recipe's width, depth, heads."""
    t = cfg.text
    base = text_preset(t.preset)
    return TextNetConfig(
        vocab_size=vocab_size,
        width=t.width or base.width,
        depth=t.depth or base.depth,
        heads=t.heads or base.heads,
        mlp_ratio=base.mlp_ratio,
        max_length=t.length,
        causal=t.objective == "ar",
        time_conditioning=t.time_conditioning,
        rope_base=base.rope_base,
    )


@dataclass
class TextTrainResult:
    """What `train_text` leaves behind."""

    run_dir: Path
    step: int
    model_dir: Path
    validation: BitsPerChar | None


def train_text(
    cfg: TextTrainConfig, out: str | Path, resume: bool = False, progress: bool | None = None
) -> TextTrainResult:
    """Train the text model of `cfg` into the run folder `out` (one process, CPU or GPU).

    Args:
        cfg: the recipe.
        out: run folder (created; an existing run needs `resume`).
        resume: continue from the newest valid checkpoint.
        progress: show a progress bar (None: when stderr is a terminal).
    Returns:
        TextTrainResult; the model is in `out/model`.
    Raises:
        TrainingInterrupted: Ctrl-C; the newest checkpoint is intact, resume continues it.
    """
    out = Path(out)
    with interruptible(out):
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        info = dist.DistInfo(device=dist.pick_device(cfg.train.device))
        corpus = read_text_corpus(cfg.data.path, cfg.data.validation_fraction)
        if corpus.train.numel() <= cfg.text.length:
            raise ValueError(
                f"the training split has {corpus.train.numel()} characters, not more than "
                f"text.length = {cfg.text.length}"
            )
        has_run = open_run(out, cfg, resume, info)
        steps = _TextSteps(cfg, out, info.device, corpus)
        loop = LoopState()
        if has_run:
            found = load_resume_checkpoint(out, info, map_location=info.device)
            if found is not None:
                loop = steps.restore(found)
        loop = run_steps(
            cfg, out, loop, steps, steps.save, info=info, resumed=has_run,
            show_progress=progress is not False,
        )  # fmt: skip
        model_dir = steps.export(loop.step)
        return TextTrainResult(out, loop.step, model_dir, steps.last_validation)


class _TextSteps:
    """One optimizer step of text training (a `run_loop.StepFn`), its checkpoint and export."""

    def __init__(
        self, cfg: TextTrainConfig, out: Path, device: torch.device, corpus: TextCorpus
    ) -> None:
        self.cfg, self.out, self.device, self.corpus = cfg, out, device, corpus
        torch.manual_seed(cfg.train.seed)
        self.net_cfg = text_network_config(cfg, corpus.vocab.size)
        self.net = TextTransformer(self.net_cfg).to(device)
        self.ema = EMA(self.net, cfg.ema.halflife_images, cfg.ema.rampup)
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(
            param_groups(self.net, o.weight_decay), lr=o.lr, betas=o.betas, eps=o.eps
        )
        self.schedule = MaskSchedule(cfg.text.schedule)
        self.val_windows = windows_of(corpus.validation, cfg.text.length, cfg.eval.windows)
        self.last_validation: BitsPerChar | None = None
        self.nonfinite = 0
        logger.info(
            "text %s network: %.3fM parameters (width %d, depth %d, heads %d%s); %d training "
            "characters, %d validation windows of %d",
            cfg.text.objective,
            count_parameters(self.net) / 1e6,
            self.net_cfg.width,
            self.net_cfg.depth,
            self.net_cfg.heads,
            ", time-conditioned" if self.net_cfg.time_conditioning else "",
            corpus.train.numel(),
            len(self.val_windows),
            cfg.text.length,
        )

    def batch(self, step: int) -> torch.Tensor:
        """The training windows of 0-based step `step` [B, L]: random crops of the training
        split, a pure function of (train.seed, step), the same for either objective."""
        g = torch.Generator().manual_seed(mix_seeds(self.cfg.train.seed, step, 0x7E47))
        length, batch = self.cfg.text.length, self.cfg.optim.batch_size
        starts = torch.randint(0, self.corpus.train.numel() - length + 1, (batch,), generator=g)
        return self.corpus.train[starts[:, None] + torch.arange(length)]

    def loss(self, x0: torch.Tensor, step: int) -> torch.Tensor:
        """The objective in nats per character."""
        if self.cfg.text.objective == "ar":
            return ar_nll(self.net, x0).mean() / x0.shape[1]
        g = torch.Generator().manual_seed(mix_seeds(self.cfg.train.seed, step, 0x3A5C))
        return mdlm_elbo(self.net, x0, self.schedule, g)

    def __call__(self, step: int, lr: float, log: bool) -> StepReport:
        """Run 0-based step `step` at learning rate `lr`; validation on eval steps."""
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x0 = self.batch(step).to(self.device)
        self.net.train()
        loss = self.loss(x0, step)
        value = float(loss.detach())
        fields: dict[str, Any] = {}
        if not math.isfinite(value):
            self.nonfinite += 1
            if self.nonfinite >= cfg.optim.max_nonfinite:
                raise NonFiniteError(
                    f"step {step + 1}: {self.nonfinite} non-finite losses in a row; lower optim.lr"
                )
            return StepReport(None, len(x0))
        self.nonfinite = 0
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.optim.grad_clip)
            if log:
                fields["grad_norm"] = round(float(norm), 4)
        self.optimizer.step()
        self.ema.update(self.net, len(x0), (step + 1) * len(x0))
        at = step + 1
        every = cfg.eval.every_steps
        if every and (at % every == 0 or at == cfg.train.steps):
            score = self.validate()
            fields["val_bpc"] = round(score.bits_per_char, 5)
            if score.standard_error:
                fields["val_bpc_se"] = round(score.standard_error, 5)
            logger.info(
                "step %d: validation %.4f +- %.4f bits/char (EMA, %d windows)",
                at,
                score.bits_per_char,
                score.standard_error,
                score.windows,
            )
        if log:
            fields["bpc"] = round(value / math.log(2.0), 5)
        return StepReport(value, len(x0), fields)

    def validate(self) -> BitsPerChar:
        """The EMA network's validation bits per character on the recipe's windows."""
        e, net = self.cfg.eval, self.ema.module
        if self.cfg.text.objective == "ar":
            score = ar_bits_per_char(net, self.val_windows, e.batch_size)
        else:
            score = mdlm_bound(
                net, self.val_windows, self.schedule, e.times, e.batch_size, seed=EVAL_SEED
            )
        self.last_validation = score
        return score

    def save(self, at_step: int, loop_entries: dict[str, Any]) -> None:
        """Write the checkpoint of `at_step`."""
        ckpt.save_checkpoint(
            self.out,
            at_step,
            model={k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            ema={k: v.detach().cpu() for k, v in self.ema.state_dict().items()},
            config={"recipe": to_dict(self.cfg), "network": to_dict(self.net_cfg)},
            state={**loop_entries, "optimizer": self.optimizer.state_dict()},
            keep=self.cfg.checkpoint.keep,
        )

    def restore(self, found: ckpt.Checkpoint) -> LoopState:
        """Load a checkpoint's weights, average and optimizer state; returns its loop state."""
        self.net.load_state_dict(found.model)
        self.ema.load_state_dict(found.ema)
        self.optimizer.load_state_dict(found.state["optimizer"])
        return LoopState.from_state({"step": found.step, **found.state})

    def export(self, step: int) -> Path:
        """Write the EMA network to RUN/model."""
        cfg = self.cfg
        info = TextModelInfo(
            objective=cfg.text.objective,
            chars=self.corpus.vocab.chars,
            network=self.net_cfg,
            schedule=cfg.text.schedule,
            recipe=to_dict(cfg),
            validation=None
            if self.last_validation is None
            else {"step": step, **self.last_validation.to_dict()},
        )
        return save_text_model(self.out / "model", self.ema.module, info)
