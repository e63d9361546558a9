"""The teacher's token embeddings, cached per sentence for distillation on sentences.

``distill_`` regroups sentences into new batches every pass (fixed batches over-fit), so
a batch never comes back and caching the teacher's output per batch never hits. An
encoder's output for a real token does not depend on the padding around it (padding is
masked out of attention), so the output can be cached per *sentence* instead: the rows
of its real tokens. From the second pass on the teacher no longer runs — on
all-MiniLM-L6-v2 at batch 16 its forward pass is about a fifth of a codebook
fine-tuning step.

Used only where that holds and the target is consumed as a tensor: sentence data
without augmentation, a built-in loss, and a teacher whose output has
``last_hidden_state`` of shape (batch, tokens, hidden) matching the attention mask.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.batches import run_batch, token_mask

MAX_VALUES = 1 << 27  # stop adding past 128 M cached floats (512 MiB in fp32)


class SentenceCache:
    """Per-sentence rows of the teacher's ``last_hidden_state``.

    Example:
        >>> from types import SimpleNamespace
        >>> teacher = lambda input_ids, attention_mask: SimpleNamespace(
        ...     last_hidden_state=input_ids.unsqueeze(-1).float().expand(-1, -1, 2))
        >>> cache = SentenceCache()
        >>> batch = {"input_ids": torch.tensor([[3, 4], [5, 0]]),
        ...          "attention_mask": torch.tensor([[1, 1], [1, 0]])}
        >>> _ = cache.target(teacher, batch, ["a b", "c"])
        >>> again = {"input_ids": torch.tensor([[5]]), "attention_mask": torch.tensor([[1]])}
        >>> cache.target(teacher, again, ["c"]).tolist()  # from the cache
        [[[5.0, 5.0]]]
    """

    def __init__(self) -> None:
        self.rows: dict[str, torch.Tensor] = {}
        self.values = 0
        self.off = False

    def target(self, teacher: nn.Module | Any, batch: dict, texts: list[str]) -> Any:
        """The teacher's output on ``batch`` (the sentences ``texts``, in order): rebuilt
        from the cache when every sentence is in it (a (batch, tokens, hidden) tensor,
        zero at padding), else computed and its rows cached."""
        mask = token_mask(batch)
        if not self.off and mask is not None and all(t in self.rows for t in texts):
            first = self.rows[texts[0]]
            out = first.new_zeros(*mask.shape, first.shape[-1])
            for i, text in enumerate(texts):
                out[i][mask[i]] = self.rows[text]
            return out
        with torch.no_grad():
            output = run_batch(teacher, batch)
        hidden = getattr(output, "last_hidden_state", None)
        if (mask is None or not isinstance(hidden, torch.Tensor) or hidden.dim() != 3
                or hidden.shape[:2] != mask.shape or len(texts) != mask.shape[0]):
            self.off = True  # not an encoder output aligned with its tokens: no caching
            return output
        for i, text in enumerate(texts):
            if text not in self.rows and self.values < MAX_VALUES:
                row = hidden[i][mask[i]].detach().clone()
                self.rows[text] = row
                self.values += row.numel()
        return output
