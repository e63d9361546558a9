"""Tying: tie_ over strategies, scopes, layers, inits, explicit groups and embeddings;
untie_; find_ties; and every error, each leaving the model untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.zoo import (
    RNNNet,
    StackLM,
    bert_inputs,
    mlp,
    resnet_like,
    stack_net,
    tiny_bert,
    unique_numel,
)
from weightshare.core.ties import find_ties, get_tie_map
from weightshare.errors import SelectionError, TieError
from weightshare.methods.tie import (
    TieConfig,
    TieGroup,
    assign,
    find_blocks,
    find_embedding_pair,
    tie_,
    untie_,
)

STRATEGIES = [("all", None, 1), ("sequence", 3, 3), ("cycle", 3, 3), ("cycle_rev", 3, 3),
              ("repeat", 3, 3), ("cycle", 2, 2)]


@pytest.mark.parametrize("strategy,unique,m", STRATEGIES)
def test_every_strategy_ties_blocks_by_its_assignment(strategy, unique, m):
    model = stack_net()
    per_block = unique_numel(model.blocks[0])
    before = unique_numel(model)
    tie_(model, TieConfig(strategy=strategy, unique=unique))
    slots = assign(strategy, 6, m)
    for i in range(6):
        for j in range(6):
            same = model.blocks[i].attn.weight is model.blocks[j].attn.weight
            assert same == (slots[i] == slots[j])
            assert (model.blocks[i].norm.bias is model.blocks[j].norm.bias) == same
    assert unique_numel(model) == before - (6 - m) * per_block
    assert model(torch.randn(2, 8)).shape == (2, 4)


def test_scope_ties_only_matching_submodules():
    model = stack_net()
    tie_(model, TieConfig(strategy="all", scope="attn|norm"))
    assert model.blocks[0].attn.weight is model.blocks[5].attn.weight
    assert model.blocks[0].norm.weight is model.blocks[5].norm.weight
    assert model.blocks[0].ffn[0].weight is not model.blocks[5].ffn[0].weight


def test_scope_is_searched_in_the_block_relative_name():
    bert = tiny_bert()
    tie_(bert, TieConfig(strategy="all", scope=r"^(intermediate|output)\.dense"))
    layer = bert.encoder.layer
    assert layer[0].output.dense.weight is layer[3].output.dense.weight
    assert layer[0].intermediate.dense.weight is layer[3].intermediate.dense.weight
    assert layer[0].attention.output.dense.weight is not layer[3].attention.output.dense.weight
    assert layer[0].output.LayerNorm.weight is not layer[3].output.LayerNorm.weight
    unanchored = tie_(tiny_bert(), TieConfig(strategy="all", scope=r"output\.dense"))
    layer = unanchored.encoder.layer
    assert layer[0].attention.output.dense.weight is layer[3].attention.output.dense.weight
    assert layer[0].output.dense.weight is layer[3].output.dense.weight


def test_layers_restrict_the_stack():
    model = stack_net()
    tie_(model, TieConfig(strategy="all", layers="2..3", scope="attn"))
    assert [g for g in find_ties(model)] == [["blocks.2.attn.weight", "blocks.3.attn.weight"],
                                             ["blocks.2.attn.bias", "blocks.3.attn.bias"]]


def test_explicit_assignment():
    model = stack_net(n=4)
    tie_(model, TieConfig(assignment=(5, 1, 1, 5), scope="attn"))
    assert model.blocks[0].attn.weight is model.blocks[3].attn.weight
    assert model.blocks[1].attn.weight is model.blocks[2].attn.weight
    assert model.blocks[0].attn.weight is not model.blocks[1].attn.weight


def test_init_first_mean_stepwise():
    ref = stack_net()
    w = [b.attn.weight.detach().clone() for b in ref.blocks]
    first = tie_(stack_net(), TieConfig(strategy="cycle", unique=3, scope="attn"))
    assert torch.equal(first.blocks[4].attn.weight, w[1])
    mean = tie_(stack_net(), TieConfig(strategy="cycle", unique=3, scope="attn", init="mean"))
    assert torch.allclose(mean.blocks[4].attn.weight, (w[1] + w[4]) / 2)
    step = tie_(stack_net(), TieConfig(strategy="cycle", unique=3, scope="attn", init="stepwise"))
    # slot s starts from block s * N / M: blocks 0, 2, 4
    assert torch.equal(step.blocks[3].attn.weight, w[0])
    assert torch.equal(step.blocks[1].attn.weight, w[2])
    assert torch.equal(step.blocks[5].attn.weight, w[4])


def test_group_by_pattern_with_chosen_source():
    model = stack_net()
    src = model.blocks[2].attn.weight.detach().clone()
    tie_(model, TieConfig(groups=[TieGroup(r"blocks\.[024]\.attn", source="blocks.2.attn")]))
    assert model.blocks[0].attn.weight is model.blocks[4].attn.weight
    assert torch.equal(model.blocks[0].attn.weight, src)
    # the tie map names the first registration as source: one object, whichever name
    assert get_tie_map(model)["blocks.2.attn.weight"] == "blocks.0.attn.weight"


def test_group_of_parameter_names_and_modules():
    model = stack_net()
    tie_(model, TieConfig(groups=[["blocks.0.ffn.0.bias", "blocks.1.ffn.0.bias"],
                                  ["blocks.3.ffn", "blocks.4.ffn"]]))
    assert model.blocks[0].ffn[0].bias is model.blocks[1].ffn[0].bias
    assert model.blocks[3].ffn[2].weight is model.blocks[4].ffn[2].weight
    assert model.blocks[0].ffn[0].weight is not model.blocks[1].ffn[0].weight


def test_stacked_lstm_layers_tie():
    model = RNNNet()
    tie_(model, TieConfig(strategy="all"))
    assert model.rnn.weight_hh_l1 is model.rnn.weight_hh_l3
    assert model.rnn.weight_ih_l0 is not model.rnn.weight_ih_l1
    assert model(torch.randn(2, 5, 8)).shape == (2, 5, 4)


def test_resnet_stage_ties_identical_blocks():
    model = resnet_like()
    tie_(model, TieConfig(strategy="all"))
    assert model[1][1].conv.weight is model[1][3].conv.weight
    assert model(torch.randn(1, 3, 6, 6)).shape == (1, 8, 6, 6)


def test_embedding_tying_plain_lm():
    model = StackLM()
    assert find_embedding_pair(model) == ("emb.weight", "head.weight")
    before = unique_numel(model)
    tie_(model, TieConfig(embeddings=True))
    assert model.head.weight is model.emb.weight
    assert unique_numel(model) == before - 50 * 16
    assert model(torch.tensor([[1, 2, 3]])).shape == (1, 3, 50)


def test_embedding_tying_transformers_keeps_config_in_step():
    model = tiny_bert(cls="BertForMaskedLM", tie_word_embeddings=False)
    emb, dec = model.bert.embeddings.word_embeddings, model.cls.predictions.decoder
    assert dec.weight is not emb.weight
    tie_(model, TieConfig(embeddings=True))
    assert dec.weight is emb.weight and model.config.tie_word_embeddings is True
    untie_(model)
    assert dec.weight is not emb.weight and model.config.tie_word_embeddings is False
    assert torch.equal(dec.weight, emb.weight)


def test_find_ties_sees_module_registered_twice_and_shared_storage():
    lin = nn.Linear(3, 3)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    assert find_ties(model) == [["0.weight", "2.weight"], ["0.bias", "2.bias"]]
    other = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False))
    other[1].weight = nn.Parameter(other[0].weight.data)  # two objects, one storage
    assert find_ties(other) == [["0.weight", "1.weight"]]


def test_untie_gives_every_alias_its_own_copy():
    model = stack_net()
    x = torch.randn(2, 8)
    tie_(model, TieConfig(strategy="all"))
    lin = nn.Linear(8, 16)
    model.inp = nn.Sequential(lin, lin)  # a module registered twice is split too
    model.inp.forward = lambda x: lin(x)
    ref = model(x)
    untie_(model)
    assert find_ties(model) == [] and get_tie_map(model) == {}
    assert model.inp[0] is not model.inp[1]
    assert torch.allclose(model(x), ref)


def test_tie_map_records_aliases():
    model = tie_(stack_net(n=2), TieConfig(strategy="all", scope="attn"))
    assert get_tie_map(model) == {"blocks.1.attn.weight": "blocks.0.attn.weight",
                                  "blocks.1.attn.bias": "blocks.0.attn.bias"}


# ------------------------------------------------------------------ errors


def _state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _fails(model: nn.Module, config: TieConfig, error: type, match: str) -> None:
    before, ties = _state(model), find_ties(model)
    with pytest.raises(error, match=match) as info:
        tie_(model, config)
    assert "\n" not in str(info.value)
    after = _state(model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before if not before[k].is_meta)
    assert find_ties(model) == ties  # nothing changed


def test_strategy_on_model_without_repeated_blocks():
    _fails(mlp(), TieConfig(strategy="cycle"), TieError, "no repeated blocks")


def test_unique_larger_than_stack():
    _fails(stack_net(), TieConfig(strategy="cycle", unique=7), TieError,
           "unique=7 is larger than stack 'blocks'")


def test_repeat_not_dividing():
    _fails(stack_net(), TieConfig(strategy="repeat", unique=2), TieError, "N = 2M")


def test_rank_too_large():
    _fails(stack_net(), TieConfig(strategy="all", rank=17), TieError,
           r"rank 17 is larger than blocks\.\d\.attn\.weight \(16, 16\) allows \(at most 16\)")


def test_relaxed_lstm_refused():
    _fails(RNNNet(), TieConfig(strategy="all", rank=2), TieError, "recurrent")


def test_layers_outside_stack():
    _fails(resnet_like(), TieConfig(strategy="all", layers="0..1"), TieError,
           r"layers \[0\] are not blocks of stack '1\[1:4\]'")


def test_scope_matching_nothing():
    _fails(stack_net(), TieConfig(strategy="all", scope="attention"), SelectionError,
           "matches no parameter of blocks.0")


def test_shape_mismatch_names_both():
    _fails(stack_net(), TieConfig(groups=[["blocks.0.attn.weight", "blocks.0.ffn.0.weight"]]),
           TieError, r"blocks.0.attn.weight \(16, 16\) and blocks.0.ffn.0.weight \(32, 16\)")


def test_module_type_mismatch_names_both():
    _fails(stack_net(), TieConfig(groups=[["blocks.0.attn", "blocks.0.norm"]]), TieError,
           r"blocks.0.attn \(Linear\) and blocks.0.norm \(LayerNorm\)")


def test_dtype_mismatch_refused():
    model = stack_net()
    model.blocks[1].half()  # no longer identical: the stack is blocks 2..5
    assert [len(s) for s in find_blocks(model)] == [4]
    _fails(model, TieConfig(groups=[["blocks.0.attn", "blocks.1.attn"]]), TieError,
           "float32.*float16.*two dtypes or devices")


def test_device_mismatch_refused():
    model = stack_net()
    model.blocks[1].attn.to("meta")
    _fails(model, TieConfig(strategy="all", scope="attn"), TieError, "cpu.*meta")


def test_group_errors():
    _fails(stack_net(), TieConfig(groups=[r"nothing\.here"]), SelectionError, "matches 0")
    _fails(stack_net(), TieConfig(groups=[["blocks.0.attn", "nope"]]), SelectionError,
           "neither a module nor a parameter")
    _fails(stack_net(), TieConfig(groups=[TieGroup(r"blocks\.[01]\.attn", source="x")]),
           SelectionError, "source 'x' is not one of its members")


def test_tied_twice_refused():
    _fails(stack_net(), TieConfig(strategy="all", scope="attn",
                                  groups=[["blocks.0.attn", "blocks.1.attn"]]), TieError,
           "tied twice")


def test_no_embedding_pair():
    _fails(stack_net(), TieConfig(embeddings=True), TieError, "no input embedding")


def test_bert_tie_runs():
    bert = tiny_bert()
    inputs = bert_inputs()
    tie_(bert, TieConfig(strategy="cycle_rev", unique=2))
    assert len(find_ties(bert)) == 16 * 2
    assert bert(**inputs).last_hidden_state.shape == (3, 9, 32)
