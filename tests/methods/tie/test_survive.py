"""Ties survive: .to(), deepcopy, state_dict / load_state_dict, meta-device init + to_empty +
retie_, optimizers; verify_ties reports the ties that split; codebooks on tied weights."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tests.zoo import (
    StackNet,
    bert_inputs,
    stack_net,
    tiny_bert,
    unique_numel,
)
from weightshare.core.ties import find_ties, get_tie_map, verify_ties
from weightshare.errors import TieError
from weightshare.methods.codebook.weight import attach_codebook
from weightshare.methods.tie import TieConfig, retie_, tie_

CONFIGS = [TieConfig(strategy="cycle", unique=2),
           TieConfig(strategy="sequence", unique=3, scope="attn", rank=4, init="mean")]


def _same_ties(a: nn.Module, b: nn.Module) -> None:
    assert find_ties(a) == find_ties(b) != []


@pytest.mark.parametrize("config", CONFIGS, ids=["plain", "relaxed"])
def test_deepcopy_keeps_ties(config):
    model = tie_(stack_net(), config)
    clone = copy.deepcopy(model)
    _same_ties(model, clone)
    assert clone.blocks[0].attn.weight is not model.blocks[0].attn.weight
    x = torch.randn(2, 8)
    assert torch.equal(clone(x), model(x))
    assert verify_ties(clone) == []


@pytest.mark.parametrize("config", CONFIGS, ids=["plain", "relaxed"])
def test_to_dtype_keeps_ties(config):
    model = tie_(stack_net(), config)
    model.to(torch.float64)
    assert model.blocks[0].attn.weight.dtype == torch.float64
    assert model.blocks[0].ffn[0].weight.dtype == torch.float64
    assert verify_ties(model) == [] and len(find_ties(model)) > 0
    model.to("cpu", torch.float32)
    assert verify_ties(model) == []


@pytest.mark.parametrize("config", CONFIGS, ids=["plain", "relaxed"])
def test_state_dict_round_trip(config):
    model = tie_(stack_net(seed=1), config)
    fresh = tie_(stack_net(seed=2), config)
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(2, 8)
    assert torch.allclose(fresh(x), model(x))
    assert verify_ties(fresh) == []
    _same_ties(model, fresh)


@pytest.mark.parametrize("config", CONFIGS, ids=["plain", "relaxed"])
def test_load_state_dict_assign_splits_then_retie_restores(config):
    model = tie_(stack_net(seed=1), config)
    fresh = tie_(stack_net(seed=2), config)
    fresh.load_state_dict(model.state_dict(), assign=True)  # new objects per name
    assert {p.kind for p in verify_ties(fresh)} == {"split"}
    retie_(fresh)
    assert verify_ties(fresh) == []
    _same_ties(model, fresh)
    assert unique_numel(fresh) == unique_numel(model)


@pytest.mark.parametrize("config", CONFIGS, ids=["plain", "relaxed"])
def test_meta_init_to_empty_retie(config):
    reference = tie_(stack_net(seed=3), config)
    with torch.device("meta"):
        skeleton = StackNet()
    tie_(skeleton, config)
    skeleton.to_empty(device="cpu")
    assert verify_ties(skeleton) != []  # to_empty builds one tensor per name: ties split
    retie_(skeleton)
    assert verify_ties(skeleton) == []
    skeleton.load_state_dict(reference.state_dict())
    x = torch.randn(2, 8)
    assert torch.allclose(skeleton.eval()(x), reference(x))
    _same_ties(reference, skeleton)


def test_meta_init_transformers_model():
    with torch.device("meta"):
        bert = tiny_bert()
    tie_(bert, TieConfig(strategy="cycle", unique=2))
    bert.to_empty(device="cpu")
    retie_(bert)
    assert verify_ties(bert) == []
    assert bert.encoder.layer[0].attention.self.query.weight is \
        bert.encoder.layer[2].attention.self.query.weight


def test_optimizer_sees_each_shared_tensor_once():
    model = tie_(stack_net(), TieConfig(strategy="all"))
    params = list(model.parameters())
    assert len(params) == len({id(p) for p in params})
    # inp (2) + one block (attn 2, ffn 4, norm 2) + out (2)
    assert len(params) == 2 + 8 + 2
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(4, 8)).pow(2).mean().backward()
    opt.step()
    assert model.blocks[0].attn.weight is model.blocks[5].attn.weight  # still one tensor
    assert len(opt.state) == len(params)


def test_verify_ties_reports_each_kind():
    model = tie_(stack_net(n=2), TieConfig(strategy="all", scope="attn"))
    assert verify_ties(model) == []
    model.blocks[1].attn.weight = nn.Parameter(model.blocks[0].attn.weight.detach().clone())
    model.blocks[1].attn.bias = nn.Parameter(torch.zeros(16))
    problems = {p.alias: p for p in verify_ties(model)}
    assert problems["blocks.1.attn.weight"].kind == "split"
    assert problems["blocks.1.attn.bias"].kind == "diverged"
    text = str(problems["blocks.1.attn.bias"])
    assert "blocks.1.attn.bias -> blocks.0.attn.bias: diverged" in text
    with pytest.raises(TieError, match="2 recorded tie\\(s\\) broken.*retie_"):
        verify_ties(model, strict=True)
    del model.blocks[1].attn
    model.blocks[1].attn = nn.Identity()
    assert {p.kind for p in verify_ties(model)} == {"missing"}


def test_retie_errors():
    model = stack_net()
    with pytest.raises(TieError, match="names parameter.*lacks: nowhere.weight"):
        retie_(model, {"nowhere.weight": "blocks.0.attn.weight"})
    with pytest.raises(TieError, match="shapes differ"):
        retie_(model, {"blocks.1.ffn.0.weight": "blocks.0.attn.weight"})
    with pytest.raises(TieError, match="cycle"):
        retie_(model, {"blocks.1.attn.weight": "blocks.0.attn.weight",
                       "blocks.0.attn.weight": "blocks.1.attn.weight"})
    assert find_ties(model) == []


def test_retie_with_external_tie_map_records_it():
    model = stack_net()
    retie_(model, {"blocks.3.attn.weight": "blocks.1.attn.weight"})
    assert model.blocks[3].attn.weight is model.blocks[1].attn.weight
    assert get_tie_map(model) == {"blocks.3.attn.weight": "blocks.1.attn.weight"}


def test_find_ties_includes_shared_codebook_weights():
    model = tie_(stack_net(n=2), TieConfig(strategy="all", scope="attn"))
    lin = model.blocks[0].attn  # shared modules carry one codebook
    model.blocks[1].attn = lin
    attach_codebook(lin, torch.linspace(-1, 1, 4)[None], torch.zeros(16, 16, dtype=torch.uint8),
                    bits=2)
    groups = find_ties(model)
    assert ["blocks.0.attn.weight", "blocks.1.attn.weight"] in groups


def test_transformers_tied_embeddings_restored_by_retie():
    with torch.device("meta"):
        model = tiny_bert(cls="BertForMaskedLM")
    model.to_empty(device="cpu")
    emb = model.bert.embeddings.word_embeddings
    assert model.cls.predictions.decoder.weight is not emb.weight
    retie_(model)  # config.tie_word_embeddings: transformers' own tie_weights runs
    assert model.cls.predictions.decoder.weight is emb.weight


def test_bert_outputs_survive_state_dict_into_meta_skeleton():
    bert = tie_(tiny_bert(seed=4), TieConfig(strategy="sequence", unique=2, rank=2))
    inputs = bert_inputs()
    with torch.device("meta"):
        skeleton = tiny_bert()
    tie_(skeleton, TieConfig(strategy="sequence", unique=2, rank=2))
    skeleton.to_empty(device="cpu")
    retie_(skeleton)
    skeleton.load_state_dict(bert.state_dict())
    with torch.no_grad():  # non-persistent buffers (position_ids) are not in a state_dict
        for name, buf in bert.named_buffers():
            skeleton.get_buffer(name).copy_(buf)
    ref = bert(**inputs).last_hidden_state
    assert torch.allclose(skeleton.eval()(**inputs).last_hidden_state, ref, atol=1e-6)
