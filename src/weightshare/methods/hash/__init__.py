"""Hashing (HashedNets): a virtual weight drawn from a small bucket of real weights by a
seeded hash.

The same few parts as every method: ``config`` (``HashConfig``), ``weight``
(``HashedWeight``, the shared-weight protocol), ``method`` (``hash_``), and ``hashing``
(the portable seeded hash). The layers ``ws.nn.HashedLinear`` and ``ws.nn.HashedConv2d``
are plain ``nn.Linear`` / ``nn.Conv2d`` with a hashed weight.
"""

from typing import Any

from torch import nn

from ...core.registry import VALUES, register
from .config import HashConfig
from .method import hash_, hashed_from
from .weight import HashedWeight, budget_for


def _apply(model: nn.Module, config: HashConfig, **options: Any) -> nn.Module:
    return hash_(model, config=config, progress=options.get("progress"))


register(HashConfig, _apply, order=VALUES, weights=(HashedWeight,))

__all__ = ["HashConfig", "HashedWeight", "budget_for", "hash_", "hashed_from"]
