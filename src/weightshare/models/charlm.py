"""A small character-level GRU language model: embedding -> GRU -> linear head.

``weightshare.unshare(model, ids)`` turns its GRU into an ``UnsharedGRU`` with separate
weights at every step of the example's length: the temporal-sharing experiment.

Example:
    >>> import torch
    >>> lm = CharGRU(vocab=30)
    >>> lm(torch.zeros(2, 16, dtype=torch.long)).shape
    torch.Size([2, 16, 30])
"""

from __future__ import annotations

import torch
from torch import nn


class CharGRU(nn.Module):
    """ids (B, T) -> next-character logits (B, T, vocab)."""

    def __init__(self, vocab: int, embedding: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, embedding)
        self.gru = nn.GRU(embedding, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.emb(ids))  # (B, T, hidden)
        return self.head(out)
