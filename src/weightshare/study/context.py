"""What a study runs with: its seeds, its mode, its data, its output folder, its progress.

A study function receives a :class:`Context` and returns a :class:`Result`; ``run``
(``study/runner.py``) builds the first and writes the second.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .stats import Comparison, Verdict, verdict


@dataclass
class Table:
    """A markdown table: ``title``, a header row and rows of already formatted cells."""

    title: str
    header: list[str]
    rows: list[list[str]]

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "header": self.header, "rows": self.rows}

    def markdown(self) -> str:
        right = [i > 0 for i in range(len(self.header))]
        lines = ["| " + " | ".join(self.header) + " |",
                 "| " + " | ".join("---:" if r else "---" for r in right) + " |"]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in self.rows]
        return f"**{self.title}**\n\n" + "\n".join(lines)


@dataclass
class Claim:
    """One claim a study tests: its sentence, the comparisons it rests on, the verdict
    (default: :func:`stats.verdict` of the comparisons)."""

    id: str
    text: str
    comparisons: list[Comparison]
    verdict: Verdict | None = None

    def decided(self) -> Verdict:
        return self.verdict or verdict(self.comparisons)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "claim": self.text, "verdict": self.decided().to_dict(),
                "comparisons": [c.to_dict() for c in self.comparisons]}


@dataclass
class Result:
    """What a study measured.

    ``figures``: every measured number, JSON-ready (per seed and summarized);
    ``claims``: the claims tested, each with the shared-vs-unshared comparisons its
    verdict rests on; ``tables`` and ``plots`` (PNG file names in the output folder) for
    the report; ``notes``: what a reader must know to read the numbers honestly (a twin
    that cannot run, a budget cut); ``setup``: sizes, steps, learning rates.
    """

    figures: dict[str, Any]
    claims: list[Claim]
    tables: list[Table] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    setup: dict[str, Any] = field(default_factory=dict)


class Progress:
    """One bar over a study's whole work (training steps, usually), with an ETA; on stderr
    and only when stderr is a terminal (or when ``show`` forces it)."""

    def __init__(self, desc: str, show: bool | None = None) -> None:
        self.desc = desc
        self.show = sys.stderr.isatty() if show is None else show
        self._bar: Any = None
        self.done = 0

    def start(self, total: int, unit: str = "step") -> None:
        self.close()
        if self.show:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=total, desc=self.desc, unit=unit, file=sys.stderr,
                             dynamic_ncols=True, leave=False)

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(refresh=False, **postfix)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@dataclass
class Context:
    """The settings a study runs under (read-only for the study, except ``progress``)."""

    name: str
    quick: bool
    seeds: tuple[int, ...]
    out: Path  # where plots go (a temporary folder; ``run`` moves it into place)
    data: Path | None
    progress: Progress
    started: float = field(default_factory=time.perf_counter)

    def seed(self, seed: int) -> torch.Generator:
        """Seed torch, numpy and random; returns a generator seeded the same way."""
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        return torch.Generator().manual_seed(seed)

    def pick(self, quick: Any, full: Any) -> Any:
        """``quick`` in a ``--quick`` run, ``full`` otherwise (one line per setting)."""
        return quick if self.quick else full

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    # -- data --------------------------------------------------------------------------

    def mnist_path(self) -> Path:
        """The MNIST file or folder under ``--data`` (``mnist.npz``, or IDX files)."""
        return find_data(self.data, "mnist", self.name)

    def shakespeare_path(self) -> Path:
        """The folder of Shakespeare text files under ``--data``."""
        return find_data(self.data, "shakespeare", self.name)

    # -- plots -------------------------------------------------------------------------

    @contextmanager
    def figure(self, filename: str, ncols: int = 1, width: float = 6.0,
               height: float = 4.2) -> Iterator[Any]:
        """A matplotlib figure saved to ``out/filename`` on exit; yields the axes (a list
        when ``ncols > 1``)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
        try:
            yield list(axes[0]) if ncols > 1 else axes[0][0]
            fig.tight_layout()
            fig.savefig(self.out / filename, dpi=110)
        finally:
            plt.close(fig)


DATA_KINDS = {
    "mnist": "MNIST (an mnist.npz with x_train/y_train/x_test/y_test, or a folder of the "
             "four IDX files)",
    "shakespeare": "a folder of plain-text plays (e.g. shared/data/shakespeare)",
}


def find_data(path: Path | None, kind: str, study: str) -> Path:
    """Resolve ``--data`` for ``kind``: the file/folder itself, or the entry of that name in
    a data folder holding several (``data/mnist.npz``, ``data/shakespeare/``)."""
    need = DATA_KINDS[kind]
    if path is None:
        raise DataError(f"study {study!r} needs {need}: pass --data PATH (a folder holding "
                        "mnist.npz and shakespeare/, or the data itself), or set "
                        "WEIGHTSHARE_DATA")
    path = Path(path)
    if not path.exists():
        raise DataError(f"--data {path} does not exist; pass the folder holding mnist.npz "
                        "and shakespeare/")
    if kind == "mnist":
        candidates = [path / "mnist.npz", path / "mnist", path]
        for c in candidates:
            if c.is_file() and c.suffix == ".npz":
                return c
            if c.is_dir() and any("idx" in f.name for f in c.iterdir()):
                return c
    else:
        for c in (path / "shakespeare", path):
            if c.is_dir() and any(f.suffix == ".txt" for f in c.iterdir()):
                return c
    raise DataError(f"study {study!r} needs {need}; none found at {path}; pass --data with "
                    "the folder that holds it")


def rss_bytes(field_name: str = "VmRSS") -> int:
    """This process's resident memory (``VmRSS``) or its peak (``VmHWM``), from the OS."""
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    raise DataError(f"/proc has no {field_name}; peak memory is measured on Linux only")
