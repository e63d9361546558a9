"""``share_``: apply any registered sharing configs to a model, in a sensible order."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import ConfigError
from .guard import before_sharing
from .registry import method_for


def share_(model: nn.Module, *configs: Any, **options: Any) -> nn.Module:
    """Apply every config with its registered method, in place; returns ``model``.

    Structural sharing (ties) runs before value sharing (codebooks), whatever the order
    of the arguments, so a tied weight is clustered once and stays tied. ``options``
    (e.g. ``calibration=batches``, ``progress=False``) go to every method; each uses
    those it knows.

    Example:
        >>> import torch, weightshare as ws
        >>> m = torch.nn.Sequential(*[torch.nn.Linear(32, 32) for _ in range(4)])
        >>> _ = ws.share_(m, ws.ClusterConfig(bits=2, min_size=0),
        ...               ws.TieConfig(strategy="cycle", unique=2))
        >>> len(ws.find_ties(m)), m[0].weight.unique().numel() <= 4
        (4, True)
    """
    if not configs:
        raise ConfigError("share_ needs at least one config, e.g. ws.ClusterConfig(bits=4)")
    before_sharing(model)  # the baseline before the first method changes anything
    methods = sorted(((method_for(c), i, c) for i, c in enumerate(configs)),
                     key=lambda t: (t[0].order, t[1]))
    for method, _, config in methods:
        method.apply(model, config, **options)
    return model
