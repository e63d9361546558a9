"""Character-level language-model data from a folder of text files, split by file.

Splitting by file (for Shakespeare: by play) keeps validation text the model has never
seen, not just unseen windows of plays it trained on: a character model memorises names
and phrases of a play fast, and a split inside plays would reward that.

Characters seen fewer than ``min_count`` times in the training files share id 0
("unknown"), as do validation characters never seen in training.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for i, t in enumerate(["to be or not to be", "that is the question", "whether tis"]):
    ...     _ = (d / f"{i}.txt").write_text(t)
    >>> c = load_chars(d, valid_files=["1.txt"], min_count=1)
    >>> c.valid_files, c.decode(c.encode("to be"))
    (('1.txt',), 'to be')
    >>> x, y = c.windows("train", 4)
    >>> x.shape, bool((x[0, 1:] == y[0, :-1]).all())
    (torch.Size([7, 4]), True)
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError

UNKNOWN = "\x00"


@dataclass(frozen=True)
class CharCorpus:
    """Train and validation text as id tensors (int64), and the vocabulary.

    ``vocab[i]`` is the character of id ``i``; id 0 is "unknown".
    """

    vocab: str
    train: torch.Tensor  # (n_train,) int64
    valid: torch.Tensor  # (n_valid,) int64
    train_files: tuple[str, ...]
    valid_files: tuple[str, ...]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> torch.Tensor:
        # one table lookup over the code points (a dict per character takes seconds on a
        # few MB of text)
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        vocab = np.frombuffer(self.vocab.encode("utf-32-le"), dtype=np.uint32)
        top = int(max(codes.max(initial=0), vocab.max(initial=0))) + 1
        table = np.zeros(top, dtype=np.int64)
        table[vocab] = np.arange(len(vocab))
        return torch.from_numpy(table[codes])

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def windows(self, split: str, length: int, count: int | None = None,
                offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Non-overlapping windows of ``length`` characters: inputs (N, length) and their
        next characters (N, length), from ``offset`` on; ``count`` evenly spaced windows
        when given (all otherwise)."""
        ids = {"train": self.train, "valid": self.valid}.get(split)
        if ids is None:
            raise ConfigError(f"split must be 'train' or 'valid', got {split!r}")
        if length < 1:
            raise ConfigError(f"window length must be >= 1, got {length}")
        n = (ids.numel() - 1 - offset) // length
        if n < 1:
            raise DataError(f"the {split} text ({ids.numel()} characters) is shorter than one "
                            f"window of {length}; use shorter windows or more text")
        starts = torch.arange(n) * length + offset
        if count is not None and count < n:
            starts = starts[torch.linspace(0, n - 1, count).long()]
        pos = starts[:, None] + torch.arange(length)[None, :]
        return ids[pos], ids[pos + 1]


def load_chars(path: str | os.PathLike, valid_files: Sequence[str] | None = None,
               valid_every: int = 8, min_count: int = 10) -> CharCorpus:
    """Read every ``*.txt`` file of folder ``path``; validation = ``valid_files`` (names)
    or, by default, every ``valid_every``-th file in name order (the last of each group of
    ``valid_every``); training = the rest."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder of text files; pass e.g. "
                        "shared/data/shakespeare")
    files = sorted(f for f in folder.iterdir() if f.suffix == ".txt" and f.is_file())
    if len(files) < 2:
        raise DataError(f"{folder} holds {len(files)} .txt file(s); a split by file needs >= 2")
    names = [f.name for f in files]
    if valid_files is None:
        if valid_every < 2:
            raise ConfigError(f"valid_every must be >= 2, got {valid_every}")
        chosen = set(names[valid_every - 1::valid_every]) or {names[-1]}
    else:
        chosen = set(valid_files)
        unknown = sorted(chosen - set(names))
        if unknown:
            raise DataError(f"validation file(s) {unknown} not in {folder}")
        if chosen == set(names):
            raise DataError("every file is a validation file; leave some for training")
    texts = {f.name: _read(f) for f in files}
    train_text = "\n\n".join(texts[n] for n in names if n not in chosen)
    valid_text = "\n\n".join(texts[n] for n in names if n in chosen)
    counts = Counter(train_text)
    vocab = UNKNOWN + "".join(sorted(ch for ch, k in counts.items()
                                     if k >= min_count and ch != UNKNOWN))
    corpus = CharCorpus(vocab, torch.empty(0, dtype=torch.long),
                        torch.empty(0, dtype=torch.long),
                        tuple(n for n in names if n not in chosen),
                        tuple(n for n in names if n in chosen))
    return CharCorpus(vocab, corpus.encode(train_text), corpus.encode(valid_text),
                      corpus.train_files, corpus.valid_files)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; convert it or leave it out") from None
