"""Load one mutated file and judge the outcome.

``rejected``: a one-line WeightShareError (what must happen to a damaged file), and the
skeleton it was loaded into is as it was. ``accepted``: loaded; the model then runs on
its input (a forger may write any consistent file: accepted is fine unless the mutation
was a flipped data byte, which must be ``undetected``-free). Anything else is a finding:
``crash`` (another exception), ``multiline`` (an error message over several lines),
``touched`` (a rejected load changed the skeleton), ``undetected`` (a flipped data byte
accepted), ``run-crash`` (an accepted model that fails to run).
"""

from __future__ import annotations

import os
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import weightshare as ws
from tests.fuzz.corpus import Case
from weightshare.errors import WeightShareError

FINDINGS = ("crash", "multiline", "touched", "undetected", "run-crash")


@dataclass
class Outcome:
    verdict: str  # accepted | rejected | one of FINDINGS
    mutation: str
    detail: str = ""
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def snapshot(model: nn.Module) -> list:
    """Everything a load could change: names, objects, values, parametrizations."""
    state = model.state_dict(keep_vars=True)
    return [(n, id(t), t.detach().clone()) for n, t in state.items()] + [
        (n, type(m).__name__, sorted(getattr(m, "parametrizations", {}) or {}))
        for n, m in model.named_modules()]


def unchanged(before: list, after: list) -> bool:
    return len(before) == len(after) and all(
        x[:2] == y[:2] and (torch.equal(x[2], y[2]) if isinstance(x[2], torch.Tensor)
                            else x[2] == y[2]) for x, y in zip(before, after))


def _short(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{type(e).__name__}: {str(e)[:200]}{where}"


def load_one(case: Case, data: bytes, mutation: str, runtime: str = "train",
             directory: str | None = None) -> Outcome:
    """Write ``data`` to a file, load it as ``case`` is loaded, judge (see module doc)."""
    fd, name = tempfile.mkstemp(suffix=".safetensors", dir=directory)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    skeleton = case.skeleton() if case.skeleton is not None else None
    before = snapshot(skeleton) if skeleton is not None else None
    try:
        try:
            model = ws.load(name, skeleton, runtime=runtime)
        except WeightShareError as e:
            if "\n" in str(e):
                return Outcome("multiline", mutation, _short(e))
            if skeleton is not None and not unchanged(before, snapshot(skeleton)):
                return Outcome("touched", mutation, _short(e))
            return Outcome("rejected", mutation, str(e)[:400])
        except Exception as e:  # noqa: BLE001 - any other exception is a finding
            return Outcome("crash", mutation, _short(e))
        if mutation == "flip-data":
            return Outcome("undetected", mutation, "a flipped data byte was accepted")
        try:
            inputs = case.inputs()
            with torch.inference_mode():
                model(**inputs) if isinstance(inputs, dict) else model(*inputs)
        except Exception as e:  # noqa: BLE001
            return Outcome("run-crash", mutation, _short(e))
        return Outcome("accepted", mutation)
    finally:
        os.unlink(name)
