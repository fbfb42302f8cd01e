"""Training: data, the loop, EMA, checkpoints and multi-process helpers.

Entry points: `diffuse.training.loop.train(cfg, out_dir)` (diffusion) and
`diffuse.training.vae_loop.train_vae(cfg, out_dir)` (autoencoder); recipes are `diffuse.config`.
Ctrl-C during either raises `TrainingInterrupted` (a KeyboardInterrupt) after which the newest
checkpoint is intact and `resume=True` continues it.
"""

from diffuse.training.run_loop import NonFiniteError, TrainingInterrupted

__all__ = ["NonFiniteError", "TrainingInterrupted"]
