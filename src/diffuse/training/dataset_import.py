"""Convert the official dataset distributions into the npz archives the recipes read.

The layout written (and read by `diffuse.training.datasets.NpzDataset` and the evaluator):

    images   uint8  [N, H, W, C]  pixels 0..255, channels last (C = 1 or 3)
    labels   int64  [N]           class index into `classes`
    classes  str    [K]           class names, index = label

Sources, all read from local files (nothing is downloaded here):

- MNIST and Fashion-MNIST: the IDX files as distributed (`train-images-idx3-ubyte`,
  `train-labels-idx1-ubyte`, `t10k-...` for the test split), gzipped or not. IDX format
  (LeCun et al., the MNIST page): two zero bytes, a type code (0x08: unsigned byte), the number
  of dimensions, then each dimension as a big-endian uint32, then the data, row-major.
- CIFAR-10: the *binary* version (`cifar-10-binary.tar.gz` or its extracted
  `cifar-10-batches-bin/` folder): `data_batch_1.bin` .. `data_batch_5.bin` and `test_batch.bin`,
  each a sequence of 3073-byte records (1 label byte, then 1024 red, 1024 green, 1024 blue
  bytes of a 32x32 image, row-major). The pickled "python version" is refused: unpickling runs
  code from the file.
- A folder of images: one subfolder per class gives labels and class names (sorted), else the
  images are one class named after the folder.

Every reader checks what it reads and raises `DataError` naming the file and the problem.
"""

from __future__ import annotations

import gzip
import io
import logging
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from diffuse.io import atomic_write_bytes
from diffuse.training.data import prepare_image
from diffuse.training.datasets import DataError, folder_labels, image_files

logger = logging.getLogger(__name__)

__all__ = [
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "ImportedData",
    "import_cifar10",
    "import_idx",
    "import_image_folder",
    "read_idx",
    "write_npz",
]

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

SPLITS = ("train", "test")
_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UBYTE = 0x08
_IDX_TYPES = {0x08: "ubyte", 0x09: "byte", 0x0B: "short", 0x0C: "int", 0x0D: "float", 0x0E: "dbl"}
_CIFAR_SIDE = 32
_CIFAR_RECORD = 1 + 3 * _CIFAR_SIDE * _CIFAR_SIDE  # label byte + R, G, B planes


