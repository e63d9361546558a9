"""The MNIST reader: .npz and IDX files at a path the user gives, one clear error for a
path that is absent or not MNIST-shaped."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from tests.zoo import SHARED_DATA
from weightshare.data.mnist import load_mnist, random_shift, read_idx
from weightshare.errors import DataError

MNIST_NPZ = SHARED_DATA / "mnist.npz"


def idx_bytes(a: np.ndarray) -> bytes:
    head = bytes([0, 0, 8, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape)
    return head + a.astype(np.uint8).tobytes()


def fake(n: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(n)
    return g.integers(0, 256, (n, 28, 28), dtype=np.uint8), g.integers(0, 10, n, dtype=np.uint8)


def test_idx_directory_plain_and_gzipped(tmp_path):
    (xtr, ytr), (xte, yte) = fake(6), fake(3)
    for name, a in [("train-images-idx3-ubyte", xtr), ("train-labels-idx1-ubyte", ytr)]:
        (tmp_path / name).write_bytes(idx_bytes(a))
    for name, a in [("t10k-images.idx3-ubyte.gz", xte), ("t10k-labels.idx1-ubyte.gz", yte)]:
        (tmp_path / name).write_bytes(gzip.compress(idx_bytes(a)))
    data = load_mnist(tmp_path)
    assert data.train_images.shape == (6, 1, 28, 28) and data.test_images.shape == (3, 1, 28, 28)
    assert torch.equal(data.train_images[:, 0], torch.from_numpy(xtr).float() / 255)
    assert data.test_labels.tolist() == yte.tolist() and data.test_labels.dtype == torch.int64


def test_npz(tmp_path):
    (xtr, ytr), (xte, yte) = fake(5), fake(2)
    np.savez(tmp_path / "m.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    data = load_mnist(tmp_path / "m.npz")
    assert float(data.train_images.max()) <= 1.0 and data.train_labels.tolist() == ytr.tolist()
    (train_x, _), (val_x, val_y) = data.holdout(2)
    assert train_x.shape[0] == 3 and val_y.tolist() == ytr[3:].tolist()


@pytest.mark.parametrize("make, match", [
    (lambda p: p / "absent.npz", "does not exist"),
    (lambda p: (p / "x.npz").write_text("not a zip") and p / "x.npz", "not a readable .npz"),
    (lambda p: np.savez(p / "y.npz", a=np.zeros(1)) or p / "y.npz", "lacks x_train"),
    (lambda p: np.savez(p / "z.npz", x_train=np.zeros((2, 32, 32), np.uint8), y_train=np.zeros(2),
                        x_test=np.zeros((1, 28, 28), np.uint8), y_test=np.zeros(1, np.int64))
     or p / "z.npz", r"shape \(2, 32, 32\)"),
    (lambda p: np.savez(p / "w.npz", x_train=np.zeros((2, 28, 28), np.uint8),
                        y_train=np.array([0, 12]), x_test=np.zeros((1, 28, 28), np.uint8),
                        y_test=np.zeros(1, np.int64)) or p / "w.npz", "range 0..12"),
    (lambda p: p, "has no train-images-idx3-ubyte"),
])
def test_bad_data_paths_are_one_clear_error(tmp_path, make, match):
    with pytest.raises(DataError, match=match):
        load_mnist(make(tmp_path))


def test_truncated_idx_is_refused(tmp_path):
    (tmp_path / "f").write_bytes(idx_bytes(np.zeros((4, 2, 2), np.uint8))[:-3])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(tmp_path / "f")


def test_random_shift_moves_whole_images():
    x = torch.zeros(64, 1, 28, 28)
    x[:, 0, 10:18, 10:18] = 1.0
    y = random_shift(x, torch.Generator().manual_seed(0))
    assert torch.equal(y.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))  # nothing falls off
    assert len({tuple(torch.nonzero(img[0])[0].tolist()) for img in y}) > 10


@pytest.mark.skipif(not MNIST_NPZ.is_file(), reason=f"MNIST not found at {MNIST_NPZ} (set "
                    "WEIGHTSHARE_DATA to the directory holding mnist.npz)")
def test_the_real_mnist():
    data = load_mnist(MNIST_NPZ)
    assert data.train_images.shape == (60000, 1, 28, 28)
    assert data.test_images.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.test_labels).tolist()[:3] == [980, 1135, 1032]
