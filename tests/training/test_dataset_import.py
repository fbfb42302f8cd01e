"""`diffuse data`: official distributions (IDX, CIFAR-10 binary) and image folders -> npz.

Every source file here is written byte by byte in the test, in the official layout.
"""

import gzip
import io
import pickle
import struct
import tarfile

import numpy as np
import pytest
from PIL import Image

from diffuse.cli import main
from diffuse.config import DataConfig
from diffuse.metrics.evaluate import load_split
from diffuse.training.data import TrainData
from diffuse.training.dataset_import import (
    CIFAR10_CLASSES,
    FASHION_MNIST_CLASSES,
    import_cifar10,
    import_idx,
    import_image_folder,
    read_idx,
    write_npz,
)
from diffuse.training.datasets import DataError, NpzDataset, build_dataset

RNG = np.random.default_rng(7)


def _idx_bytes(array: np.ndarray) -> bytes:
    """IDX: 0x0000, type 0x08 (ubyte), ndim, big-endian uint32 dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _mnist_folder(folder, n=7, side=5, prefix="train", gz=False):
    images = RNG.integers(0, 256, (n, side, side), dtype=np.uint8)
    labels = RNG.integers(0, 10, n, dtype=np.uint8)
    folder.mkdir(exist_ok=True)
    for name, array in (
        (f"{prefix}-images-idx3-ubyte", images),
        (f"{prefix}-labels-idx1-ubyte", labels),
    ):
        raw = _idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return images, labels


def _cifar_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """CIFAR-10 binary records: label byte, then the R, G and B planes, 32x32 each."""
    out = bytearray()
    for image, label in zip(images, labels):
        out.append(int(label))
        out += image.transpose(2, 0, 1).tobytes()  # HWC -> CHW planes
    return bytes(out)


def _cifar_folder(folder, per_batch=3, names=("data_batch_1.bin",)):
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = [], []
    batches = (
        names if names != ("data_batch_1.bin",) else [f"data_batch_{i}.bin" for i in range(1, 6)]
    )
    for name in batches:
        x = RNG.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        y = RNG.integers(0, 10, per_batch, dtype=np.uint8)
        (folder / name).write_bytes(_cifar_bytes(x, y))
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzipped"])
def test_mnist_idx_round_trips_to_the_exact_pixels_and_loads_for_training(tmp_path, gz):
    images, labels = _mnist_folder(tmp_path / "mnist", gz=gz)
    out = tmp_path / "data" / "mnist-train.npz"
    assert main(["data", "mnist", str(tmp_path / "mnist"), "--out", str(out)]) == 0
    with np.load(out, allow_pickle=False) as d:
        assert d["images"].dtype == np.uint8 and d["images"].shape == (7, 5, 5, 1)
        np.testing.assert_array_equal(d["images"][..., 0], images)
        assert d["labels"].dtype == np.int64
        np.testing.assert_array_equal(d["labels"], labels)
        assert [str(c) for c in d["classes"]] == [str(i) for i in range(10)]
    # the training data code reads it as it is
    data = TrainData(
        build_dataset(DataConfig(source="npz", path=str(out), resolution=5)),
        DataConfig(source="npz", path=str(out), resolution=5),
    )
    x, y, _ = data.batch([0, 6])
    assert x.shape == (2, 1, 5, 5)
    np.testing.assert_allclose(x[1, 0].numpy(), images[6] / 127.5 - 1.0, atol=1e-6)
    assert y.tolist() == [labels[0], labels[6]]


def test_fashion_mnist_test_split_and_the_dotted_file_names(tmp_path):
    folder = tmp_path / "fashion"
    images, labels = _mnist_folder(folder, n=4, prefix="t10k")
    for kind in ("images", "labels"):  # the variant names some mirrors use
        idx = "idx3" if kind == "images" else "idx1"
        (folder / f"t10k-{kind}-{idx}-ubyte").rename(folder / f"t10k-{kind}.{idx}-ubyte")
    data = import_idx(folder, FASHION_MNIST_CLASSES, split="test")
    np.testing.assert_array_equal(data.images[..., 0], images)
    assert data.classes[0] == "T-shirt/top" and data.labels.tolist() == labels.tolist()


def test_idx_errors_name_the_file_and_the_problem(tmp_path):
    good = _idx_bytes(np.zeros((3, 4, 4), np.uint8))
    cases = {
        "magic.idx": (b"\x01\x02" + good[2:], r"magic.idx is not an IDX file: magic number 0102"),
        "type.idx": (good[:2] + b"\x0d" + good[3:], r"type.idx: IDX data of type float"),
        "short.idx": (
            good[:-5],
            r"short.idx: truncated: dimensions \[3, 4, 4\] need 48 data bytes, found 43",
        ),
        "long.idx": (good + b"\0", r"long.idx: longer than its header says"),
        "empty.idx": (b"", r"empty.idx is not an IDX file: magic number missing"),
    }
    for name, (raw, pattern) in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(DataError, match=pattern):
            read_idx(tmp_path / name)
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b" + b"junk")
    with pytest.raises(DataError, match=r"bad.gz: damaged gzip"):
        read_idx(tmp_path / "bad.gz")


def test_idx_count_mismatch_and_missing_files(tmp_path):
    folder = tmp_path / "m"
    _mnist_folder(folder, n=5)
    (folder / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(DataError, match=r"holds 5 images but .*train-labels-idx1-ubyte holds 4"):
        import_idx(folder, FASHION_MNIST_CLASSES)
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte\[.gz\].* found in"):
        import_idx(folder, FASHION_MNIST_CLASSES, split="test")
    assert main(["data", "mnist", str(folder), "--out", str(tmp_path / "o.npz")]) == 2


def test_cifar10_binary_folder_and_tarball_round_trip(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    images, labels = _cifar_folder(folder)
    data = import_cifar10(tmp_path)  # the folder that holds cifar-10-batches-bin/
    np.testing.assert_array_equal(data.images, images)  # planes R, G, B -> HWC exactly
    np.testing.assert_array_equal(data.labels, labels)
    assert data.classes == CIFAR10_CLASSES
    # the official tarball, with batches.meta.txt naming the classes
    (folder / "batches.meta.txt").write_text("\n".join(c.upper() for c in CIFAR10_CLASSES) + "\n\n")
    test_x, test_y = _cifar_folder(folder, per_batch=2, names=("test_batch.bin",))
    tarball = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(folder, arcname="cifar-10-batches-bin")
    out = tmp_path / "c.npz"
    assert main(["data", "cifar10", str(tarball), "--split", "test", "--out", str(out)]) == 0
    loaded = NpzDataset(out)
    np.testing.assert_array_equal(loaded.images, test_x)
    assert loaded.labels.tolist() == test_y.tolist() and loaded.class_names[0] == "AIRPLANE"


def test_cifar10_refuses_the_pickled_version_and_bad_batches(tmp_path):
    py = tmp_path / "cifar-10-batches-py"
    py.mkdir()
    (py / "data_batch_1").write_bytes(pickle.dumps({"data": [1]}, protocol=2))
    with pytest.raises(DataError, match=r"pickled Python version.*cifar-10-binary.tar.gz"):
        import_cifar10(py)
    with pytest.raises(DataError, match=r"pickled Python version"):
        import_cifar10(py / "data_batch_1")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(py, arcname="cifar-10-batches-py")
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz is CIFAR-10's pickled"):
        import_cifar10(tmp_path / "cifar-10-python.tar.gz")
    binary = tmp_path / "bin"
    _cifar_folder(binary)
    raw = (binary / "data_batch_3.bin").read_bytes()
    (binary / "data_batch_3.bin").write_bytes(raw[:-10])
    with pytest.raises(
        DataError, match=r"data_batch_3.bin: 9209 bytes is not a whole number of 3073"
    ):
        import_cifar10(binary)
    (binary / "data_batch_3.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"data_batch_3.bin not found"):
        import_cifar10(binary)


def test_image_folder_with_class_subfolders(tmp_path):
    root = tmp_path / "pets"
    pixels = {}
    for cls in ("dog", "cat"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            rgb = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(root / cls / f"{i}.png")
            pixels[(cls, i)] = rgb
    data = import_image_folder(root)
    assert data.classes == ("cat", "dog") and data.labels.tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(data.images[2], pixels[("dog", 0)])
    cropped = import_image_folder(root, resolution=4, channels=1)
    assert cropped.images.shape == (4, 4, 4, 1)


def test_image_folder_grey_unlabelled_and_its_errors(tmp_path):
    root = tmp_path / "digits"
    root.mkdir()
    grey = RNG.integers(0, 256, (3, 5, 5), dtype=np.uint8)
    for i, g in enumerate(grey):
        Image.fromarray(g).save(root / f"{i}.png")
    data = import_image_folder(root)
    np.testing.assert_array_equal(data.images[..., 0], grey)
    assert data.classes == ("digits",) and data.labels.tolist() == [0, 0, 0]
    Image.fromarray(np.zeros((7, 5), np.uint8)).save(root / "3.png")
    with pytest.raises(DataError, match=r"3.png is 5x7 but .*0.png is 5x5; give a resolution"):
        import_image_folder(root)
    (root / "4.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image .*4.png"):
        import_image_folder(root, resolution=5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no image files .* found under .*empty"):
        import_image_folder(tmp_path / "empty")
    assert main(["data", "folder", str(tmp_path / "empty"), "--out", str(tmp_path / "e.npz")]) == 2


def test_output_is_not_overwritten_without_the_flag(tmp_path, capsys):
    _mnist_folder(tmp_path / "m")
    out = tmp_path / "mnist-train.npz"
    out.write_bytes(b"keep me")
    assert main(["data", "mnist", str(tmp_path / "m"), "--out", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(["data", "mnist", str(tmp_path / "m"), "--out", str(out), "--overwrite"]) == 0
    assert len(NpzDataset(out)) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "mnist-train.npz"]  # no temp left
    data = import_idx(tmp_path / "m", [str(i) for i in range(10)])
    with pytest.raises(FileExistsError, match=r"mnist-train.npz exists"):
        write_npz(data, out)
    with pytest.raises(DataError, match=r"must end in .npz"):
        write_npz(data, tmp_path / "x.zip")


def test_default_output_goes_to_the_shared_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIFFUSE_DATA", str(tmp_path / "shared"))
    _mnist_folder(tmp_path / "m", prefix="t10k")
    assert main(["data", "fashion-mnist", str(tmp_path / "m"), "--split", "test"]) == 0
    assert (tmp_path / "shared" / "fashion-mnist-test.npz").is_file()
    assert 'path = "shared:fashion-mnist-test.npz"' in capsys.readouterr().out
    assert main(["data", "folder", str(tmp_path / "m")]) == 2  # folder needs --out


def test_missing_archives_say_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSE_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        build_dataset(DataConfig(source="npz", path="shared:cifar10-train.npz"))
    text = str(err.value)
    assert f"{tmp_path}/cifar10-train.npz not found" in text
    assert f"$DIFFUSE_DATA={tmp_path}" in text
    assert "diffuse data cifar10 cifar-10-binary.tar.gz --out" in text
    with pytest.raises(FileNotFoundError, match=r"DIFFUSE_DATA.*diffuse data mnist MNIST_FOLDER"):
        load_split("mnist")
    with pytest.raises(FileNotFoundError, match=r"x.npz not found .looked in.*diffuse data folder"):
        build_dataset(DataConfig(source="npz", path=str(tmp_path / "x.npz")))
