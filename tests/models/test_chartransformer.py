"""The char transformer's blocks are a stack that every tie strategy finds; the study's GRU
runs any length, its per-step twin only its own."""

from __future__ import annotations

import pytest
import torch

import weightshare as ws
from weightshare.errors import ConfigError, ShapeError
from weightshare.models.charlm import CharGRU
from weightshare.models.chartransformer import CharTransformer
from weightshare.study import lm


def test_transformer_ties_through_the_project():
    torch.manual_seed(0)
    size = lm.LMSize(dim=16, layers=6, heads=2, context=8)
    counts = {v: ws.inspect(lm.build(v, 20, size, 0)).unique_params
              for v in ("untied", "cycle3", "all", "relaxed-r2", "shallow1", "shallow3")}
    assert counts["all"] == counts["shallow1"] < counts["relaxed-r2"] < counts["cycle3"]
    assert counts["cycle3"] == counts["shallow3"] < counts["untied"]
    model = lm.build("cycle3", 20, size, 0)
    assert model.blocks[0].attn["qkv"].weight is model.blocks[3].attn["qkv"].weight
    relaxed = lm.build("relaxed-r2", 20, size, 0)
    plain = lm.build("all", 20, size, 0)
    ids = torch.randint(0, 20, (2, 8))
    # the deltas start at zero: the relaxed model starts as the all-shared one
    assert torch.allclose(relaxed(ids), plain(ids), atol=1e-6)


def test_transformer_checks():
    with pytest.raises(ConfigError, match="multiple of heads"):
        CharTransformer(10, dim=10, heads=3)
    with pytest.raises(ShapeError, match="windows of 4"):
        CharTransformer(10, dim=8, layers=1, heads=2, context=4)(torch.zeros(1, 5).long())


def test_gru_and_its_twin():
    from weightshare.study.zoo import gru_pair

    gru, twin = gru_pair(12, 4, 8, 5, seed=0)
    assert gru(torch.zeros(2, 17).long()).shape == (2, 17, 12)
    assert twin(torch.zeros(2, 5).long()).shape == (2, 5, 12)
    with pytest.raises(ws.WeightShareError):
        twin(torch.zeros(2, 6).long())
    assert isinstance(gru, CharGRU)
