"""Small real weightshare files of every kind, the seeds the fuzzer mutates: a clustered
MLP, a per-channel conv net, tied embeddings, tied + clustered embeddings, a cycle-tied
stack, a relaxed-tied stack, an entropy-coded model, a tiny transformers BERT (rebuilt
from its config: no skeleton), each with the skeleton it loads into."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import weightshare as ws
from tests.zoo import ConvNet, TinyLM, mlp, stack_net
from weightshare.methods.codebook.weight import attach_codebook


@dataclass(frozen=True)
class Case:
    """A seed file: its name, bytes, the skeleton to load it into (None: rebuilt from the
    file's config) and the inputs to run the loaded model on (positional or keyword)."""

    name: str
    data: bytes
    skeleton: Callable[[], nn.Module] | None
    inputs: Callable[[], tuple | dict]

    def __repr__(self) -> str:
        return f"Case({self.name}, {len(self.data)} bytes)"


def _skewed(seed: int = 0) -> nn.Module:
    """Codes with skewed histograms, so that entropy coding pays and is really stored."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Embedding(200, 32), nn.Linear(32, 48), nn.ReLU(),
                          nn.Linear(48, 200))
    g = torch.Generator().manual_seed(seed)
    for i, bits in ((0, 4), (1, 3), (3, 2)):
        w = model[i].weight
        probs = torch.softmax(-torch.arange(1 << bits, dtype=torch.float) / 2, 0)
        codes = torch.multinomial(probs, w.numel(), True, generator=g).reshape(w.shape)
        attach_codebook(model[i], torch.randn(1, 1 << bits, generator=g), codes, bits)
    return model.eval()


def _tiny_bert() -> nn.Module:
    from tests.zoo import tiny_bert

    return tiny_bert()


def _bert_inputs() -> dict:
    from tests.zoo import bert_inputs

    return bert_inputs()


def _ids(vocab: int) -> Callable[[], tuple]:
    return lambda: (torch.arange(12).reshape(2, 6) % vocab,)


def _x(*shape: int) -> Callable[[], tuple]:
    return lambda: (torch.randn(*shape, generator=torch.Generator().manual_seed(0)),)


def build(directory: Path, with_transformers: bool = True) -> list[Case]:
    """Write the seed files into ``directory`` and return them."""
    directory.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def add(name: str, model: nn.Module, skeleton: Callable[[], nn.Module] | None,
            inputs: Callable[[], tuple | dict], entropy: bool = False) -> None:
        path = ws.save(model, directory / f"{name}.safetensors", entropy=entropy)
        cases.append(Case(name, path.read_bytes(), skeleton, inputs))

    with torch.no_grad():
        add("codebook", ws.cluster_(mlp(), ws.ClusterConfig(bits=4, min_size=0)), mlp,
            _x(3, 32))
        torch.manual_seed(0)
        add("conv", ws.cluster_(ConvNet(), ws.ClusterConfig(bits=3, granularity="per_channel",
                                                            min_size=0)),
            ConvNet, _x(1, 1, 12, 12))
        torch.manual_seed(0)
        add("tied", TinyLM(), TinyLM, _ids(50))
        torch.manual_seed(0)
        add("tied_codebook", ws.cluster_(TinyLM(), ws.ClusterConfig(bits=3, min_size=0)),
            TinyLM, _ids(50))
        add("cycle", ws.tie_(stack_net(n=4), ws.TieConfig(strategy="cycle", unique=2)),
            lambda: stack_net(seed=1, n=4), _x(2, 8))
        add("relaxed", ws.tie_(stack_net(n=4), ws.TieConfig(strategy="all", rank=2)),
            lambda: stack_net(seed=1, n=4), _x(2, 8))
        add("coded", _skewed(), lambda: _skewed(seed=1), _ids(200), entropy=True)
        if with_transformers:
            bert = ws.cluster_(_tiny_bert(), ws.ClusterConfig(
                bits=4, granularity="per_channel", min_size=0, exclude=("token_type",)))
            add("bert", bert, None, _bert_inputs)
    return cases
