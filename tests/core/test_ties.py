"""The tie machinery sees ties of shared weights, and save refuses a model whose recorded
ties have split."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import weightshare as ws
from tests.zoo import TinyLM
from weightshare.core.ties import get_tie_map
from weightshare.errors import SaveError


def clustered_lm() -> TinyLM:
    torch.manual_seed(0)
    lm = TinyLM()
    ws.cluster_(lm, ws.ClusterConfig(bits=3, min_size=0))
    ws.retie_(lm)  # record the ties the object graph shows
    return lm


def test_a_codebook_tie_is_recorded_by_the_names_users_know():
    lm = clustered_lm()
    assert get_tie_map(lm)["head.weight"] == "emb.weight"
    assert ws.verify_ties(lm) == []


def test_removing_an_alias_parametrization_is_reported():
    lm = clustered_lm()
    # the default leave_parametrized=True writes the dense weight into the shared codebook
    parametrize.remove_parametrizations(lm.head, "weight")
    kinds = {p.kind for p in ws.verify_ties(lm)}
    assert {"split", "corrupted"} <= kinds


def test_save_refuses_a_split_tie_and_retie_restores_it(tmp_path):
    lm = clustered_lm()
    # split by hand: the head gets a plain copy of the dense weight
    parametrize.remove_parametrizations(lm.head, "weight", leave_parametrized=False)
    lm.head.weight = nn.Parameter(lm.emb.weight.detach().clone())
    with pytest.raises(SaveError, match="head.weight -> emb.weight: split.*retie_"):
        ws.save(lm, tmp_path / "lm.safetensors")
    assert not (tmp_path / "lm.safetensors").exists()
    ws.retie_(lm)
    assert lm.head.parametrizations.weight[0] is lm.emb.parametrizations.weight[0]
    ws.save(lm, tmp_path / "lm.safetensors")
    loaded = ws.load(tmp_path / "lm.safetensors", TinyLM())
    assert ws.find_ties(loaded) == [["emb.weight", "head.weight"]]


def test_untie_gives_a_codebook_tie_two_independent_weights():
    lm = clustered_lm()
    ws.untie_(lm)
    assert ws.find_ties(lm) == []
    a, b = lm.emb.parametrizations.weight, lm.head.parametrizations.weight
    assert a[0] is not b[0] and a.original is not b.original
    assert torch.equal(lm.emb.weight, lm.head.weight)