@dataclass(frozen=True)
class ImportedData:
    """A converted dataset: uint8 images [N, H, W, C], int64 labels [N], class names [K]."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or n == 0:
            raise DataError(
                f"images must be a non-empty uint8 [N, H, W, C] array, got "
                f"{self.images.dtype} {list(self.images.shape)}"
            )
        if self.labels.shape != (n,):
            raise DataError(f"{list(self.labels.shape)} labels for {n} images")
        if self.labels.min() < 0 or self.labels.max() >= len(self.classes):
            raise DataError(
                f"labels span {int(self.labels.min())}..{int(self.labels.max())} but there "
                f"are {len(self.classes)} classes"
            )


# --------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST (IDX)
# --------------------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: damaged gzip data ({err})") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (MNIST's format), gzipped or not.

    Args:
        path: the file, e.g. train-images-idx3-ubyte(.gz).
    Returns:
        uint8 array with the file's dimensions ([N, 28, 28] for images, [N] for labels).
    Raises:
        FileNotFoundError: the file does not exist.
        DataError: wrong magic number, unsupported type, truncated or over-long data.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"{path} is not an IDX file: magic number {raw[:4].hex() or 'missing'} does not start "
            "with two zero bytes (expected e.g. 00000803 for images, 00000801 for labels)"
        )
    code, ndim = raw[2], raw[3]
    if code != _IDX_UBYTE:
        name = _IDX_TYPES.get(code, f"unknown code 0x{code:02x}")
        raise DataError(f"{path}: IDX data of type {name}; only unsigned bytes (0x08) are read")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: IDX header for {ndim} dimensions is truncated or empty")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    actual = len(raw) - header
    if actual != expected:
        kind = "truncated" if actual < expected else "longer than its header says"
        raise DataError(
            f"{path}: {kind}: dimensions {list(shape)} need {expected} data bytes, found {actual}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _find(folder: Path, stems: Sequence[str]) -> Path:
    """The first of `stems` (with or without .gz) present in `folder`."""
    for stem in stems:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    looked = ", ".join(f"{s}[.gz]" for s in stems)
    raise FileNotFoundError(f"none of {looked} found in {folder}")


def import_idx(source: str | Path, classes: Sequence[str], split: str = "train") -> ImportedData:
    """Read MNIST-style IDX files (MNIST, Fashion-MNIST) from a folder.

    Args:
        source: folder holding `train-images-idx3-ubyte` and `train-labels-idx1-ubyte` (or
            `t10k-...` for the test split), each optionally gzipped; the variant names with a
            dot (`train-images.idx3-ubyte`) are accepted too.
        classes: class names, index = label (e.g. `MNIST_CLASSES`).
        split: "train" or "test".
    Returns:
        The images as uint8 [N, H, W, 1], labels int64 [N] and the class names.
    Raises:
        FileNotFoundError: the folder or a file is missing.
        DataError: a file is malformed, or the image and label counts differ.
    """
    folder = Path(source)
    if split not in SPLITS:
        raise DataError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder (expected the folder of IDX files)")
    prefix = "train" if split == "train" else "t10k"
    images_path = _find(folder, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"])
    labels_path = _find(folder, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"])
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(f"{images_path}: expected 3 dimensions [N, H, W], got {list(images.shape)}")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: expected 1 dimension [N], got {list(labels.shape)}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    if len(labels) and int(labels.max()) >= len(classes):
        raise DataError(f"{labels_path}: label {int(labels.max())} >= {len(classes)} classes")
    return ImportedData(images[..., None], labels.astype(np.int64), tuple(classes))


# --------------------------------------------------------------------------------------------
# CIFAR-10 (binary version)
# --------------------------------------------------------------------------------------------

_PICKLED_HINT = (
    "is CIFAR-10's pickled Python version, which is never read (unpickling runs code from the "
    "file); download the binary version, cifar-10-binary.tar.gz, from "
    "https://www.cs.toronto.edu/~kriz/cifar.html"
)


def _cifar_names(split: str) -> list[str]:
    return [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]


def _cifar_members(source: Path, split: str) -> tuple[list[tuple[str, bytes]], bytes | None]:
    """(name, bytes) of the split's batch files and batches.meta.txt (None if absent)."""
    names = _cifar_names(split)
    if source.is_dir():
        folder = source
        if not (folder / names[0]).is_file() and (source / "cifar-10-batches-bin").is_dir():
            folder = source / "cifar-10-batches-bin"
        if (folder / "data_batch_1").is_file() or (source / "cifar-10-batches-py").is_dir():
            raise DataError(f"{source} {_PICKLED_HINT}")
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{', '.join(missing)} not found in {folder}")
        meta = folder / "batches.meta.txt"
        files = [(str(folder / n), (folder / n).read_bytes()) for n in names]
        return files, meta.read_bytes() if meta.is_file() else None
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist")
    try:
        with tarfile.open(source, "r:*") as archive:
            members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
            if any("cifar-10-batches-py" in m.name for m in archive.getmembers()):
                raise DataError(f"{source} {_PICKLED_HINT}")
            missing = [n for n in names if n not in members]
            if missing:
                raise DataError(f"{source} lacks {', '.join(missing)} (CIFAR-10 binary version)")

            def read(name: str) -> bytes:
                handle = archive.extractfile(members[name])
                assert handle is not None  # members holds regular files only
                return handle.read()

            files = [(f"{source}:{n}", read(n)) for n in names]
            meta = read("batches.meta.txt") if "batches.meta.txt" in members else None
    except tarfile.TarError as err:
        raise DataError(f"{source} is not a readable tar archive ({err})") from None
    return files, meta


