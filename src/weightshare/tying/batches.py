"""Unlabeled inputs, in the forms users have them: one batch or many; tensors,
dicts of tensors (tokenized transformers inputs), tuples; or plain sentences with a
tokenizer. Shared by the redundancy analysis and distillation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import DataError

Batch = Any  # torch.Tensor | Mapping[str, torch.Tensor] | tuple[torch.Tensor, ...]


def is_batch(x: Any) -> bool:
    return isinstance(x, (torch.Tensor, Mapping)) or (
        isinstance(x, tuple) and len(x) > 0 and all(isinstance(t, torch.Tensor) for t in x))


def as_batches(data: Any, tokenizer: Any = None, batch_size: int = 32,
               max_length: int = 128) -> list[Batch]:
    """A list of batches from one batch, an iterable of batches, or sentences + tokenizer.

    Example:
        >>> import torch
        >>> len(as_batches(torch.zeros(4, 3))), len(as_batches([torch.zeros(2), torch.zeros(2)]))
        (1, 2)
    """
    if is_batch(data):
        return [data]
    items = list(data) if isinstance(data, Iterable) else None
    if not items:
        raise DataError(f"no input batches in {type(data).__name__}; pass a tensor, a dict of "
                        "tensors, a list of them, or sentences with a tokenizer")
    if all(isinstance(s, str) for s in items):
        if tokenizer is None:
            raise DataError("got sentences but no tokenizer; pass tokenizer=... (e.g. "
                            "AutoTokenizer.from_pretrained(...)) or tokenized batches")
        # batches of similar lengths pad less (CPU time is spent on padding too); the
        # batch order is then shuffled (seeded) so a time-limited run sees all lengths
        ordered = sorted(items, key=len)
        batches = [dict(tokenizer(ordered[i:i + batch_size], padding=True, truncation=True,
                                  max_length=max_length, return_tensors="pt"))
                   for i in range(0, len(ordered), batch_size)]
        order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(0))
        return [batches[int(k)] for k in order]
    bad = [type(x).__name__ for x in items if not is_batch(x)]
    if bad:
        raise DataError(f"inputs hold a {bad[0]}, not a batch; pass tensors, dicts of tensors "
                        "or tuples of tensors")
    return items


def to_device(batch: Batch, device: torch.device) -> Batch:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    return tuple(t.to(device) for t in batch)


def run_batch(model: nn.Module, batch: Batch) -> Any:
    """model(**batch) for dicts, model(*batch) for tuples, model(batch) for tensors."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, tuple):
        return model(*batch)
    return model(batch)


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def token_mask(batch: Batch) -> torch.Tensor | None:
    """(batch, tokens) bool mask of real tokens, when the batch carries an attention mask."""
    if isinstance(batch, Mapping) and isinstance(batch.get("attention_mask"), torch.Tensor):
        return batch["attention_mask"].bool()
    return None


def rows(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(rows, features) view of an activation, keeping only real tokens when masked."""
    if mask is not None and t.dim() == 3 and t.shape[:2] == mask.shape:
        return t[mask]
    return t.reshape(-1, t.shape[-1]) if t.dim() > 1 else t.reshape(-1, 1)
