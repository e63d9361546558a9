"""What training loops accept from the methods that train with sharing.

* a **regulariser**: ``callable(model) -> scalar tensor``, added to the loss every step
  (a mixture prior that pulls weights to shared values, a sparsity penalty, ...);
* a **step callback**: ``callable(StepInfo) -> bool | None``, called after every
  optimizer step (re-assign codes, re-apply a pruning mask, log); returning ``False``
  stops training.

Example:
    >>> import torch
    >>> l2 = lambda model: 1e-4 * sum(p.pow(2).sum() for p in model.parameters())
    >>> total_loss(torch.tensor(1.0), torch.nn.Linear(1, 1, bias=False), [l2]).item() >= 1.0
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

Regularizer = Callable[[nn.Module], torch.Tensor]


@dataclass
class StepInfo:
    """What a step callback sees: the step just taken, its loss, the model, the seconds,
    the learning rate, and the steps the run will take (None when only time limits it)."""

    step: int
    loss: float
    model: nn.Module
    seconds: float
    lr: float
    total: int | None = None


StepCallback = Callable[[StepInfo], "bool | None"]


def total_loss(loss: torch.Tensor, model: nn.Module,
               regularizers: Sequence[Regularizer] = ()) -> torch.Tensor:
    """``loss`` plus every regulariser's term on ``model``."""
    for reg in regularizers:
        loss = loss + reg(model)
    return loss


def run_callbacks(callbacks: Sequence[StepCallback], info: StepInfo) -> bool:
    """Call every callback; False when one of them asks to stop."""
    keep_going = True
    for callback in callbacks:
        if callback(info) is False:
            keep_going = False
    return keep_going
