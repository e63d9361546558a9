"""Character-level text for small language models: a corpus from the user's text files,
split into training and validation by file (never the same text on both sides), and
fixed-length windows for next-character prediction.

Example:
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> for i, t in enumerate(["abcab" * 20, "cabba" * 20]):
    ...     _ = open(os.path.join(d, f"{i}.txt"), "w").write(t)
    >>> corpus = load_chars(d, validation=0.5)
    >>> corpus.vocab, corpus.train.numel(), corpus.validation.numel()
    ('abc', 100, 100)
    >>> x, y = windows(corpus.train, 8)
    >>> x.shape, bool((x[:, 1:] == y[:, :-1]).all())
    (torch.Size([12, 8]), True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError, DataError


@dataclass(frozen=True)
class CharCorpus:
    """Character ids of the training and validation text, and the characters they index."""

    vocab: str
    train: torch.Tensor  # (n,) int64
    validation: torch.Tensor  # (m,) int64

    def decode(self, ids: torch.Tensor) -> str:
        return "".join(self.vocab[int(i)] for i in ids.reshape(-1))


def load_chars(path: str | os.PathLike, validation: float = 0.1) -> CharCorpus:
    """A text file, or a directory of ``.txt`` files, as character ids.

    Files are sorted by name; the last ``validation`` fraction of them (at least one)
    is the validation text. A single file is split at ``1 - validation`` of its length.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"text path {p} does not exist; pass a .txt file or a directory of them")
    if not 0 < validation < 1:
        raise ConfigError(f"validation must be a fraction in (0, 1), got {validation!r}")
    files = sorted(p.glob("*.txt")) if p.is_dir() else [p]
    if not files:
        raise DataError(f"{p} holds no .txt file; pass a directory of plain-text files")
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    if len(texts) > 1:
        held = max(1, round(len(texts) * validation))
        train_text, val_text = "".join(texts[:-held]), "".join(texts[-held:])
    else:
        cut = int(len(texts[0]) * (1 - validation))
        train_text, val_text = texts[0][:cut], texts[0][cut:]
    if not train_text or not val_text:
        raise DataError(f"{p} has too little text to split into training and validation")
    vocab = "".join(sorted(set(train_text) | set(val_text)))
    index = {c: i for i, c in enumerate(vocab)}

    def ids(text: str) -> torch.Tensor:
        return torch.tensor([index[c] for c in text], dtype=torch.int64)

    return CharCorpus(vocab, ids(train_text), ids(val_text))


def windows(ids: torch.Tensor, length: int, count: int | None = None,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of ``length`` characters and their next characters: ``(x, y)`` (N, length).

    Non-overlapping windows in order, or ``count`` windows at random offsets (seeded by
    ``generator``).
    """
    if length < 1 or ids.numel() <= length:
        raise ConfigError(f"windows of {length} characters need more than {length} characters "
                          f"of text, got {ids.numel()}")
    if count is None:
        starts = torch.arange(0, ids.numel() - length, length)
    else:
        starts = torch.randint(0, ids.numel() - length, (count,), generator=generator)
    offsets = starts[:, None] + torch.arange(length)
    return ids[offsets], ids[offsets + 1]
