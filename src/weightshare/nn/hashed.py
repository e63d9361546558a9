"""Hashed layers (HashedNets): ``nn.Linear`` and ``nn.Conv2d`` whose weight is a virtual
weight drawn from a small bucket of real weights by a seeded hash.

They are the ordinary torch classes with a hashed weight attached (``methods.hash``), so
``isinstance(layer, nn.Linear)`` holds, optimizers see only the bucket, and
``weightshare.save`` / ``load`` store the seed and the bucket.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.protocol import attach, dense_weight
from ..errors import ConfigError
from ..methods.hash import budget_for, hashed_from


def _hash_own_weight(layer: nn.Module, ratio: float | None, budget: int | None, seed: int,
                     sign: bool, cache: bool) -> None:
    weight = dense_weight(layer).detach()
    if (ratio is None) == (budget is None):
        raise ConfigError("give exactly one of ratio= (e.g. 1/8) or budget= (real weights)")
    if budget is None:
        budget = budget_for(weight.numel(), ratio, type(layer).__name__)  # type: ignore[arg-type]
    # sample: the bucket takes random values of the fresh initialisation, so the virtual
    # weight has the scale torch's initialisation chose
    hw, bucket = hashed_from(weight, budget, seed, sign, init="sample", cache=cache)
    attach(layer, "weight", hw, nn.Parameter(bucket))


class HashedLinear(nn.Linear):
    """A Linear layer with ``budget`` (or ``ratio`` x in x out) real weights.

    Example:
        >>> import torch
        >>> layer = HashedLinear(784, 300, ratio=1/64)
        >>> layer(torch.zeros(2, 784)).shape, sum(p.numel() for p in layer.parameters())
        (torch.Size([2, 300]), 3975)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 ratio: float | None = None, budget: int | None = None, seed: int = 0,
                 sign: bool = True, cache: bool = True, **factory: Any) -> None:
        super().__init__(in_features, out_features, bias, **factory)
        _hash_own_weight(self, ratio, budget, seed, sign, cache)

    @property
    def bucket(self) -> torch.Tensor:
        """The real weights, (budget,)."""
        return self.parametrizations.weight.original  # type: ignore[union-attr,return-value]


class HashedConv2d(nn.Conv2d):
    """A Conv2d layer whose (out, in/groups, kh, kw) kernel is hashed from ``budget`` (or
    ``ratio`` x kernel size) real weights.

    Example:
        >>> import torch
        >>> conv = HashedConv2d(1, 20, 5, ratio=1/8)
        >>> conv(torch.zeros(1, 1, 28, 28)).shape, conv.bucket.numel()
        (torch.Size([1, 20, 24, 24]), 63)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, *args: Any,
                 ratio: float | None = None, budget: int | None = None, seed: int = 0,
                 sign: bool = True, cache: bool = True, **kwargs: Any) -> None:
        super().__init__(in_channels, out_channels, kernel_size, *args, **kwargs)
        _hash_own_weight(self, ratio, budget, seed, sign, cache)

    @property
    def bucket(self) -> torch.Tensor:
        """The real weights, (budget,)."""
        return self.parametrizations.weight.original  # type: ignore[union-attr,return-value]
