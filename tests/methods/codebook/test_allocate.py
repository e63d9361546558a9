"""Bit allocation under a budget: met exactly (everything stored counted), bits where the
loss estimate says they matter."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import weightshare as ws
from weightshare.errors import ConfigError, DataError


def bits_per_weight(model: nn.Module) -> float:
    rows = [r for r in ws.inspect(model).rows if r.scheme in ("codebook", "vector_codebook")]
    return 8 * sum(r.stored_bytes for r in rows) / sum(math.prod(r.shape) for r in rows)


class TwoBranches(nn.Module):
    """out = a(x) + 0.01 b(x): an error in b costs 10,000x less than the same in a."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(64, 64), nn.Linear(64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) + 0.01 * self.b(x)


def two_layer_model() -> nn.Module:
    torch.manual_seed(0)
    return TwoBranches()


def test_budget_is_met_and_the_sensitive_layer_gets_more_bits():
    model = two_layer_model()
    calib = [torch.randn(32, 64) for _ in range(2)]
    ws.cluster_(model, ws.ClusterConfig(bits=4, budget=4.0, min_size=0), calib, progress=False)
    bits_a = model.a.parametrizations.weight[0].bits
    bits_b = model.b.parametrizations.weight[0].bits
    assert bits_a > bits_b
    assert bits_per_weight(model) <= 4.0


@pytest.mark.parametrize("budget", [2.5, 3.0, 5.25])
def test_any_budget_is_met(budget):
    model = two_layer_model()
    calib = [torch.randn(32, 64)]
    ws.cluster_(model, ws.ClusterConfig(bits=round(budget), budget=budget, min_size=0), calib,
                progress=False)
    assert bits_per_weight(model) <= budget


def test_budget_errors():
    with pytest.raises(ConfigError, match="budget must be a number"):
        ws.ClusterConfig(budget=0)
    with pytest.raises(ConfigError, match="scalar code widths"):
        ws.ClusterConfig(bits=8, vector_dim=4, budget=2.0)
    with pytest.raises(DataError, match="budget=3.0 needs calibration data"):
        ws.cluster_(two_layer_model(), ws.ClusterConfig(bits=3, budget=3.0, min_size=0))
    with pytest.raises(ConfigError, match="below what"):
        ws.cluster_(two_layer_model(), ws.ClusterConfig(bits=3, budget=0.5, min_size=0),
                    [torch.randn(8, 64)])


def test_embedding_tables_may_become_vector_codes_within_the_budget():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(4096, 64), nn.Linear(64, 64), nn.Tanh(),
                          nn.Linear(64, 64))
    with torch.no_grad():  # every 8 consecutive values of a row: one of 256 8-vectors
        blocks = torch.randn(256, 8)
        model[0].weight.copy_(blocks[torch.randint(0, 256, (4096 * 8,))].reshape(4096, 64))
    calib = [torch.randint(0, 4096, (16, 8)) for _ in range(2)]
    ws.cluster_(model, ws.ClusterConfig(bits=3, budget=2.0, min_size=0), calib,
                progress=False)
    assert bits_per_weight(model) <= 2.0
    kinds = {r.name: r.scheme for r in ws.inspect(model).rows}
    assert kinds["0.weight"] == "vector_codebook"
    weight = model[0].parametrizations.weight[0]
    assert (weight.bits, weight.vector_dim) == (8, 8)
