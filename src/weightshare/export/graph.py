"""A transformers model as a traceable function of token ids: what ONNX and Core ML get.

transformers models take keyword arguments and return ``ModelOutput`` objects; the
exporters want positional tensors in and one tensor out. :class:`TokensToOutput` wraps
a model so: ``(input_ids, attention_mask) -> logits`` for language models (no key/value
cache), ``-> last_hidden_state`` for encoders.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.batches import first_tensor


class TokensToOutput(nn.Module):
    """``forward(input_ids, attention_mask)`` -> the model's main output tensor."""

    def __init__(self, model: nn.Module, causal: bool) -> None:
        super().__init__()
        self.model, self.causal = model, causal

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        extra = {"use_cache": False} if self.causal else {}
        return first_tensor(self.model(input_ids=input_ids, attention_mask=attention_mask,
                                       **extra))


def example_ids(vocab: int, batch: int = 2, length: int = 16, seed: int = 0) -> torch.Tensor:
    """Seeded token ids (batch, length) below ``vocab``, for tracing and checks."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, max(1, vocab), (batch, length), generator=gen)
