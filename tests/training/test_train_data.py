"""Data: shared folder lookup, npz / folder / procedural datasets, preparation and order."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from diffuse.config import DataConfig
from diffuse.data_files import heldout_indices, shared_data_dir, shared_data_file
from diffuse.training.data import BatchOrder, TrainData, prepare_image
from diffuse.training.datasets import (
    DataError,
    FolderDataset,
    NpzDataset,
    ProceduralDataset,
    build_dataset,
)


def test_shared_data_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSE_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match=r"absent.npz not found.*DIFFUSE_DATA"):
        shared_data_file("absent.npz")
    monkeypatch.delenv("DIFFUSE_DATA")
    assert shared_data_dir().parts[-2:] == ("shared", "data")


def _npz(path, n=12, size=6, channels=1, **extra):
    rng = np.random.default_rng(0)
    arrays = {
        "images": rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8),
        "labels": np.arange(n) % 3,
        "classes": np.array(["a", "b", "c"]),
    }
    arrays.update(extra)
    np.savez(path, **arrays)
    return path


def test_npz_dataset_and_its_errors(tmp_path):
    ds = NpzDataset(_npz(tmp_path / "d.npz"), holdout=2)
    assert len(ds) == 10 and ds.num_classes == 3 and ds.class_names == ["a", "b", "c"]
    train_idx, held_idx = heldout_indices(12, 2)
    assert ds[4].label == train_idx[4] % 3 and ds[4].image.shape == (6, 6, 1)
    # Exactly the held-out rule's images are left out (the same ones `diffuse eval` uses).
    kept = {bytes(ds[i].image.tobytes()) for i in range(len(ds))}
    with np.load(tmp_path / "d.npz") as archive:
        held = {bytes(archive["images"][j].tobytes()) for j in held_idx}
    assert not kept & held
    with pytest.raises(FileNotFoundError, match="missing.npz not found"):
        NpzDataset(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="not a valid npz"):
        NpzDataset(tmp_path / "bad.npz")
    np.savez(tmp_path / "wrong.npz", images=np.zeros((3, 4, 4, 1), np.float32), labels=[0, 1, 2])
    with pytest.raises(DataError, match="must be uint8"):
        NpzDataset(tmp_path / "wrong.npz")
    np.savez(tmp_path / "nolabels.npz", images=np.zeros((3, 4, 4, 1), np.uint8))
    with pytest.raises(DataError, match="lacks array"):
        NpzDataset(tmp_path / "nolabels.npz")


def test_folder_dataset_labels_captions_and_unreadable_files(tmp_path, caplog):
    for cls in ("cat", "dog"):
        (tmp_path / cls / "sub").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (10, 8), (i * 100, 0, 0)).save(tmp_path / cls / f"{i}.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "dog" / "sub" / "deep.webp")
    (tmp_path / "cat" / "0.txt").write_text("a red cat\n")
    (tmp_path / "dog" / "metadata.jsonl").write_text(
        json.dumps({"file_name": "1.png", "text": "dog one"}) + "\n"
    )
    (tmp_path / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    with caplog.at_level("WARNING"):
        ds = FolderDataset(tmp_path)
    assert ds.skipped == 1 and "skipped 1 unreadable" in caplog.text
    assert ds.class_names == ["cat", "dog"] and len(ds) == 5
    names = [p.relative_to(tmp_path).as_posix() for p in ds.files]
    assert names == ["cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png", "dog/sub/deep.webp"]
    assert [ds[i].label for i in range(5)] == [0, 0, 1, 1, 1]
    assert ds[0].caption == "a red cat" and ds[3].caption == "dog one" and ds[2].caption is None
    assert ds[0].image.shape == (8, 10, 3)


def test_folder_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        FolderDataset(tmp_path / "nothing")
    with pytest.raises(DataError, match="no image files"):
        FolderDataset(tmp_path)
    (tmp_path / "a.png").write_bytes(b"garbage")
    (tmp_path / "b.jpg").write_bytes(b"more garbage")
    with pytest.raises(DataError, match="none of the 2 image files"):
        FolderDataset(tmp_path)


def test_prepare_resizes_crops_converts_and_pads():
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 18:22] = 255  # a bright vertical bar in the middle survives the centre crop
    out = prepare_image(wide, 10, 1, pad=2)
    assert out.shape == (14, 14, 1)
    assert out[2:12, 2:12].max() > 200 and out[:2].max() == 0
    grey = np.full((4, 4, 1), 7, np.uint8)
    assert prepare_image(grey, 4, 3, 0).shape == (4, 4, 3)


def test_procedural_is_a_pure_function_of_the_index():
    a = ProceduralDataset("shapes", 50, 16, 4, channels=3, seed=1)
    b = ProceduralDataset("shapes", 50, 16, 4, channels=3, seed=1)
    assert np.array_equal(a[17].image, b[17].image) and a[17].label == 1
    assert not np.array_equal(a[17].image, a[18].image)
    blobs = ProceduralDataset("blobs", 10, 8, 3, channels=1)
    assert blobs[2].image.shape == (8, 8, 1) and blobs[2].image.max() > 0


def test_train_data_batches_and_flips(tmp_path):
    cfg = DataConfig(source="npz", path=str(_npz(tmp_path / "d.npz")), resolution=6, pad=1)
    data = TrainData(build_dataset(cfg), cfg)
    x, labels, _ = data.batch([0, 1, 2], torch.tensor([False, True, False]))
    assert x.shape == (3, 1, 8, 8) and x.dtype == torch.float32
    assert labels.tolist() == [0, 1, 2] and x.min() >= -1 and x.max() <= 1
    x2, _, _ = data.batch([1])
    torch.testing.assert_close(x[1], x2[0].flip(-1))
    proc = DataConfig(source="procedural", size=8, resolution=8, num_classes=2, channels=1)
    data = TrainData(build_dataset(proc), proc)
    data.prefetch([3, 4])
    x, labels, _ = data.batch([3, 4])
    assert x.shape == (2, 1, 8, 8) and labels.tolist() == [1, 0]
    data.close()


def test_order_is_deterministic_shardable_and_stateless():
    order = BatchOrder(num_items=10, batch_size=4, seed=3)
    assert order.batches_per_epoch == 2
    epoch0 = np.concatenate([order.global_batch(0), order.global_batch(1)])
    assert len(set(epoch0.tolist())) == 8  # no repeats within an epoch
    assert not np.array_equal(order.global_batch(2), order.global_batch(0))  # new permutation
    again = BatchOrder(num_items=10, batch_size=4, seed=3)
    assert np.array_equal(again.global_batch(5), order.global_batch(5))  # resume = step only
    shards = [order.shard(5, r, 2) for r in range(2)]
    assert np.array_equal(np.concatenate([s[0] for s in shards]), order.global_batch(5))
    assert [s[1] for s in shards] == [0, 2]
    with pytest.raises(DataError, match="fewer than one batch"):
        BatchOrder(num_items=3, batch_size=4, seed=0)
    with pytest.raises(DataError, match="num_items=10"):
        BatchOrder(num_items=11, batch_size=4, seed=3).check_resumable(order.state_dict(3))


def test_the_shared_mnist_archive_loads_through_the_one_setting():
    try:
        path = shared_data_file("mnist-train.npz")
    except FileNotFoundError as err:
        pytest.skip(str(err))
    cfg = DataConfig(source="npz", path="shared:mnist-train.npz", resolution=28, holdout=5000)
    data = TrainData(build_dataset(cfg), cfg)
    assert path.parent == shared_data_dir()
    assert len(data) == 55_000 and data.num_classes == 10 and data.channels == 1
    x, labels, _ = data.batch([0, 1])
    train_idx, _ = heldout_indices(60_000, 5000)
    with np.load(path) as archive:
        expected = archive["labels"][train_idx[:2]].tolist()
    assert x.shape == (2, 1, 28, 28) and labels.tolist() == expected


def test_resume_refuses_changed_data(tmp_path):
    a = NpzDataset(_npz(tmp_path / "a.npz"))
    b = NpzDataset(_npz(tmp_path / "b.npz", labels=np.arange(12) % 2))
    assert a.fingerprint() == NpzDataset(tmp_path / "a.npz").fingerprint() != b.fingerprint()
    state = BatchOrder(12, 4, 0, a.fingerprint()).state_dict(5)
    with pytest.raises(DataError, match="fingerprint"):
        BatchOrder(12, 4, 0, b.fingerprint()).check_resumable(state)
