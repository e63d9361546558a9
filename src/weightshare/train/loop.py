"""A small, seeded supervised training loop, and evaluation, for training with sharing.

``fit`` trains any model on ``(inputs, targets)`` tensors: a new seeded order every
epoch, Adam or SGD, a cosine (or linear, constant) learning-rate decay over the run,
optional augmentation, the regularisers and step callbacks of ``train.hooks`` (a mixture
prior, a pruning mask, ...) and a progress bar on stderr when it is a terminal. The same
seed on the same machine gives the same run.

A regulariser that is an ``nn.Module`` with parameters (``SoftSharingPrior``) is trained
with the model: its ``param_groups(lr)`` method, when it has one, gives their learning
rates.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError
from .distill import SCHEDULES, lr_factor
from .hooks import Regularizer, StepCallback, StepInfo, run_callbacks, total_loss

OPTIMIZERS = ("adam", "sgd")
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class FitResult:
    """What a run did: optimizer steps, epochs (fractional when stopped early), seconds."""

    steps: int
    epochs: float
    seconds: float
    loss: float  # mean training loss over the last epoch (or the part run of it)

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / self.steps if self.steps else math.nan


def fit(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], *, epochs: float = 1,
        time_budget: float | None = None, batch_size: int = 100, lr: float = 1e-3,
        optimizer: str = "adam", momentum: float = 0.9, weight_decay: float = 0.0,
        schedule: str = "cosine", decay_start: float = 0.0, seed: int = 0,
        augment: Augment | None = None,
        loss: Loss | None = None, regularizers: Sequence[Regularizer] = (),
        callbacks: Sequence[StepCallback] = (), params: Sequence[nn.Parameter] | None = None,
        progress: bool | None = None, desc: str = "train",
        history: list[dict] | None = None) -> FitResult:
    """Train ``model`` in place on ``data = (inputs, targets)``; returns a :class:`FitResult`.

    ``epochs`` passes over the data (a fraction allowed), or fewer when ``time_budget``
    seconds run out first; the learning rate decays over whichever ends the run.
    ``decay_start``: the fraction of the run the rate stays constant before ``schedule``
    starts its decay over the rest (0: from the start).
    ``loss(outputs, targets)``: cross-entropy by default (outputs (..., classes),
    targets (...) class indices: classifiers and language models alike). ``params``:
    the tensors to train (default: every parameter that requires grad). ``augment(x,
    generator)`` changes each training batch. ``history`` receives one dict per epoch:
    ``{"epoch", "loss", "seconds"}``. The model is left in eval mode.

    Example:
        >>> import torch, weightshare as ws
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(256, 4); y = (x[:, 0] > 0).long()
        >>> model = torch.nn.Linear(4, 2)
        >>> _ = ws.fit(model, (x, y), epochs=20, lr=0.05, progress=False)
        >>> ws.evaluate(model, (x, y))["error"] < 0.05
        True
    """
    x, y = _check_data(data)
    if not (epochs > 0 and math.isfinite(epochs)):
        raise ConfigError(f"epochs must be a positive number, got {epochs!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if not lr > 0:
        raise ConfigError(f"lr must be > 0, got {lr}")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    if not 0 <= decay_start < 1:
        raise ConfigError(f"decay_start must be a fraction in [0, 1), got {decay_start!r}")
    groups = _param_groups(model, params, regularizers, lr)
    opt: torch.optim.Optimizer
    if optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    base = [g["lr"] for g in opt.param_groups]
    loss_fn = loss or _cross_entropy
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    per_epoch = math.ceil(n / batch_size)
    total = max(1, math.ceil(epochs * per_epoch))
    bar = _bar(total, progress, desc)
    start, step, running, seen = time.perf_counter(), 0, 0.0, 0
    model.train()
    try:
        while step < total:
            order = torch.randperm(n, generator=gen)
            running, seen = 0.0, 0
            for i in range(per_epoch):
                elapsed = time.perf_counter() - start
                if step >= total or (time_budget is not None and elapsed >= time_budget):
                    break
                done = max(step / total, elapsed / time_budget if time_budget else 0.0)
                for group, lr0 in zip(opt.param_groups, base):
                    group["lr"] = lr0 * lr_factor(
                        schedule, (done - decay_start) / (1.0 - decay_start))
                idx = order[i * batch_size:(i + 1) * batch_size]
                xb, yb = x[idx], y[idx]
                if augment is not None:
                    xb = augment(xb, gen)
                value = total_loss(loss_fn(model(xb), yb), model, regularizers)
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                step += 1
                loss_value = float(value.detach())
                if not math.isfinite(loss_value):
                    raise DataError(f"the training loss became {loss_value} at step {step}; "
                                    "lower the learning rate or the regularisers' weight")
                running, seen = running + loss_value, seen + 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
                info = StepInfo(step, loss_value, model, time.perf_counter() - start,
                                opt.param_groups[0]["lr"], total)
                if not run_callbacks(callbacks, info):
                    total = step
            if history is not None and seen:
                history.append({"epoch": step / per_epoch, "loss": running / seen,
                                "seconds": time.perf_counter() - start})
            if time_budget is not None and time.perf_counter() - start >= time_budget:
                break
    finally:
        if bar is not None:
            bar.close()
        model.eval()
    return FitResult(step, step / per_epoch, time.perf_counter() - start,
                     running / seen if seen else math.nan)


@torch.no_grad()
def evaluate(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], batch_size: int = 1000,
             loss: Loss | None = None) -> dict[str, float]:
    """``{"loss", "error"}`` of ``model`` on ``data``: mean loss per target, and the fraction
    of targets whose top-scoring class is wrong (classification and language models).

    Example:
        >>> m = torch.nn.Linear(2, 2)
        >>> sorted(evaluate(m, (torch.randn(5, 2), torch.zeros(5, dtype=torch.long))))
        ['error', 'loss']
    """
    x, y = _check_data(data)
    loss_fn = loss or _cross_entropy
    mode = model.training
    model.eval()
    total_loss_, wrong, count = 0.0, 0, 0
    try:
        for i in range(0, x.shape[0], batch_size):
            out, yb = model(x[i:i + batch_size]), y[i:i + batch_size]
            total_loss_ += float(loss_fn(out, yb)) * yb.numel()
            wrong += int((out.argmax(-1) != yb).sum())
            count += yb.numel()
    finally:
        model.train(mode)
    return {"loss": total_loss_ / count, "error": wrong / count}


def _cross_entropy(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))


def _check_data(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data)):
        raise DataError("data must be a pair of tensors (inputs, targets), e.g. "
                        "load_mnist(path).train")
    x, y = data
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise DataError(f"inputs ({x.shape[0]}) and targets ({y.shape[0]}) must be the same "
                        "non-zero number of examples")
    return x, y


def _param_groups(model: nn.Module, params: Sequence[nn.Parameter] | None,
                  regularizers: Sequence[Regularizer], lr: float) -> list[dict]:
    chosen = list(params) if params is not None else [
        p for p in model.parameters() if p.requires_grad]
    groups: list[dict] = [{"params": chosen}] if chosen else []
    seen = {id(p) for p in chosen}
    for reg in regularizers:
        extra = reg.param_groups(lr) if hasattr(reg, "param_groups") else (
            [{"params": list(reg.parameters())}] if isinstance(reg, nn.Module) else [])
        for g in extra:
            ps = [p for p in g["params"] if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in ps)
            if ps:
                groups.append({**g, "params": ps})
    if not groups:
        raise ConfigError("nothing to train: no parameter requires grad; set requires_grad=True "
                          "on what should train")
    return groups


def _bar(total: int, progress: bool | None, desc: str) -> Any:
    show = sys.stderr.isatty() if progress is None else progress
    if not show:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, leave=False)
