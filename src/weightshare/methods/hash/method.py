"""hash_: turn the selected weights of a model into hashed weights, in place."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...core.protocol import dense_weight
from ...core.select import Target, select_targets
from ...core.walk import check_targets, share_targets
from .config import HashConfig
from .weight import HashedWeight, budget_for


def hash_(model: nn.Module, ratio: float | None = None, *, config: HashConfig | None = None,
          progress: bool | None = None, **fields: Any) -> nn.Module:
    """Replace the selected weights of ``model`` by hashed weights (HashedNets), in place.

    Each weight of ``n`` values becomes a virtual weight of the same shape drawn by a seeded
    hash from ``round(ratio * n)`` real weights (its bucket); the modules keep their class
    and forward. ``ratio`` and the ``HashConfig`` fields (``seed``, ``init``, ``include``,
    ...) can be given as keywords or as ``config=``. Biases stay dense.

    Example:
        >>> import torch, weightshare as ws
        >>> model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(),
        ...                             torch.nn.Linear(32, 10))
        >>> _ = ws.hash_(model, ratio=1/8, include=("0",))
        >>> model[0].weight.shape, model[0].parametrizations.weight.original.numel()
        (torch.Size([32, 64]), 256)
    """
    values = _fields(config) if config is not None else {}
    values.update(fields)
    if ratio is not None:
        values["ratio"] = ratio
    config = HashConfig.from_dict(values)  # unknown keywords refused with the valid ones
    targets = select_targets(model, config.include, config.exclude, config.min_size,
                             what="hash")
    check_targets(targets)
    # every budget checked before any layer changes
    budgets = [budget_for(dense_weight(t.module).numel(), config.ratio, t.fqn) for t in targets]
    builds = {t.name: (k, b) for k, (t, b) in enumerate(zip(targets, budgets))}

    def build(t: Target) -> tuple[HashedWeight, torch.Tensor]:
        k, budget = builds[t.name]
        return hashed_from(dense_weight(t.module).detach(), budget, config.seed + k,
                           config.sign, config.init, config.cache)

    share_targets(targets, build, progress=progress, desc="hashing")
    return model


def hashed_from(weight: torch.Tensor, budget: int, seed: int, sign: bool = True,
                init: str = "project", cache: bool = True) -> tuple[HashedWeight, torch.Tensor]:
    """The hashed weight of ``weight``'s shape and its bucket, initialised from ``weight``."""
    hw = HashedWeight(tuple(weight.shape), budget, seed, sign, cache)
    if init == "project":
        return hw, hw.project(weight)
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(weight.numel(), generator=gen)[:budget].to(weight.device)
    return hw, weight.reshape(-1)[pick].clone()


def _fields(config: HashConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in HashConfig.__dataclass_fields__}
