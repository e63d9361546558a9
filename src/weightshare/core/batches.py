"""Running a model on inputs, one way for everyone: calibration, fidelity, the
redundancy analysis and distillation.

Inputs come in the forms users have them: one batch or many; tensors, dicts of
tensors (tokenized transformers inputs), tuples; or plain sentences with a tokenizer.
A batch runs as ``model(**batch)`` (dict), ``model(*batch)`` (tuple or list) or
``model(batch)``; :func:`first_tensor` takes the main tensor of whatever comes back;
:func:`eval_mode` measures with dropout off and restores every submodule's flag;
:func:`mean_pool` averages token vectors over real (unpadded) tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
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


def split_batch(batch: Batch) -> tuple[tuple, dict]:
    """(positional, keyword) arguments of a batch: dicts are keywords, tuples and lists
    positional, anything else one positional argument."""
    if isinstance(batch, Mapping):
        return (), dict(batch)
    if isinstance(batch, (tuple, list)):
        return tuple(batch), {}
    return (batch,), {}


def run_batch(model: nn.Module, batch: Batch) -> Any:
    """model(**batch) for dicts, model(*batch) for tuples and lists, model(batch) otherwise."""
    args, kwargs = split_batch(batch)
    return model(*args, **kwargs)


@contextlib.contextmanager
def eval_mode(*models: nn.Module, inference: bool = True) -> Iterator[None]:
    """Every module of ``models`` in eval mode (and, with ``inference``, under
    ``torch.inference_mode``); each submodule's own train/eval flag is restored after."""
    flags = [(m, m.training) for model in models for m in model.modules()]
    for model in models:
        model.eval()
    try:
        with torch.inference_mode() if inference else contextlib.nullcontext():
            yield
    finally:
        for module, training in flags:
            module.training = training


def first_tensor(output: Any) -> torch.Tensor:
    """The main tensor of a model output: a tensor, its ``last_hidden_state`` or ``logits``,
    else the first tensor found in a tuple / dict / ModelOutput (recursively).

    Example:
        >>> first_tensor((None, torch.ones(2))).tolist()
        [1.0, 1.0]
    """
    if isinstance(output, torch.Tensor):
        return output
    for attr in ("last_hidden_state", "logits"):
        value = getattr(output, attr, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, (str, bytes)):
        raise DataError(f"model output is text ({output!r:.40}), not a tensor; "
                        "return a tensor, a tuple of tensors or a ModelOutput")
    values = output.values() if isinstance(output, Mapping) else output
    if isinstance(values, Sequence) or isinstance(output, Mapping):
        for value in values:
            if value is not None:
                with contextlib.suppress(DataError):
                    return first_tensor(value)
    raise DataError(f"model output has no tensor (got {type(output).__name__}); "
                    "return a tensor, a tuple of tensors or a ModelOutput")


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(batch, tokens, dim) -> (batch, dim): the mean over real tokens (``mask`` true), as
    sentence-transformers pools MiniLM; the plain mean over tokens without a mask.

    Example:
        >>> h = torch.tensor([[[1.0], [3.0], [100.0]]])
        >>> mean_pool(h, torch.tensor([[1, 1, 0]])).tolist()
        [[2.0]]
    """
    if mask is None:
        return hidden.mean(1)
    w = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * w).sum(1) / w.sum(1).clamp(min=1e-9)


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
