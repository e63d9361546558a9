"""A small character-level transformer language model for the sharing studies.

:class:`CharTransformer` is a GPT-style decoder (pre-norm blocks of causal self-attention
and a GELU MLP) whose blocks sit in one ``nn.ModuleList`` ``blocks``, so
``ws.tie_(model, TieConfig(strategy=...))`` finds them as a stack of repeated blocks:
cross-layer sharing (ALBERT, cycle strategies, relaxed ties) applies unchanged. It maps
ids (batch, steps) to logits (batch, steps, vocab), like ``models.charlm.CharGRU``.

Example:
    >>> import torch
    >>> lm = CharTransformer(vocab=40, dim=32, layers=3, heads=2, context=16)
    >>> lm(torch.zeros(2, 16, dtype=torch.long)).shape
    torch.Size([2, 16, 40])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ShapeError


def _positive(**values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}")


class Block(nn.Module):
    """x + attn(norm1(x)), then + mlp(norm2(x)); ``attn`` and ``mlp`` are what tie scopes
    name (``scope="attn"``)."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.ModuleDict({"qkv": nn.Linear(dim, 3 * dim), "proj": nn.Linear(dim, dim)})
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        # (B, T, 3D) -> 3 x (B, heads, T, D / heads)
        q, k, v = self.attn["qkv"](self.norm1(x)).view(b, t, 3, self.heads, d // self.heads
                                                       ).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, heads, T, D/heads)
        x = x + self.attn["proj"](a.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class CharTransformer(nn.Module):
    """A decoder-only transformer over characters: ``layers`` blocks of width ``dim``,
    learned positions up to ``context`` characters, untied read-out (so only the block
    sharing under study changes the parameter count)."""

    def __init__(self, vocab: int, dim: int = 64, layers: int = 6, heads: int = 4,
                 context: int = 64, hidden: int | None = None) -> None:
        super().__init__()
        hidden = 4 * dim if hidden is None else hidden
        _positive(vocab=vocab, dim=dim, layers=layers, heads=heads, context=context,
                  hidden=hidden)
        if dim % heads:
            raise ConfigError(f"dim ({dim}) must be a multiple of heads ({heads})")
        self.context = context
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(context, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, hidden) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2 or ids.shape[1] > self.context:
            raise ShapeError(f"CharTransformer takes ids (batch, steps <= {self.context}), got "
                             f"{tuple(ids.shape)}; cut the text into windows of "
                             f"{self.context}")
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.embed(ids.long()) + self.pos(pos)  # (B, T, D)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))  # (B, T, vocab)
