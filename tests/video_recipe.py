"""The real text/image-to-video recipe (configs/moving-shapes-t2v.toml) shrunk for tests: a
tiny pixel-space video U-Net on 16 px Moving Shapes clips of 4 frames, as `diffuse train`
arguments."""

from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "moving-shapes-t2v.toml"
TINY = [
    "data.size=8",
    "data.frames=4",
    "data.resolution=16",
    "data.codec=''",
    "data.image_fraction=0.5",
    "train.init=''",
    "train.max_minutes=0",
    "train.threads=1",
    "train.steps=2",
    "checkpoint.every_steps=1",
    "model.train_layers='all'",
    "model.overrides={base_channels=16, channel_mult=[1, 2], num_res_blocks=1, "
    "attention_levels=[1], head_channels=16, num_groups=8, dropout=0.0, temporal=true, "
    "max_frames=4, first_frame=true}",
    "optim.batch_size=4",
]


def video_train_args(out: Path, *sets: str) -> list[str]:
    """`diffuse train` arguments: the tiny recipe, then `sets` (later ones win), into `out`."""
    pairs = [x for s in [*TINY, *sets] for x in ("--set", s)]
    return ["train", str(RECIPE), "--out", str(out), "--no-progress", *pairs]
