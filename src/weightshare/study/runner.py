"""``run(name, ...)``: one study, end to end, and its files written all at once."""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, SaveError
from .context import Context, Progress, find_data
from .registry import get
from .write import cpu_seconds, to_json, write_files

DEFAULT_SEEDS = 3


def run(name: str, data: str | os.PathLike | None = None, seeds: int = DEFAULT_SEEDS,
        quick: bool = False, out: str | os.PathLike | None = None,
        progress: bool | None = None, threads: int | None = None) -> dict[str, Any]:
    """Run study ``name``; write ``<out>/<name>.json``, ``<name>.md`` and its PNG plots.

    ``data``: a folder holding ``mnist.npz`` and ``shakespeare/`` (or the one dataset
    the study needs); ``seeds``: how many seeds (0, 1, ...) each measurement is repeated
    with; ``quick``: the reduced version (seconds; its report says so); ``out``: the
    output folder (default ``out/study/<name>``); ``threads``: torch threads (default:
    as set). Returns the JSON document. Everything is checked before anything runs, and
    the files appear together at the end (nothing half-written on error).

    Example:
        >>> import tempfile, weightshare as ws
        >>> doc = ws.study.run("params", quick=True, out=tempfile.mkdtemp(), progress=False)
        >>> doc["verdict"]  # claim -> verdict
        {'fewer-params': 'supported', 'smaller-files': 'supported'}
    """
    study = get(name)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds must be a positive number of seeds, got {seeds!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ConfigError(f"threads must be a positive integer, got {threads!r}")
    data_path = Path(data) if data is not None else None
    for kind in study.needs:
        find_data(data_path, kind, study.name)
    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError("studies draw PNG plots with matplotlib, which is not installed: "
                          "pip install 'weightshare[plot]'")
    target = Path(out) if out is not None else Path("out") / "study" / study.name
    if target.exists() and not target.is_dir():
        raise SaveError(f"--out {target} is a file; pass a folder")
    try:
        target.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{study.name}-", dir=target))
    except OSError as e:
        raise SaveError(f"cannot write to --out {target} ({e.strerror}); pass a writable "
                        "folder") from None

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    bar = Progress(f"study {study.name}", progress)
    ctx = Context(study.name, quick, tuple(range(seeds)), tmp, data_path, bar)
    start, cpu_start = time.perf_counter(), cpu_seconds()
    try:
        result = study.fn(ctx)
        seconds = time.perf_counter() - start
        cpu = cpu_seconds() - cpu_start
        bar.close()
        doc = to_json(study.name, study.title, quick, ctx.seeds, result,
                      _command(study.name, data_path, seeds, quick, target), str(target),
                      seconds, cpu)
        for path in write_files(tmp, study.name, doc, result):
            os.replace(path, target / path.name)
    finally:
        bar.close()
        torch.set_num_threads(old_threads)
        shutil.rmtree(tmp, ignore_errors=True)
    return doc


def _command(name: str, data: Path | None, seeds: int, quick: bool, out: Path) -> str:
    """The CLI line that reproduces this run (what the reports print)."""
    parts = ["weightshare", "study", name]
    if data is not None:
        parts += ["--data", str(data)]
    if seeds != DEFAULT_SEEDS:
        parts += ["--seeds", str(seeds)]
    if quick:
        parts.append("--quick")
    parts += ["--out", str(out)]
    if sys.platform == "win32":  # pragma: no cover
        return " ".join(parts)
    return shlex.join(parts)
