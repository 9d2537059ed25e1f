"""Data sets as in-memory uint8 arrays: Fashion-MNIST / MNIST IDX, CIFAR-10 python batches, ImageFolder.

Every loader returns ``ImageSet`` (N, C, H, W uint8 images, int64 labels, class names). Preprocessing
(``Normalization``) is computed from the training images and stored with the checkpoint, so every later
stage (quantize, export, the Pi runtime) turns pixels into tensors exactly as training did.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract import UserError

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
MNIST_CLASSES = [str(d) for d in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049


class DataError(UserError):
    """Bad or missing input data; the message is one sentence a user can act on."""


@dataclass
class ImageSet:
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64
    classes: list[str]

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index], self.classes)


@dataclass(frozen=True)
class Normalization:
    """x = (pixel / 255 - mean[c]) / std[c]; the one preprocessing rule of the whole toolchain."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int
    channels: int

    @classmethod
    def fit(cls, images: np.ndarray) -> "Normalization":
        x = images.astype(np.float64) / 255.0
        mean = x.mean(axis=(0, 2, 3))
        std = x.std(axis=(0, 2, 3))
        return cls(tuple(round(float(m), 6) for m in mean), tuple(round(float(s), 6) for s in std),
                   int(images.shape[-1]), int(images.shape[1]))

    def apply(self, images_u8: np.ndarray) -> np.ndarray:
        """(N, C, H, W) uint8 -> float32 normalised, the model's input."""
        mean = np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
        return ((images_u8.astype(np.float32) / np.float32(255.0)) - mean) / std

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "input_size": self.input_size,
                "channels": self.channels}

    @classmethod
    def from_dict(cls, data: dict) -> "Normalization":
        return cls(tuple(data["mean"]), tuple(data["std"]), int(data["input_size"]), int(data["channels"]))


# --- IDX (MNIST / Fashion-MNIST) ----------------------------------------------------------------------

def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc} (truncated or corrupt file?)") from None


def read_idx(path: str | os.PathLike, expect_magic: int) -> np.ndarray:
    """Parse one IDX file (optionally gzipped) and check its magic number and its length."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 8:
        raise DataError(f"{path} is too short to be an IDX file")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != expect_magic:
        raise DataError(f"{path} has IDX magic number {magic}, expected {expect_magic}")
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    payload = raw[4 + 4 * ndim:]
    expected = int(np.prod(dims))
    if len(payload) != expected:
        raise DataError(f"{path} holds {len(payload)} bytes of data, its header promises {expected}")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims).copy()  # writable, for torch


def _find_idx(directory: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise DataError(f"{directory} has no {stem}(.gz); set DATA_DIR to the directory holding the four "
                    f"Fashion-MNIST/MNIST IDX files")


def load_idx_dataset(directory: str | os.PathLike, split: str, classes: list[str]) -> ImageSet:
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"data directory {directory} does not exist; install Debian's dataset-fashion-mnist "
                        f"or set DATA_DIR to a directory holding the four IDX .gz files")
    prefix = {"train": "train", "test": "t10k"}[split]
    images = read_idx(_find_idx(directory, f"{prefix}-images-idx3-ubyte"), IDX_IMAGES_MAGIC)
    labels = read_idx(_find_idx(directory, f"{prefix}-labels-idx1-ubyte"), IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"{directory}: {len(images)} {split} images but {len(labels)} labels")
    if labels.size and int(labels.max()) >= len(classes):
        raise DataError(f"{directory}: label {int(labels.max())} is out of range for {len(classes)} classes")
    return ImageSet(np.ascontiguousarray(images[:, None]), labels.astype(np.int64), list(classes))


# --- CIFAR-10 python batches -------------------------------------------------------------------------

class _ArrayOnlyUnpickler(pickle.Unpickler):
    """CIFAR-10 ships pickles; allow only what its batches contain (dicts, lists, bytes, numpy arrays),
    so a hostile file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("builtins", "list"), ("builtins", "dict")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"refusing to unpickle {module}.{name}: not a CIFAR-10 batch")


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _ArrayOnlyUnpickler(f, encoding="bytes").load()
    except DataError:
        raise
    except Exception as exc:  # pickle raises many types on a damaged file
        raise DataError(f"cannot read CIFAR-10 batch {path}: {exc}") from None
    try:
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path} is not a CIFAR-10 batch (no b'data'/b'labels')") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(f"{path}: expected (N, 3072) data and N labels, got {data.shape} and {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(directory: str | os.PathLike, split: str) -> ImageSet:
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"CIFAR-10 directory {directory} does not exist")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise DataError(f"{directory} lacks CIFAR-10 python batches {missing}")
    parts = [_load_cifar_batch(directory / n) for n in names]
    return ImageSet(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                    list(CIFAR10_CLASSES))


