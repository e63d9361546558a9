"""A kind of sharing plugs in from outside the package: one SharedWeight subclass, one
method and one register call, written here, round-trip through share_, save, load and
inspect with no change to io or report."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from safetensors import safe_open
from torch import nn

import weightshare as ws
from weightshare.core import PartSpec, SharedWeight
from weightshare.core.protocol import dtype_name
from weightshare.core.registry import register, unregister
from weightshare.core.select import select_targets
from weightshare.core.walk import share_targets
from weightshare.errors import FormatError


class SignWeight(SharedWeight):
    """weight[r, c] = scale[r] * (+1 or -1): one bit per weight and one float per row."""

    kind = "test-sign"
    original_part = "scale"
    signs: torch.Tensor

    def __init__(self, signs: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("signs", signs.to(torch.uint8))

    def forward(self, scale: torch.Tensor) -> torch.Tensor:
        return scale[:, None] * (2 * self.signs.to(scale.dtype) - 1)

    def scheme(self, original: torch.Tensor) -> dict[str, Any]:
        return {"kind": self.kind, "shape": list(self.signs.shape),
                "dtype": dtype_name(original.dtype)}

    @classmethod
    def part_specs(cls, scheme: dict[str, Any]) -> dict[str, PartSpec]:
        rows, cols = scheme["shape"]
        return {"scale": PartSpec(scheme["dtype"], (rows,)),
                "signs": PartSpec("uint8", (rows, cols), bits=1)}

    def parts(self) -> dict[str, torch.Tensor]:
        return {"signs": self.signs}

    @classmethod
    def from_scheme(cls, scheme: dict[str, Any], parts: dict[str, torch.Tensor]) -> SignWeight:
        return cls(parts["signs"])

    def distinct_values(self, original: torch.Tensor) -> int:
        return 2


@dataclass(frozen=True)
class SignConfig:
    include: tuple[str, ...] = ()


def sign_(model: nn.Module, config: SignConfig, **_options: Any) -> nn.Module:
    def build(target):
        w = target.module.weight.detach()
        return SignWeight(w > 0), w.abs().mean(1)

    share_targets(select_targets(model, config.include), build, progress=False)
    return model


@pytest.fixture
def sign_method() -> Iterator[None]:
    register(SignConfig, sign_, weights=(SignWeight,))
    yield
    unregister(SignConfig)


def stack() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(16, 16) for _ in range(4)])


def test_toy_kind_round_trips_through_share_save_load_inspect(sign_method, tmp_path):
    model = stack()
    # the tie runs first whatever the order: the tied weight gets one sign weight
    ws.share_(model, SignConfig(), ws.TieConfig(strategy="cycle", unique=2))
    assert model[0].parametrizations.weight[0] is model[2].parametrizations.weight[0]
    assert model[1].weight.abs().unique().numel() <= 16  # one scale per row
    path = ws.save(model, tmp_path / "sign.safetensors")
    with safe_open(str(path), "pt") as f:
        assert {"0.weight.scale", "0.weight.signs", "1.weight.scale", "1.weight.signs"} <= set(
            f.keys())
        assert f.get_tensor("0.weight.signs").numel() == 16 * 16 // 8  # one bit per weight

    loaded = ws.load(path, stack())
    x = torch.randn(3, 16)
    assert torch.equal(loaded(x), model.eval()(x))
    assert ws.find_ties(loaded) == ws.find_ties(model)

    in_memory, on_disk = ws.inspect(loaded), ws.inspect(path)
    for report in (in_memory, on_disk):
        rows = {r.name: r for r in report.rows}
        assert rows["0.weight"].scheme == "test-sign" and rows["0.weight"].distinct == 2
        assert rows["0.weight"].stored_bytes == 16 * 4 + 32  # scale + packed signs
        assert rows["2.weight"].scheme == "tied"
    assert (in_memory.total_params, in_memory.unique_params, in_memory.stored_bytes) == (
        on_disk.total_params, on_disk.unique_params, on_disk.stored_bytes)


def test_a_file_of_an_unknown_kind_is_refused_naming_the_kind(sign_method, tmp_path):
    model = sign_(stack(), SignConfig())
    path = ws.save(model, tmp_path / "sign.safetensors")
    unregister(SignConfig)  # a weightshare that does not know the kind
    skeleton = stack()
    before = {k: v.clone() for k, v in skeleton.state_dict().items()}
    with pytest.raises(FormatError, match="sharing kind 'test-sign'.*not know"):
        ws.load(path, skeleton)
    assert all(torch.equal(before[k], v) for k, v in skeleton.state_dict().items())
    register(SignConfig, sign_, weights=(SignWeight,))  # for the fixture's teardown


def test_share_needs_a_registered_config():
    with pytest.raises(ws.WeightShareError, match="no sharing method is registered for dict"):
        ws.share_(stack(), {"bits": 4})
    with pytest.raises(ws.WeightShareError, match="at least one config"):
        ws.share_(stack())


@pytest.mark.parametrize("configs", [
    (ws.TieConfig(strategy="cycle", unique=2), ws.ClusterConfig(bits=2, min_size=0,
                                                                include=("0",))),
    (ws.TieConfig(strategy="all", rank=2),),
    (SignConfig(include=("1", "3")),),
], ids=["tie+codebook", "relaxed", "toy kind"])
def test_materialize_turns_every_kind_back_into_dense_weights(sign_method, configs):
    model = ws.share_(stack(), *configs)
    x = torch.randn(2, 16)
    expected = model(x)
    ties = ws.find_ties(model)
    ws.materialize_(model)
    assert not any(".parametrizations." in n for n, _ in model.named_parameters())
    assert torch.equal(model(x), expected)
    if configs[0] == ws.TieConfig(strategy="cycle", unique=2):
        assert ws.find_ties(model) == ties  # a weight shared by two modules stays one


def test_materializing_a_deep_copy_leaves_the_original_shared():
    # a deep copy shares the generated parametrized class with its original; removing the
    # copy's parametrization must not take the property away from the original
    import copy

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4))
    ws.cluster_(model, ws.ClusterConfig(bits=2, min_size=0))
    x = torch.randn(2, 8)
    want = model(x)
    twin = copy.deepcopy(model)
    ws.materialize_(twin)
    assert type(twin[0]) is nn.Linear and torch.allclose(twin(x), want)
    assert torch.equal(model(x), want)
    assert [r.scheme for r in ws.inspect(model).rows].count("codebook") == 2
