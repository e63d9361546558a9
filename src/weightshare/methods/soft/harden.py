"""HardenZero: the zero component's claims become exact zeros gradually, during training.

Soft weight sharing leaves the weights the zero component claims small but not zero
until ``soft_to_codebook_`` snaps them. Where the data pull on a weight is as strong as
the prior's (the few weights of an output layer; layers that trade scale with their
neighbours through ReLU and max-pooling) "small" still carries signal, and in minutes of
training rather than the paper's hundreds of epochs the snap then costs tens of points
of error. ``HardenZero`` closes that gap the way gradual pruning does (Zhu & Gupta
2017): more and more of the weights whose most responsible component is the zero one
are set to exactly 0 and kept there (masked after every step), so the network learns
to do without them while it still trains, and the final snap only moves the surviving
weights onto their means. Which weights become zero, and how many, is the prior's
choice; only the pace is the schedule's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import ConfigError
from .prior import SoftSharingPrior


class HardenZero:
    """A step callback for ``train.fit``: weights claimed by ``prior``'s zero component
    become exactly 0 and stay 0, gradually.

    At every ``every``-th step the fraction ``1 - (1 - t / ramp)**3`` (Zhu & Gupta's cubic
    schedule, t the fraction of the run done) of the weights the zero component claims
    now is held at zero: the ones it claims most surely (largest log-odds of the zero
    component against the best other), across all covered layers; after ``ramp`` of
    the run, all of them. Held weights stay zero (a weight at 0 is always claimed).

    Example:
        >>> import torch
        >>> from weightshare.train.hooks import StepInfo
        >>> m = torch.nn.Linear(50, 50)
        >>> prior = SoftSharingPrior(m, components=3, zero_std=0.05)
        >>> harden = HardenZero(m, prior, every=1)
        >>> harden(StepInfo(10, 0.0, m, 0.0, 1e-3, total=10))
        >>> bool((m.weight == 0).any()), harden.sparsity() > 0
        (True, True)
    """

    def __init__(self, model: nn.Module, prior: SoftSharingPrior, every: int = 50,
                 ramp: float = 0.7) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"every must be a positive integer, got {every!r}")
        if not 0 < ramp <= 1:
            raise ConfigError(f"ramp must be a fraction in (0, 1], got {ramp!r}")
        self.model, self.prior, self.every, self.ramp = model, prior, every, float(ramp)
        self.masks: list[torch.Tensor] | None = None  # True: still free

    @torch.no_grad()
    def update(self, fraction: float = 1.0) -> None:
        """Hold at zero the ``fraction`` of the currently claimed weights that the zero
        component claims most surely (and every weight held before)."""
        seen = self.prior.seen_weights(self.model)
        if self.masks is None:
            self.masks = [torch.ones_like(w, dtype=torch.bool) for w in seen]
        flat = torch.cat([w.reshape(-1) for w in seen])
        margin = torch.cat([self._margin(chunk) for chunk in flat.split(1 << 18)])
        claimed = int((margin > 0).sum())
        count = min(claimed, round(fraction * claimed))
        if count == 0:
            return
        held = torch.zeros_like(margin, dtype=torch.bool)
        held[margin.topk(count).indices] = True
        start = 0
        for mask in self.masks:
            n = mask.numel()
            mask &= ~held[start:start + n].reshape(mask.shape)
            start += n

    def _margin(self, w: torch.Tensor) -> torch.Tensor:
        """log-odds of the zero component against the most likely other, per weight."""
        density = self.prior.component_log_density(w)  # (n, K)
        return density[:, 0] - density[:, 1:].max(1).values

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the held weights (after every optimizer step)."""
        if self.masks is not None:
            for mask, w in zip(self.masks, self.prior.weights_of(self.model)):
                w.mul_(mask)

    def sparsity(self) -> float:
        """Fraction of the covered weights held at zero so far."""
        if not self.masks:
            return 0.0
        return 1.0 - sum(int(m.sum()) for m in self.masks) / sum(m.numel() for m in self.masks)

    def __call__(self, info: Any) -> None:
        total = info.total or info.step
        if info.step % self.every == 0 or info.step == total:
            done = min(info.step / max(total, 1) / self.ramp, 1.0)
            self.update(1.0 - (1.0 - done) ** 3)
        self.apply()
