"""One measured training run: the project's seeded loop (``train.fit``) plus what the
studies record about it — the loss curve against steps and against training seconds,
held-out evaluations along the way, the time of each step, steps and seconds to a target.

Training seconds exclude the evaluations made along the way (they are timed apart and
subtracted), so a model that is evaluated more often is not charged for it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..train import evaluate, fit
from ..train.hooks import StepInfo
from .context import Context

Data = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Target:
    """Reached when ``metric`` ("loss" or "error") of a held-out evaluation is <= ``value``."""

    metric: str
    value: float

    def reached(self, ev: dict[str, float]) -> bool:
        return ev[self.metric] <= self.value


@dataclass
class Run:
    """What one training run measured (JSON-ready through ``to_dict``)."""

    label: str
    seed: int
    steps: int = 0
    train_seconds: float = 0.0
    step_seconds: list[float] = field(default_factory=list)
    curve: list[dict[str, float]] = field(default_factory=list)  # step, seconds, loss
    evals: list[dict[str, float]] = field(default_factory=list)  # step, seconds, loss, error
    final: dict[str, float] = field(default_factory=dict)
    target_step: int | None = None
    target_seconds: float | None = None

    @property
    def median_step_seconds(self) -> float:
        # the median: robust to the first steps (allocator warm-up) and to other processes
        return statistics.median(self.step_seconds) if self.step_seconds else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "seed": self.seed, "steps": self.steps,
                "train_seconds": self.train_seconds,
                "median_step_seconds": self.median_step_seconds, "curve": self.curve,
                "evals": self.evals, "final": self.final, "target_step": self.target_step,
                "target_seconds": self.target_seconds}


@dataclass
class _State:
    eval_s: float = 0.0  # seconds spent evaluating so far
    last: float = 0.0  # training seconds at the previous step
    bucket: list[float] = field(default_factory=list)  # losses since the last curve point
    stopped: bool = False


def train(ctx: Context, label: str, model: nn.Module, data: Data, *, steps: int, seed: int,
          batch_size: int, lr: float, held_out: Data | None = None, eval_every: int = 0,
          final_eval: Data | None = None, target: Target | None = None,
          stop_at_target: bool = False, curve_points: int = 100, weight_decay: float = 0.0,
          augment: Callable | None = None) -> Run:
    """Train ``model`` for ``steps`` optimizer steps with ``train.fit`` (Adam, cosine decay,
    seeded order) and measure the run; ``held_out`` is evaluated every ``eval_every``
    steps and at the end, ``final_eval`` once at the end (``final``)."""
    run = Run(label, seed)
    n = data[0].shape[0]
    per_epoch = math.ceil(n / batch_size)
    every = max(1, steps // curve_points)
    state = _State()

    def do_eval(step: int, seconds: float) -> None:
        assert held_out is not None
        t0 = time.perf_counter()
        ev = evaluate(model, held_out)
        model.train()
        state.eval_s += time.perf_counter() - t0
        run.evals.append({"step": step, "seconds": seconds, **ev})
        if target is not None and run.target_step is None and target.reached(ev):
            run.target_step, run.target_seconds = step, seconds
            if stop_at_target:
                state.stopped = True

    def on_step(info: StepInfo) -> bool:
        seconds = info.seconds - state.eval_s  # training time only
        run.step_seconds.append(seconds - state.last)
        state.last = seconds
        state.bucket.append(info.loss)
        if info.step % every == 0 or info.step == steps:
            run.curve.append({"step": info.step, "seconds": seconds,
                              "loss": sum(state.bucket) / len(state.bucket)})
            state.bucket = []
        if held_out is not None and eval_every and info.step % eval_every == 0:
            do_eval(info.step, seconds)
        ctx.progress.update(1)
        return info.step < steps and not state.stopped

    ctx.seed(seed)
    result = fit(model, data, epochs=steps / per_epoch, batch_size=batch_size, lr=lr,
                 seed=seed, weight_decay=weight_decay, augment=augment, callbacks=[on_step],
                 progress=False)
    run.steps = result.steps
    run.train_seconds = state.last
    if held_out is not None and (not run.evals or run.evals[-1]["step"] != run.steps):
        do_eval(run.steps, run.train_seconds)
    if final_eval is not None:
        run.final = evaluate(model, final_eval)
    elif run.evals:
        run.final = {k: run.evals[-1][k] for k in ("loss", "error")}
    ctx.progress.update(max(0, steps - run.steps))  # runs stopped at their target
    return run


def at_seconds(run: Run, seconds: float, metric: str = "loss") -> float:
    """``metric`` of the held-out evaluations linearly interpolated at ``seconds`` of
    training (NaN before the first evaluation or past the last)."""
    pts = [(e["seconds"], e[metric]) for e in run.evals]
    if not pts or seconds < pts[0][0] - 1e-9 or seconds > pts[-1][0] + 1e-9:
        return math.nan
    for (s0, v0), (s1, v1) in zip(pts, pts[1:]):
        if s0 <= seconds <= s1:
            return v0 if s1 == s0 else v0 + (v1 - v0) * (seconds - s0) / (s1 - s0)
    return pts[-1][1]


def param_count(model: nn.Module) -> int:
    """Parameters an optimizer sees (a tie counted once)."""
    return sum(p.numel() for p in model.parameters())
