"""MNIST from files the user has: an ``.npz`` or the four IDX files. Never downloads.

* ``.npz`` with ``x_train`` (60000, 28, 28), ``y_train`` (60000,), ``x_test``
  (10000, 28, 28), ``y_test`` (10000,) — the layout ``keras.datasets.mnist`` and
  ``../shared/data/mnist.npz`` use; read with ``allow_pickle=False``.
* a directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (LeCun's files, optionally
  gzipped, ``.`` or ``-`` before ``idx``).

Images come back as float32 in [0, 1], shape (N, 1, 28, 28); labels as int64 (N,).

Example:
    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "tiny.npz")
    >>> x = np.zeros((4, 28, 28), np.uint8)
    >>> np.savez(p, x_train=x, y_train=np.arange(4), x_test=x[:2], y_test=np.arange(2))
    >>> data = load_mnist(p)
    >>> data.train_images.shape, data.test_labels.tolist()
    (torch.Size([4, 1, 28, 28]), [0, 1])
"""

from __future__ import annotations

import gzip
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_IDX_FILES = {"train_images": ("train", "images", 3), "train_labels": ("train", "labels", 1),
              "test_images": ("t10k", "images", 3), "test_labels": ("t10k", "labels", 1)}
_HINT = ("pass the path of an mnist.npz (x_train, y_train, x_test, y_test) or of a "
         "directory with the four MNIST IDX files")


@dataclass(frozen=True)
class MNIST:
    """The MNIST train and test sets as tensors: images (N, 1, 28, 28) float32 in [0, 1],
    labels (N,) int64."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor

    @property
    def train(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.train_images, self.train_labels

    @property
    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.test_images, self.test_labels

    def holdout(self, count: int) -> tuple[tuple[torch.Tensor, torch.Tensor],
                                          tuple[torch.Tensor, torch.Tensor]]:
        """(train minus its last ``count`` images, those ``count`` images): a validation
        split for choosing settings without looking at the test set.

        Example:
            >>> import torch
            >>> x = torch.zeros(10, 1, 28, 28)
            >>> d = MNIST(x, torch.arange(10), x[:0], torch.arange(0))
            >>> [t[1].tolist() for t in d.holdout(3)]
            [[0, 1, 2, 3, 4, 5, 6], [7, 8, 9]]
        """
        n = self.train_labels.numel()
        if not 0 < count < n:
            raise ConfigError(f"holdout must be between 1 and {n - 1} images, got {count}")
        x, y = self.train
        return (x[:n - count], y[:n - count]), (x[n - count:], y[n - count:])


def load_mnist(path: str | os.PathLike) -> MNIST:
    """Read MNIST from an ``.npz`` file or a directory of IDX files (see the module docstring).

    Raises DataError, one line naming the problem, when the path is absent or the files are
    not MNIST-shaped (images N x 28 x 28, one label 0..9 per image).
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"MNIST data path {p} does not exist; {_HINT}")
    arrays = _read_idx_dir(p) if p.is_dir() else _read_npz(p)
    out = {}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        out[f"{split}_images"] = _images(images, p, split)
        out[f"{split}_labels"] = _labels(labels, images.shape[0], p, split)
    return MNIST(**out)


def _read_npz(p: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in _NPZ_KEYS if k not in z.files]
            if missing:
                raise DataError(f"{p} lacks {', '.join(missing)} (it has "
                                f"{', '.join(z.files[:6]) or 'nothing'}); {_HINT}")
            raw = {k: z[k] for k in _NPZ_KEYS}
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{p} is not a readable .npz file ({type(e).__name__}); {_HINT}") from None
    return {"train_images": raw["x_train"], "train_labels": raw["y_train"],
            "test_images": raw["x_test"], "test_labels": raw["y_test"]}


def _read_idx_dir(p: Path) -> dict[str, np.ndarray]:
    out = {}
    for key, (split, what, ndim) in _IDX_FILES.items():
        names = [f"{split}-{what}{sep}idx{ndim}-ubyte{gz}" for sep in ("-", ".")
                 for gz in ("", ".gz")]
        found = next((p / n for n in names if (p / n).is_file()), None)
        if found is None:
            raise DataError(f"{p} has no {names[0]} (nor .gz); {_HINT}")
        out[key] = read_idx(found)
    return out


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """One IDX file (LeCun's format: magic 0x0000 0x08 ndim, big-endian sizes, uint8 data),
    gzipped or not, as a uint8 array.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
        >>> _ = open(p, "wb").write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 1, 9]))
        >>> read_idx(p).tolist()
        [7, 1, 9]
    """
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{p} cannot be read ({e}); {_HINT}") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise DataError(f"{p} is not an IDX file of unsigned bytes (bad magic number); {_HINT}")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{p} is truncated (no room for its {ndim} sizes); {_HINT}")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = memoryview(data)[4 + 4 * ndim:]
    if len(body) != int(np.prod(shape)):
        raise DataError(f"{p} holds {len(body)} bytes of data but its header says {shape}; the "
                        "file is truncated or corrupt")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape).copy()


def _images(a: np.ndarray, p: Path, split: str) -> torch.Tensor:
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3 or a.shape[1:] != (28, 28) or a.shape[0] == 0:
        raise DataError(f"{p}: {split} images have shape {a.shape}, MNIST's are (N, 28, 28); "
                        f"{_HINT}")
    if a.dtype == np.uint8:
        x = torch.from_numpy(np.ascontiguousarray(a)).float().div_(255.0)
    elif np.issubdtype(a.dtype, np.floating) and np.isfinite(a).all():
        x = torch.from_numpy(a.astype(np.float32))
        if float(x.max()) > 1.0:  # 0..255 stored as floats
            x.div_(255.0)
    else:
        raise DataError(f"{p}: {split} images are {a.dtype}, expected uint8 pixels (or finite "
                        f"floats); {_HINT}")
    return x.unsqueeze(1)


def _labels(a: np.ndarray, count: int, p: Path, split: str) -> torch.Tensor:
    if a.shape != (count,) or not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"{p}: {split} labels have shape {a.shape} and dtype {a.dtype}, expected "
                        f"({count},) integers, one per image; {_HINT}")
    if count and (int(a.min()) < 0 or int(a.max()) > 9):
        raise DataError(f"{p}: {split} labels range {int(a.min())}..{int(a.max())}, MNIST's are "
                        f"0..9; {_HINT}")
    return torch.from_numpy(a.astype(np.int64))


def random_shift(images: torch.Tensor, generator: torch.Generator, pixels: int = 2
                 ) -> torch.Tensor:
    """Each image moved by a random whole number of pixels, up to ``pixels`` in each
    direction, zeros shifted in: the standard cheap MNIST augmentation.

    Example:
        >>> x = torch.zeros(1, 1, 28, 28); x[0, 0, 14, 14] = 1
        >>> y = random_shift(x, torch.Generator().manual_seed(0))
        >>> y.sum().item(), y.shape
        (1.0, torch.Size([1, 1, 28, 28]))
    """
    b, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pixels,) * 4)
    dy, dx = torch.randint(0, 2 * pixels + 1, (2, b), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(b, c, h, w + 2 * pixels)
    cropped = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(b, c, h, w)
    return cropped.gather(3, cols)