def import_cifar10(source: str | Path, split: str = "train") -> ImportedData:
    """Read CIFAR-10's binary version.

    Args:
        source: `cifar-10-binary.tar.gz`, the extracted `cifar-10-batches-bin/` folder, or the
            folder that holds it.
        split: "train" (data_batch_1..5.bin) or "test" (test_batch.bin).
    Returns:
        The images as uint8 [N, 32, 32, 3], labels int64 [N] and the class names (from
        batches.meta.txt when present, else the standard order).
    Raises:
        FileNotFoundError: the source or a batch file is missing.
        DataError: the pickled version, a batch whose size is not a whole number of 3073-byte
            records, or a label outside 0..9.
    """
    source = Path(source)
    if split not in SPLITS:
        raise DataError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    if source.is_file():
        with open(source, "rb") as handle:
            if handle.read(1) == b"\x80":  # the PROTO opcode that starts a pickle (protocol 2+)
                raise DataError(f"{source} {_PICKLED_HINT}")
    files, meta = _cifar_members(source, split)
    images, labels = [], []
    for name, raw in files:
        if not raw or len(raw) % _CIFAR_RECORD:
            raise DataError(
                f"{name}: {len(raw)} bytes is not a whole number of {_CIFAR_RECORD}-byte records "
                "(truncated, or not a CIFAR-10 binary batch)"
            )
        records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
        planes = records[:, 1:].reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE)  # [n, C, H, W]
        images.append(planes.transpose(0, 2, 3, 1))  # [n, H, W, C]
        label = records[:, 0].astype(np.int64)
        if int(label.max()) >= len(CIFAR10_CLASSES):
            raise DataError(f"{name}: label {int(label.max())} outside 0..9")
        labels.append(label)
    classes = CIFAR10_CLASSES
    if meta is not None:
        names = [line.strip() for line in meta.decode("utf-8").splitlines() if line.strip()]
        if len(names) != len(CIFAR10_CLASSES):
            raise DataError(f"batches.meta.txt names {len(names)} classes, expected 10: {names}")
        classes = tuple(names)
    return ImportedData(
        np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), classes
    )


# --------------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------------

_GRAY_MODES = ("1", "L", "I", "I;16", "F")


def import_image_folder(source: str | Path, resolution: int = 0, channels: int = 0) -> ImportedData:
    """Read every image under a folder (png, jpg, jpeg, webp; recursively, sorted).

    Labels come from the first-level subfolders (sorted names = classes) when every image lies
    in one; otherwise all images are one class named after the folder.

    Args:
        source: the folder.
        resolution: resize the shorter side to this and centre-crop a square (0: keep the
            size, which must then be the same for every image).
        channels: 1 (grey) or 3 (RGB); 0 chooses 1 when every image is greyscale, else 3.
    Returns:
        The images as uint8 [N, H, W, C], labels int64 [N] and the class names.
    Raises:
        FileNotFoundError: the folder does not exist.
        DataError: no images, an unreadable image (named), or sizes that differ without
            `resolution`.
    """
    root = Path(source)
    if channels not in (0, 1, 3):
        raise DataError(f"channels = {channels} must be 0, 1 or 3")
    if resolution < 0:
        raise DataError(f"resolution = {resolution} must be >= 0")
    files = image_files(root)
    decoded: list[Image.Image] = []
    for path in files:
        try:
            with Image.open(path) as im:
                im.load()
                decoded.append(ImageOps.exif_transpose(im))
        except (OSError, ValueError, SyntaxError, UnidentifiedImageError) as err:
            raise DataError(f"cannot read image {path}: {err}") from None
    if channels == 0:
        channels = 1 if all(im.mode in _GRAY_MODES for im in decoded) else 3
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    first_size = decoded[0].size
    for path, im in zip(files, decoded):
        pixels = np.asarray(im.convert(mode))
        pixels = pixels[..., None] if pixels.ndim == 2 else pixels  # [H, W, C]
        if resolution:
            pixels = prepare_image(pixels, resolution, channels, 0)
        elif im.size != first_size:
            raise DataError(
                f"{path} is {im.size[0]}x{im.size[1]} but {files[0]} is "
                f"{first_size[0]}x{first_size[1]}; give a resolution to resize every image"
            )
        arrays.append(pixels)
    labels, classes = folder_labels(root, files)
    if not classes:
        labels, classes = [0] * len(files), [root.resolve().name or "images"]
    return ImportedData(np.stack(arrays), np.asarray(labels, dtype=np.int64), tuple(classes))


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_npz(data: ImportedData, out: str | Path, overwrite: bool = False) -> Path:
    """Write `data` as a compressed npz archive (images, labels, classes), atomically.

    Args:
        data: the converted dataset.
        out: the archive to write (".npz" is required, so numpy does not append it).
        overwrite: replace an existing file.
    Returns:
        The path written.
    Raises:
        FileExistsError: `out` exists and `overwrite` is False.
        DataError: `out` does not end in .npz.
    """
    out = Path(out)
    if out.suffix != ".npz":
        raise DataError(f"output {out} must end in .npz")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    buffer = io.BytesIO()
    classes = np.array(data.classes, dtype=np.str_)
    np.savez_compressed(buffer, images=data.images, labels=data.labels, classes=classes)
    atomic_write_bytes(out, buffer.getvalue())
    logger.info("wrote %s: %d images %s, %d classes", out, len(data.images), data.images.shape)
    return out
