"""Tying: strategies (slot maps), TieConfig validation, repeated-block discovery."""

from __future__ import annotations

import pytest
from torch import nn

from tests.zoo import (
    RNNNet,
    resnet_like,
    stack_net,
    tiny_bert,
)
from weightshare.errors import ConfigError, TieError
from weightshare.methods.tie import TieConfig, TieGroup, assign, find_blocks, select_stack
from weightshare.methods.tie.strategies import normalize, slots, stepwise_sources


@pytest.mark.parametrize("strategy,n,m,expected", [
    ("all", 4, 1, (0, 0, 0, 0)),
    ("sequence", 6, 3, (0, 0, 1, 1, 2, 2)),
    ("sequence", 5, 2, (0, 0, 0, 1, 1)),
    ("sequence", 6, 4, (0, 0, 1, 2, 2, 3)),
    ("cycle", 6, 3, (0, 1, 2, 0, 1, 2)),
    ("cycle", 5, 2, (0, 1, 0, 1, 0)),
    ("cycle_rev", 6, 3, (0, 1, 2, 2, 1, 0)),
    ("cycle_rev", 6, 2, (0, 1, 1, 0, 0, 1)),
    ("repeat", 6, 3, (0, 0, 1, 1, 2, 2)),
    ("sequence", 4, 4, (0, 1, 2, 3)),
])
def test_strategy_assignment(strategy, n, m, expected):
    assert assign(strategy, n, m) == expected
    # slots are numbered in order of first use, every slot is used
    assert normalize(expected) == expected
    assert sorted(set(expected)) == list(range(m))


def test_repeat_needs_two_per_unique_block():
    with pytest.raises(TieError, match="N = 2M"):
        assign("repeat", 6, 2)


@pytest.mark.parametrize("m", [0, 7])
def test_unique_out_of_range(m):
    with pytest.raises(TieError, match="does not fit"):
        assign("cycle", 6, m)


def test_slots_and_stepwise():
    assert slots((0, 1, 0, 2)) == [[0, 2], [1], [3]]
    assert stepwise_sources(6, 3) == (0, 2, 4)
    assert stepwise_sources(6, 1) == (0,)
    assert normalize((2, 0, 2, 1)) == (0, 1, 0, 2)


def test_config_normalises_and_round_trips():
    cfg = TieConfig(strategy="Cycle-Rev", unique=2, layers="1..3", rank="8", init="MEAN",
                    groups=[["a.weight", "b.weight"], r"x\.\d", {"members": "y", "source": "y"}])
    assert cfg.strategy == "cycle_rev" and cfg.layers == (1, 2, 3) and cfg.rank == 8
    assert cfg.init == "mean"
    assert cfg.groups[0] == TieGroup(("a.weight", "b.weight"))
    assert TieConfig.from_dict(cfg.to_dict()) == cfg
    assert "strategy" in TieConfig.help("strategy")
    assert TieConfig(strategy="all").init == "first"
    assert TieConfig(strategy="all", rank=4).init == "mean"  # relaxed: mean by default


@pytest.mark.parametrize("kwargs,match", [
    ({"strategy": "zigzag"}, "unknown tie strategy 'zigzag'"),
    ({"strategy": "all", "unique": 3}, "one unique block"),
    ({"strategy": "cycle", "unique": 0}, "positive number"),
    ({"strategy": "cycle", "init": "random"}, "unknown init"),
    ({"strategy": "cycle", "rank": -1}, "rank must be"),
    ({"strategy": "cycle", "layers": "a..b"}, "layers must look like"),
    ({"strategy": "cycle", "layers": [1, 1]}, "distinct"),
    ({"strategy": "cycle", "scope": "("}, "not a regular expression"),
    ({}, "nothing to tie"),
    ({"scope": "attn", "embeddings": True}, "set strategy too"),
    ({"groups": [["only.one"]]}, "at least 2"),
    ({"groups": [42]}, "a pattern, a list of names"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TieConfig(**kwargs)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown TieConfig key.*'strategie'.*valid keys"):
        TieConfig.from_dict({"strategie": "all"})


def test_find_blocks_stack_of_identical_blocks():
    (stack,) = find_blocks(stack_net())
    assert stack.name == "blocks" and stack.kind == "modules" and len(stack) == 6
    assert stack.blocks[2].fqn("ffn.0.weight") == "blocks.2.ffn.0.weight"
    assert stack.block_class == "Block"


def test_find_blocks_bert():
    stacks = find_blocks(tiny_bert())
    assert [(s.name, len(s)) for s in stacks] == [("encoder.layer", 4)]
    assert "attention.self.query.weight" in stacks[0].blocks[0].relative_names


def test_find_blocks_resnet_stage_skips_first_block():
    stacks = find_blocks(resnet_like())
    assert [(s.name, s.indices) for s in stacks] == [("1[1:4]", (1, 2, 3))]
    assert select_stack(resnet_like(), "1").name == "1[1:4]"


def test_find_blocks_stacked_lstm():
    (stack,) = find_blocks(RNNNet())
    # layer 0 reads 8 inputs, layers 1..3 read 16: the run starts at 1
    assert stack.kind == "rnn" and stack.indices == (1, 2, 3)
    assert dict(stack.blocks[0].params)["weight_ih"] == "rnn.weight_ih_l1"


def test_no_stack_and_unknown_stack():
    with pytest.raises(TieError, match="no repeated blocks"):
        select_stack(nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 4)))
    with pytest.raises(TieError, match="no stack .* 'decoder'.*found: blocks"):
        select_stack(stack_net(), "decoder")
