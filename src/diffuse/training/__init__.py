"""Training: data, the loop, EMA, checkpoints and multi-process helpers.

Entry point: `diffuse.training.loop.train(cfg, out_dir)`; recipes are `diffuse.config`.
"""