# --- ImageFolder: root/<class>/<image> --------------------------------------------------------------

def load_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One image file -> (C, size, size) uint8, resized and converted to the model's channel count."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def load_image_folder(root: str | os.PathLike, size: int, channels: int) -> ImageSet:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(f"{root} needs at least two class sub-directories, found {len(class_dirs)}")
    images, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"class directory {class_dir} holds no images")
        for path in files:
            images.append(load_image(path, size, channels))
            labels.append(label)
    return ImageSet(np.stack(images), np.asarray(labels, np.int64), [d.name for d in class_dirs])


# --- one entry point ---------------------------------------------------------------------------------

DATASETS = ("fashion-mnist", "mnist", "cifar10", "folder")


def data_dir_default() -> str:
    return os.environ.get("DATA_DIR", DEFAULT_DATA_DIR)


def load_dataset(name: str, split: str, data_dir: str | None = None, input_size: int | None = None,
                 channels: int | None = None) -> ImageSet:
    """``split`` is "train" or "test". For "folder", ``data_dir`` holds train/ and test/ (or val/)
    sub-trees, and images are resized to ``input_size`` with ``channels`` channels."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    data_dir = data_dir or data_dir_default()
    if not Path(data_dir).is_dir():
        raise DataError(f"data directory {data_dir} does not exist")
    if name == "fashion-mnist":
        return load_idx_dataset(data_dir, split, FASHION_MNIST_CLASSES)
    if name == "mnist":
        return load_idx_dataset(data_dir, split, MNIST_CLASSES)
    if name == "cifar10":
        return load_cifar10(data_dir, split)
    if name == "folder":
        if input_size is None or channels is None:
            raise DataError("an image folder needs input_size and channels")
        root = Path(data_dir)
        candidates = ["train"] if split == "train" else ["test", "val"]
        for sub in candidates:
            if (root / sub).is_dir():
                return load_image_folder(root / sub, input_size, channels)
        raise DataError(f"{root} needs a {' or '.join(candidates)}/ sub-directory of class folders")
    raise DataError(f"unknown data set {name!r}; choose one of {DATASETS}")


def train_val_split(data: ImageSet, val_fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """A stratified-by-shuffle split of the training set; the test set is never used for choices."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"validation fraction must be in (0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(data))
    n_val = max(1, int(round(len(data) * val_fraction)))
    return data.subset(np.sort(order[n_val:])), data.subset(np.sort(order[:n_val]))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz); used by tests and tools."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)



# --- a checkpoint's data identity ----------------------------------------------------------------------
# Every checkpoint records the data it was trained on (``data`` field), so every later stage runs on the same
# data by default and refuses data that does not fit the model (other classes, size or channels) before any
# work starts.

KNOWN_CLASSES = {"fashion-mnist": FASHION_MNIST_CLASSES, "mnist": MNIST_CLASSES, "cifar10": CIFAR10_CLASSES}


def data_files(kind: str, data_dir: str | os.PathLike) -> list[Path]:
    """The files a data set is read from (what the fingerprint covers)."""
    root = Path(data_dir)
    if kind == "folder":
        return sorted(p for sub in ("train", "test", "val") if (root / sub).is_dir()
                      for p in (root / sub).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if kind == "cifar10":
        return sorted(p for p in root.glob("*_batch*") if p.is_file())
    return sorted(p for p in root.glob("*-idx?-ubyte*") if p.is_file())


def fingerprint(kind: str, data_dir: str | os.PathLike) -> dict:
    """sha256 of the data set's file list (relative path and size of each file, not the contents: cheap on
    a large folder, and it changes when files are added, removed, renamed or rewritten at another size)."""
    import hashlib

    root = Path(data_dir)
    files = data_files(kind, root)
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}\t{path.stat().st_size}\n".encode())
    return {"files": len(files), "sha256": digest.hexdigest()}


