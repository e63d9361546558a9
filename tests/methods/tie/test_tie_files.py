"""Ties through the file format: tied and relaxed models save once and load with the very
same ties; tie + cluster + save + load; a tie map naming missing parameters."""

from __future__ import annotations

import json
import re

import pytest
import torch

import weightshare as ws
from tests.zoo import (
    StackNet,
    bert_inputs,
    stack_net,
    tiny_bert,
)
from weightshare.core.ties import find_ties, get_tie_map, verify_ties
from weightshare.errors import FormatError, TieError
from weightshare.io import load, read_metadata, save
from weightshare.methods.tie import TieConfig, retie_, tie_


@pytest.mark.parametrize("config", [
    TieConfig(strategy="cycle", unique=2),
    TieConfig(strategy="sequence", unique=3, rank=3, init="mean"),
    TieConfig(strategy="all", scope="attn", groups=[["blocks.0.ffn", "blocks.1.ffn"]]),
], ids=["plain", "relaxed", "scope+group"])
def test_save_load_restores_the_same_ties(tmp_path, config):
    model = tie_(stack_net(seed=1), config)
    path = save(model, tmp_path / "m.safetensors")
    meta = read_metadata(path)
    # the file records the model's tie map (a relaxed base as the part "shared" of its weight)
    assert meta["ties"] == {_part(a): _part(s) for a, s in get_tie_map(model).items()}
    for skeleton in (stack_net(seed=2), _meta_stack()):
        loaded = load(path, skeleton)
        assert find_ties(loaded) == find_ties(model) != []
        assert verify_ties(loaded) == []
        x = torch.randn(2, 8)
        assert torch.equal(loaded(x), model(x))
        # aliases share storage after load
        for group in find_ties(loaded):
            ptrs = {_ptr(loaded, name) for name in group}
            assert len(ptrs) == 1


def _part(name: str) -> str:
    return re.sub(r"\.parametrizations\.(\w+)\.original$", r".\1.shared", name)


def _meta_stack() -> StackNet:
    with torch.device("meta"):
        return StackNet()


def _ptr(model: torch.nn.Module, name: str) -> int:
    from weightshare.core.names import get_param
    return get_param(model, name).data_ptr()


def test_file_stores_each_shared_tensor_once(tmp_path):
    model = tie_(stack_net(), TieConfig(strategy="all"))
    path = save(model, tmp_path / "tied.safetensors")
    untied = save(stack_net(), tmp_path / "untied.safetensors")
    assert path.stat().st_size < 0.5 * untied.stat().st_size


def test_relaxed_transformers_model_rebuilds_from_file(tmp_path):
    bert = tie_(tiny_bert(), TieConfig(strategy="cycle", unique=2, rank=4, scope="attention"))
    path = save(bert, tmp_path / "bert.safetensors")
    schemes = read_metadata(path)["schemes"]
    assert schemes["encoder.layer.2.attention.self.query.weight"] == {
        "kind": "relaxed", "version": 1, "rank": 4, "shape": [32, 32], "delta": "low_rank",
        "dtype": "float32"}
    loaded = load(path)
    inputs = bert_inputs()
    assert torch.equal(loaded(**inputs).last_hidden_state, bert(**inputs).last_hidden_state)
    assert len(find_ties(loaded)) == len(find_ties(bert))


def test_tie_cluster_save_load_round_trip(tmp_path):
    model = tie_(stack_net(), TieConfig(strategy="cycle", unique=3))
    ws.cluster_(model, ws.ClusterConfig(bits=4, min_size=0))
    assert ["blocks.0.attn.weight", "blocks.3.attn.weight"] in find_ties(model)
    path = save(model, tmp_path / "tc.safetensors")
    loaded = load(path, stack_net(seed=9))
    x = torch.randn(2, 8)
    assert torch.equal(loaded(x), model(x))
    assert find_ties(loaded) == find_ties(model)
    assert loaded.blocks[0].attn.parametrizations.weight.original is \
        loaded.blocks[3].attn.parametrizations.weight.original


def test_load_into_a_model_lacking_the_tied_parameters(tmp_path):
    path = save(tie_(stack_net(n=6), TieConfig(strategy="all")), tmp_path / "m.safetensors")
    with pytest.raises(FormatError, match="holds tensors the model lacks"):
        load(path, stack_net(n=4))


def test_file_tie_map_naming_missing_parameters(tmp_path):
    path = save(tie_(stack_net(n=6), TieConfig(strategy="all")), tmp_path / "m.safetensors")
    ties = read_metadata(path)["ties"]
    with pytest.raises(TieError, match="names parameter.*lacks: blocks.4.attn.bias"):
        retie_(stack_net(n=4), ties)


def test_relaxed_file_into_model_of_other_shape(tmp_path):
    path = save(tie_(stack_net(), TieConfig(strategy="all", rank=2)), tmp_path / "r.safetensors")
    other = StackNet(d=8)
    with pytest.raises(FormatError, match="shape"):
        load(path, other)


@pytest.mark.parametrize("forge,match", [
    (lambda s: s["blocks.0.attn.weight"].update(rank=10**9), "rank .* does not fit"),
    (lambda s: s["blocks.0.attn.weight"].update(shape=[16, 16, -1]), "positive integers"),
    (lambda s: s["blocks.0.attn.weight"].update(delta="huge"), "delta"),
    (lambda s: s.update({"nowhere.weight": dict(s["blocks.0.attn.weight"])}),
     "'nowhere.weight' lacks its tensor 'nowhere.weight.shared'"),
])
def test_forged_relaxed_scheme_is_rejected(tmp_path, forge, match):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    model = tie_(stack_net(), TieConfig(strategy="all", rank=2, scope="attn"))
    path = save(model, tmp_path / "r.safetensors")
    with safe_open(str(path), "pt") as f:
        strings = f.metadata()
    meta = json.loads(strings["weightshare"])
    forge(meta["schemes"])
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(path)), str(bad), metadata={**strings, "weightshare": json.dumps(meta)})
    skeleton = stack_net(seed=3)
    before = {k: v.clone() for k, v in skeleton.state_dict().items()}
    with pytest.raises(FormatError, match=match):
        load(bad, skeleton)
    assert all(torch.equal(before[k], v) for k, v in skeleton.state_dict().items())
