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


def file_bits_per_weight(model: nn.Module, path) -> float:
    """Bits per clustered weight read from the saved file: the bytes of every tensor
    stored for a codebook weight (codes, codebooks, scales, outliers; a tied part once)
    over the number of weights those schemes describe."""
    import json

    from safetensors import safe_open

    ws.save(model, path)
    with safe_open(str(path), framework="pt") as f:
        schemes = json.loads(f.metadata()["weightshare"])["schemes"]
        stored = 0
        for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
            if any(name.startswith(w + ".") for w in schemes):
                t = f.get_tensor(name)
                stored += t.numel() * t.element_size()
    values = sum(math.prod(s["shape"]) for s in schemes.values())
    return 8 * stored / values


class Uneven(nn.Module):
    """Rows no group size of 16 divides (60 -> groups of 15), a shared-codebook pair."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(64, 60), nn.Linear(60, 64)
        self.c, self.d = nn.Linear(64, 64), nn.Linear(64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d(torch.tanh(self.c(self.b(torch.tanh(self.a(x))))))


@pytest.mark.parametrize("extra", [
    dict(granularity="per_group", group_size=16),
    dict(granularity="per_group", group_size=16, outliers=0.01, error_feedback=True),
    dict(scales="per_channel", outliers=0.02),
    dict(shared_codebooks=(r"^[cd]$",)),
])
def test_budget_counts_everything_the_file_stores(tmp_path, extra):
    """The budget is met by the saved file itself: per-group codebooks (with the per_group
    fallback's real group size), scales, outlier positions and values, a shared codebook
    stored once."""
    torch.manual_seed(0)
    model = Uneven()
    calib = [torch.randn(32, 64) for _ in range(2)]
    with pytest.warns(UserWarning) if extra.get("granularity") else _no_warning():
        ws.cluster_(model, ws.ClusterConfig(bits=3, budget=3.0, min_size=0, **extra), calib,
                    progress=False)
    achieved = file_bits_per_weight(model, tmp_path / "m.safetensors")
    assert achieved <= 3.0
    assert achieved == pytest.approx(bits_per_weight(model))
    assert achieved > 2.5  # the budget is spent (up to what whole widths allow)


def _no_warning():
    import contextlib

    return contextlib.nullcontext()


@pytest.mark.parametrize("option,extra", [
    ((3, 1, "per_group"), dict(granularity="per_group", group_size=16)),
    ((2, 1, "per_tensor"), dict(scales="per_channel", outliers=0.01)),
    ((8, 4, "per_tensor"), dict(outliers=0.001)),
    ((5, 1, "per_tensor"), dict(codebook_dtype="float32")),
])
def test_stored_bits_is_what_the_weight_stores(option, extra):
    from weightshare.methods.codebook.allocate import stored_bits

    torch.manual_seed(0)
    layer = nn.Linear(96, 48).to(torch.bfloat16 if "codebook_dtype" in extra else torch.float32)
    bits, d, _ = option
    config = ws.ClusterConfig(bits=bits, vector_dim=d, min_size=0, **extra)
    predicted = stored_bits((48, 96), 0, option, config, layer.weight.dtype)
    ws.cluster_(layer, config, progress=False)
    row = next(r for r in ws.inspect(layer).rows if r.name == "weight")
    assert row.scheme.endswith("codebook")
    assert predicted == 8 * row.stored_bytes


def test_per_group_budget_keeps_one_codebook_where_groups_cost_too_much():
    """A table of 8 values per row: 4-bit codebooks for every 16 rows would cost 4 bits per
    weight on their own, so under a per_group budget it gets one codebook; the wide layer
    (1,024 values per row) may have its groups."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(4096, 8), nn.Flatten(), nn.Linear(64, 256))
    calib = [torch.randint(0, 4096, (16, 8)) for _ in range(2)]
    ws.cluster_(model, ws.ClusterConfig(bits=4, budget=4.0, min_size=0,
                                        granularity="per_group", group_size=16), calib,
                progress=False)
    table = model[0].parametrizations.weight[0]
    assert table.granularity == "per_tensor" and table.num_groups == 1
    assert bits_per_weight(model) <= 4.0
