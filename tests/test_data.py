import gzip
import pickle

import numpy as np
import pytest
from PIL import Image

from model.data import DataError, Normalization, load_dataset, load_image_folder, read_idx, train_val_split, write_idx


def test_idx_round_trip_gz_and_raw(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(3, 28, 28)
    for name in ("a-images.gz", "a-images"):
        write_idx(tmp_path / name, images)
        assert np.array_equal(read_idx(tmp_path / name, 2051), images)


def test_fashion_loader_on_small_files(tiny_idx_dir):
    train = load_dataset("fashion-mnist", "train", str(tiny_idx_dir))
    test = load_dataset("fashion-mnist", "test", str(tiny_idx_dir))
    assert train.images.shape == (600, 1, 28, 28) and train.images.dtype == np.uint8
    assert len(test) == 200 and test.classes[0] == "T-shirt/top"


def test_raw_idx_files_work_too(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 28, 28), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1, 2, 3], np.uint8))
    assert len(load_dataset("mnist", "train", str(tmp_path))) == 4


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("fashion-mnist", "train", str(tmp_path / "nope"))


def test_wrong_magic(tiny_idx_dir):
    (tiny_idx_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    write_idx(tiny_idx_dir / "t10k-labels-idx1-ubyte.gz", np.zeros((200, 2), np.uint8))  # 2-d: magic 2050
    with pytest.raises(DataError, match="magic number 2050, expected 2049"):
        load_dataset("fashion-mnist", "test", str(tiny_idx_dir))


def test_truncated_gzip(tiny_idx_dir):
    path = tiny_idx_dir / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset("fashion-mnist", "test", str(tiny_idx_dir))


def test_short_payload(tmp_path):
    raw = gzip.compress(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 100)
    (tmp_path / "x.gz").write_bytes(raw)
    with pytest.raises(DataError, match="header promises"):
        read_idx(tmp_path / "x.gz", 2051)


def test_label_count_mismatch(tiny_idx_dir):
    write_idx(tiny_idx_dir / "t10k-labels-idx1-ubyte.gz", np.zeros(199, np.uint8))
    with pytest.raises(DataError, match="200 test images but 199 labels"):
        load_dataset("fashion-mnist", "test", str(tiny_idx_dir))


def _cifar_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    batch = {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
    with open(path, "wb") as f:
        pickle.dump(batch, f)
    return batch


def test_cifar10_batches(tmp_path):
    first = _cifar_batch(tmp_path / "data_batch_1", 5, 0)
    for i in range(2, 6):
        _cifar_batch(tmp_path / f"data_batch_{i}", 5, i)
    _cifar_batch(tmp_path / "test_batch", 4, 9)
    train = load_dataset("cifar10", "train", str(tmp_path))
    assert train.images.shape == (25, 3, 32, 32)
    assert np.array_equal(train.images[0], first[b"data"][0].reshape(3, 32, 32))
    assert len(load_dataset("cifar10", "test", str(tmp_path))) == 4


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar_loader_refuses_code_in_pickles(tmp_path):
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": []}, f)
    with pytest.raises(DataError, match="refusing to unpickle"):
        load_dataset("cifar10", "test", str(tmp_path))


def _image_tree(root, sizes):
    for cls, (w, h) in sizes.items():
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(root / cls / f"{i}.png")


def test_image_folder_resizes_any_size(tmp_path):
    _image_tree(tmp_path / "train", {"cat": (50, 40), "dog": (17, 33), "eel": (28, 28)})
    data = load_dataset("folder", "train", str(tmp_path), input_size=32, channels=3)
    assert data.images.shape == (9, 3, 32, 32) and data.classes == ["cat", "dog", "eel"]
    gray = load_image_folder(tmp_path / "train", 28, 1)
    assert gray.images.shape == (9, 1, 28, 28)


def test_image_folder_needs_two_classes(tmp_path):
    _image_tree(tmp_path, {"only": (10, 10)})
    with pytest.raises(DataError, match="at least two class"):
        load_image_folder(tmp_path, 28, 1)


def test_image_folder_unreadable_image(tmp_path):
    _image_tree(tmp_path, {"a": (10, 10), "b": (10, 10)})
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image"):
        load_image_folder(tmp_path, 28, 1)


def test_split_and_normalization(tiny_idx_dir):
    data = load_dataset("fashion-mnist", "train", str(tiny_idx_dir))
    train, val = train_val_split(data, 0.25, seed=1)
    assert len(train) == 450 and len(val) == 150
    marked = data.subset(np.arange(len(data)))
    marked.labels = np.arange(len(data))  # label = original index, to see where each image went
    a, b = train_val_split(marked, 0.25, seed=1)
    assert not set(a.labels) & set(b.labels) and len(set(a.labels) | set(b.labels)) == len(data)
    norm = Normalization.fit(train.images)
    x = norm.apply(train.images)
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3
    assert Normalization.from_dict(norm.to_dict()) == norm
