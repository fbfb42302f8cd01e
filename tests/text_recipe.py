"""The real text-to-image recipe (configs/shapes-t2i.toml) shrunk for tests, as `diffuse train`
arguments."""

from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "shapes-t2i.toml"
TINY = [
    "data.size=64",
    "train.max_minutes=0",
    "train.threads=1",
    "model.overrides={base_channels=16, channel_mult=[1, 2], num_res_blocks=1, "
    "attention_levels=[1], head_channels=16, num_groups=8, dropout=0.0}",
    "optim.batch_size=8",
]


def train_args(out: Path, *sets: str) -> list[str]:
    """`diffuse train` arguments: the tiny recipe, then `sets` (later ones win), into `out`."""
    pairs = [x for s in [*TINY, *sets] for x in ("--set", s)]
    return ["train", str(RECIPE), "--out", str(out), "--no-progress", *pairs]