def data_identity(kind: str, data_dir: str | None, classes: list[str], norm: Normalization) -> dict:
    """What a checkpoint records about its data: kind, directory as given, classes, input size, channels,
    normalisation and a fingerprint of the file list."""
    data_dir = data_dir or data_dir_default()
    return {"kind": kind, "dir": str(data_dir), "classes": list(classes), "input_size": norm.input_size,
            "channels": norm.channels, "normalization": norm.to_dict(),
            "fingerprint": fingerprint(kind, data_dir) if Path(data_dir).is_dir() else None}


def checkpoint_data(payload: dict) -> dict:
    """A checkpoint's data identity; for checkpoints written before it was recorded, what can be told from
    their fields (the kind from meta.dataset or from a well-known class list; no directory)."""
    if isinstance(payload.get("data"), dict):
        return payload["data"]
    norm = payload.get("normalization", {})
    classes = list(payload.get("classes", []))
    kind = payload.get("meta", {}).get("dataset") or next(
        (name for name, known in KNOWN_CLASSES.items() if list(known) == classes), None)
    return {"kind": kind, "dir": None, "classes": classes, "input_size": norm.get("input_size"),
            "channels": norm.get("channels"), "normalization": norm, "fingerprint": None}


def resolve_data(recorded: dict, dataset: str | None, data_dir: str | None, checkpoint: str) -> tuple[str, str]:
    """The data set a stage runs on: the flags where given, else the checkpoint's own data. A checkpoint's
    directory that no longer exists falls back to $DATA_DIR / the default (a clone on another machine)."""
    kind = dataset or recorded.get("kind")
    if kind is None:
        raise DataError(f"{checkpoint} does not record which data set it was trained on; pass --dataset and "
                        f"--data-dir")
    if data_dir:
        return kind, data_dir
    if kind == recorded.get("kind") and recorded.get("dir") and Path(recorded["dir"]).is_dir():
        return kind, recorded["dir"]
    if kind == "folder":
        where = f" ({recorded['dir']} does not exist)" if recorded.get("dir") else ""
        raise DataError(f"{checkpoint} was trained on an image folder{where}: pass --data-dir")
    return kind, data_dir_default()


def check_data_matches(recorded: dict, data: ImageSet, kind: str, data_dir: str, checkpoint: str) -> list[str]:
    """Raise a one-line DataError when ``data`` cannot feed the checkpoint's model (other classes, size or
    channels); return warnings for a data set that fits but is not the one it was trained on."""
    _, channels, height, width = data.images.shape
    want = (recorded.get("channels"), recorded.get("input_size"))
    described = f"{kind} data in {data_dir}"
    if (want != (None, None) and (channels, height) != want) or height != width:
        raise DataError(f"{checkpoint} takes {want[0]}x{want[1]}x{want[1]} images; {described} gives "
                        f"{channels}x{height}x{width} (pass the --dataset / --data-dir it was trained on)")
    classes = list(recorded.get("classes") or [])
    if classes and list(data.classes) != classes:
        diff = "" if len(classes) != len(data.classes) else \
            f"; first difference: {next(f'{a!r} vs {b!r}' for a, b in zip(classes, data.classes) if a != b)}"
        raise DataError(f"{checkpoint} was trained on {len(classes)} classes, {described} has "
                        f"{len(data.classes)}{diff} (pass the --dataset / --data-dir it was trained on)")
    warnings = []
    recorded_print = recorded.get("fingerprint")
    if recorded_print and kind == recorded.get("kind") and Path(data_dir) == Path(recorded.get("dir") or ""):
        now = fingerprint(kind, data_dir)
        if now != recorded_print:
            warnings.append(f"warning: the files in {data_dir} changed since {checkpoint} was trained "
                            f"({recorded_print['files']} files then, {now['files']} now)")
    return warnings


def load_checkpoint_data(payload: dict, checkpoint: str, split: str, dataset: str | None = None,
                         data_dir: str | None = None) -> tuple[ImageSet, str, str]:
    """The ``split`` of the data set a checkpoint was trained on (or the one the flags name), checked to fit
    the model; returns the images, the data set kind and the directory."""
    import sys

    recorded = checkpoint_data(payload)
    kind, data_dir = resolve_data(recorded, dataset, data_dir, checkpoint)
    norm = Normalization.from_dict(payload["normalization"])
    data = load_dataset(kind, split, data_dir, norm.input_size, norm.channels)
    for line in check_data_matches(recorded, data, kind, data_dir, checkpoint):
        print(line, file=sys.stderr)
    return data, kind, data_dir
