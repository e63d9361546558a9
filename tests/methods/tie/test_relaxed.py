"""Relaxed sharing: W_i = W_shared + B_i A_i; full rank is exact, the shared weight is stored
once, deltas train, merge_ gives plain dense weights."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrize

from tests.zoo import (
    bert_inputs,
    stack_net,
    tiny_bert,
    unique_numel,
)
from weightshare.core.ties import find_ties, verify_ties
from weightshare.errors import TieError
from weightshare.methods.tie import RelaxedWeight, TieConfig, iter_relaxed, merge_, tie_


def test_full_rank_reproduces_bert_outputs():
    bert = tiny_bert()
    inputs = bert_inputs()
    ref = bert(**inputs).last_hidden_state
    tie_(bert, TieConfig(strategy="cycle", unique=2, rank="full", init="mean"))
    assert torch.allclose(bert(**inputs).last_hidden_state, ref, atol=1e-5)
    query = bert.encoder.layer[0].attention.self.query
    assert query.parametrizations.weight.original is \
        bert.encoder.layer[2].attention.self.query.parametrizations.weight.original


@pytest.mark.parametrize("init", ["first", "mean", "stepwise"])
def test_full_rank_exact_for_every_init(init):
    model = stack_net()
    x = torch.randn(3, 8)
    ref = model(x)
    tie_(model, TieConfig(strategy="cycle", unique=3, rank=16, init=init))
    assert torch.allclose(model(x), ref, atol=1e-5)


def test_error_shrinks_with_rank():
    ref = stack_net()
    target = ref.blocks[3].ffn[0].weight.detach().clone()
    errors = []
    for rank in (1, 4, 8, 16):
        model = tie_(stack_net(), TieConfig(strategy="all", rank=rank, init="mean"))
        errors.append(float((model.blocks[3].ffn[0].weight.detach() - target).norm()))
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-4


def test_shared_weight_stored_once_and_deltas_counted():
    model = stack_net()
    before = unique_numel(model)
    tie_(model, TieConfig(strategy="all", rank=2, scope="ffn"))
    # ffn.0: (32, 16), ffn.2: (16, 32) -> per block rank-2 deltas 2*(32+16) each + dense bias deltas
    per_block_deltas = 2 * 2 * (32 + 16) + 32 + 16
    shared_saved = 5 * (32 * 16 * 2 + 32 + 16)
    assert unique_numel(model) == before - shared_saved + 6 * per_block_deltas
    assert find_ties(model)[0] == [f"blocks.{i}.ffn.0.weight" for i in range(6)]
    assert verify_ties(model) == []


def test_scheme_and_from_scheme():
    model = tie_(stack_net(), TieConfig(strategy="all", rank=3, scope="attn"))
    relaxed = {fqn: r for fqn, _, _, r in iter_relaxed(model)}
    shared = model.blocks[0].attn.parametrizations.weight.original
    scheme = relaxed["blocks.0.attn.weight"].scheme(shared)
    assert scheme == {"kind": "relaxed", "rank": 3, "shape": [16, 16], "delta": "low_rank",
                      "dtype": "float32"}
    assert relaxed["blocks.0.attn.bias"].scheme(shared)["delta"] == "dense"
    specs = RelaxedWeight.part_specs(scheme)
    assert {k: v.shape for k, v in specs.items()} == {
        "shared": (16, 16), "lora_B": (16, 3), "lora_A": (3, 16)}
    parts = relaxed["blocks.0.attn.weight"].parts()
    rebuilt = RelaxedWeight.from_scheme(scheme, {k: v.detach() for k, v in parts.items()})
    assert torch.equal(rebuilt(shared), model.blocks[0].attn.weight)


def test_deltas_and_shared_weight_train():
    model = tie_(stack_net(), TieConfig(strategy="all", rank=2, scope="attn"))
    model(torch.randn(4, 8)).pow(2).mean().backward()
    shared = model.blocks[0].attn.parametrizations.weight.original
    relaxed = model.blocks[3].attn.parametrizations.weight[0]
    assert shared.grad is not None and shared.grad.abs().sum() > 0
    assert relaxed.lora_A.grad is not None and relaxed.lora_B.grad is not None


def test_zero_residual_member_can_still_learn():
    # with init=first the source block's residual is zero: A starts random, B at zero
    model = tie_(stack_net(), TieConfig(strategy="all", rank=2, scope="attn", init="first"))
    source = model.blocks[0].attn.parametrizations.weight[0]
    assert source.lora_B.abs().sum() == 0 and source.lora_A.abs().sum() > 0


def test_merge_gives_plain_dense_weights():
    model = stack_net()
    x = torch.randn(3, 8)
    tie_(model, TieConfig(strategy="sequence", unique=2, rank=4, init="mean"))
    relaxed_out = model(x)
    merge_(model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert find_ties(model) == [] and verify_ties(model) == []
    assert torch.allclose(model(x), relaxed_out, atol=1e-6)
    assert type(model.blocks[0].attn).__name__ == "Linear"


def test_merge_keeps_plain_ties():
    model = tie_(stack_net(), TieConfig(strategy="all", scope="attn"))
    tie_(model, TieConfig(strategy="all", scope="ffn", rank=2))
    merge_(model)
    assert model.blocks[0].attn.weight is model.blocks[4].attn.weight
    assert model.blocks[0].ffn[0].weight is not model.blocks[4].ffn[0].weight


def test_relaxed_weight_refuses_tying_again():
    model = tie_(stack_net(), TieConfig(strategy="all", rank=2, scope="attn"))
    with pytest.raises(TieError, match="already a shared weight.*merge_ first"):
        tie_(model, TieConfig(groups=[["blocks.0.attn.weight", "blocks.1.attn.weight"]]))
