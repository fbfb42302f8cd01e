"""PNG generation metadata: round trip, no silent overwrite, folders created."""

import pytest
from PIL import Image

from diffuse.pngmeta import read_params, save_png


def test_round_trip_and_folder_creation(tmp_path):
    params = {"prompt": "a red circle", "seed": 3, "steps": 25, "guidance": 4.0}
    path = save_png(Image.new("RGB", (4, 4), "red"), tmp_path / "new" / "a.png", params, False)
    assert read_params(path) == params
    assert Image.open(path).getpixel((0, 0)) == (255, 0, 0)


def test_existing_file_is_never_overwritten_without_permission(tmp_path):
    path = tmp_path / "a.png"
    save_png(Image.new("RGB", (4, 4), "red"), path, {"seed": 1}, False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_png(Image.new("RGB", (4, 4), "blue"), path, {"seed": 2}, False)
    assert read_params(path) == {"seed": 1}
    save_png(Image.new("RGB", (4, 4), "blue"), path, {"seed": 2}, True)
    assert read_params(path) == {"seed": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temp files left


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match="jpg"):
        save_png(Image.new("RGB", (4, 4)), tmp_path / "a.jpg", {}, False)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_params(tmp_path / "missing.png")
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    with pytest.raises(ValueError, match="no diffuse generation parameters"):
        read_params(plain)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="not a readable PNG"):
        read_params(broken)
