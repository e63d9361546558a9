"""Gradual magnitude pruning during training (Zhu & Gupta 2017), as a step callback.

One-shot pruning to high sparsity loses accuracy that retraining struggles to win back;
pruning a little at a time while training lets the network adapt. ``GradualPruning``
raises the sparsity of the selected weights from 0 to the target along a cubic curve
between two points of the run, re-ranking the weights by magnitude every ``every``
steps, and keeps the pruned weights at exactly zero after every optimizer step (the
mask). ``finish()`` then turns them into pruned weights (``prune_``), whose files store
only the survivors.

Example:
    >>> import torch, weightshare as ws
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(16, 2))
    >>> x = torch.randn(64, 16); y = (x[:, 0] > 0).long()
    >>> pruning = GradualPruning(model, 0.75, every=1)
    >>> _ = ws.fit(model, (x, y), epochs=10, batch_size=16, callbacks=[pruning], progress=False)
    >>> _ = pruning.finish()
    >>> int((model[0].weight == 0).sum())
    24
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ...core.protocol import dense_weight
from ...core.select import select_targets
from ...errors import ConfigError
from ...train.hooks import StepInfo
from .config import PruneConfig
from .method import prune_


class GradualPruning:
    """A step callback for ``train.fit`` that prunes the selected weights gradually.

    ``sparsity``: one fraction, or ``{pattern: fraction}`` per layer (as ``PruneConfig``).
    ``begin`` / ``end``: fractions of the run (``StepInfo.total`` steps) where pruning
    starts and reaches the target. ``scope="global"`` ranks all selected weights together.
    Only plain (dense) weights can be pruned this way.
    """

    def __init__(self, model: nn.Module, sparsity: float | Mapping[str, float], *,
                 begin: float = 0.0, end: float = 0.7, every: int = 50, scope: str = "layer",
                 include: Sequence[str] = (), exclude: Sequence[str] = (),
                 min_size: int = 0) -> None:
        self.config = PruneConfig(sparsity=sparsity, scope=scope,  # type: ignore[arg-type]
                                  include=tuple(include), exclude=tuple(exclude),
                                  min_size=min_size)
        if not 0 <= begin < end <= 1:
            raise ConfigError(f"need 0 <= begin < end <= 1, got begin={begin}, end={end}")
        if every < 1:
            raise ConfigError(f"every must be >= 1 step, got {every}")
        targets = select_targets(model, include, exclude, min_size, what="prune")
        self.model, self.begin, self.end, self.every = model, begin, end, every
        self.names = [t.name for t in targets if self.config.rate(t.name) is not None or
                      scope == "global"]
        self.masks: dict[str, torch.Tensor] = {}
        self.fraction = 0.0  # of the final sparsity reached so far

    def _weights(self) -> dict[str, torch.Tensor]:
        return {n: dense_weight(self.model.get_submodule(n) if n else self.model)
                for n in self.names}

    def progress(self, step: int, total: int) -> float:
        """Fraction of the target sparsity due after ``step`` of ``total`` steps (cubic)."""
        t = (step / max(total, 1) - self.begin) / (self.end - self.begin)
        t = min(max(t, 0.0), 1.0)
        return 1.0 - (1.0 - t) ** 3

    @torch.no_grad()
    def update_masks(self, fraction: float) -> None:
        """Re-rank by magnitude and prune ``fraction`` of each layer's target sparsity."""
        weights = self._weights()
        self.fraction = fraction
        if self.config.scope == "global":
            mags = torch.cat([w.detach().abs().reshape(-1) for w in weights.values()])
            drop = int(round(mags.numel() * float(self.config.sparsity) * fraction))  # type: ignore[arg-type]
            cut = mags.kthvalue(drop).values if drop else mags.new_tensor(-1.0)
            self.masks = {n: w.detach().abs() > cut for n, w in weights.items()}
            return
        for n, w in weights.items():
            rate = self.config.rate(n) or 0.0
            drop = min(int(round(w.numel() * rate * fraction)), w.numel() - 1)
            mask = torch.ones(w.numel(), dtype=torch.bool, device=w.device)
            if drop:
                mask[w.detach().abs().reshape(-1).topk(drop, largest=False).indices] = False
            self.masks[n] = mask.reshape(w.shape)

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights (after every optimizer step)."""
        for n, w in self._weights().items():
            if n in self.masks:
                w.mul_(self.masks[n])

    def __call__(self, info: StepInfo) -> None:
        total = info.total or info.step
        if info.step % self.every == 0 or info.step == total:
            self.update_masks(self.progress(info.step, total))
        self.apply()

    def finish(self) -> nn.Module:
        """Prune to the full target now and make the pruned weights ``SparseWeight``s
        (values + positions); returns the model."""
        self.update_masks(1.0)
        self.apply()
        rates = {f"^{re.escape(n)}$": 1.0 - float(m.float().mean()) for n, m in
                 self.masks.items()}
        return prune_(self.model, rates, include=self.config.include,
                      exclude=self.config.exclude, min_size=self.config.min_size)
