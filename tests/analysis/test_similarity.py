"""Redundancy analysis (similarity, tie plans, heatmap) and distillation."""

from __future__ import annotations

import pytest
import torch

from tests.zoo import (
    bert_inputs,
    stack_net,
    tiny_bert,
    unique_numel,
)
from weightshare.analysis.similarity import block_similarity, plot_similarity
from weightshare.analysis.suggest import suggest_plan
from weightshare.errors import ConfigError
from weightshare.methods.tie import tie_


def _twins():
    """Blocks 0 = 3 and 1 = 4 exactly (weights copied); 2 and 5 differ."""
    model = stack_net(n=6)
    with torch.no_grad():
        for a, b in ((0, 3), (1, 4)):
            for pa, pb in zip(model.blocks[a].parameters(), model.blocks[b].parameters()):
                pb.copy_(pa)
    return model


def test_weight_cosine_without_inputs():
    report = block_similarity(_twins())
    cos = report.weight_cosine["block"]
    assert cos.shape == (6, 6)
    assert torch.allclose(cos.diagonal(), torch.ones(6))
    assert cos[0, 3] == pytest.approx(1.0) and cos[0, 2] < 0.9
    assert set(report.scopes) == {"block", "attn", "ffn", "norm"}
    assert report.tie_loss is None and report.output_cka is None


def test_tie_loss_and_cka_with_inputs():
    report = block_similarity(_twins(), inputs=torch.randn(32, 8), loss_scopes="all")
    loss = report.tie_loss["block"]
    assert torch.all(loss.diagonal() == 0)
    assert loss[0, 3] == pytest.approx(0.0, abs=1e-6) and loss[4, 1] == pytest.approx(0, abs=1e-6)
    assert loss[2, 5] > 1e-4
    assert report.output_cka.shape == (6, 6)
    assert set(report.tie_loss) == set(report.scopes)
    assert "tie loss (block)" in report.table()
    assert report.to_dict()["tie_loss"]["attn"][0][0] == 0.0


def test_tie_loss_on_transformers_model():
    report = block_similarity(tiny_bert(), inputs=bert_inputs(), window=1)
    loss = report.tie_loss["block"]
    assert torch.isnan(loss[0, 3]) and loss[0, 1] > 0  # window=1: neighbours only
    assert set(report.scopes) == {"block", "attention", "intermediate", "output"}


def test_suggest_unique_pairs_the_twins():
    model = _twins()
    plan = suggest_plan(model, unique=4, inputs=torch.randn(32, 8))
    assert sorted((a, s) for _, a, s, _ in plan.ties) == [(3, 0), (4, 1)]
    assert plan.measured_loss == pytest.approx(0.0, abs=1e-6)
    x = torch.randn(2, 8)
    ref = model(x)
    tie_(model, plan.config)
    assert torch.allclose(model(x), ref, atol=1e-6)
    assert model.blocks[0].attn.weight is model.blocks[3].attn.weight


def test_suggest_cut_reaches_the_target():
    model = stack_net()
    plan = suggest_plan(model, cut=0.15, inputs=torch.randn(32, 8), recheck=2)
    assert plan.fraction_saved >= 0.15
    before = unique_numel(model)
    tie_(model, plan.config)
    assert unique_numel(model) == before - plan.params_saved
    assert "parameters saved" in plan.describe()
    assert plan.to_dict()["config"]["groups"]


def test_suggest_without_inputs_uses_weight_cosine():
    plan = suggest_plan(_twins(), unique=4)
    assert plan.measure == "1 - weight_cosine" and plan.measured_loss is None
    assert sorted((a, s) for _, a, s, _ in plan.ties) == [(3, 0), (4, 1)]


def test_suggest_errors():
    with pytest.raises(ConfigError, match="exactly one target"):
        suggest_plan(stack_net())
    with pytest.raises(ConfigError, match="cut must be a fraction"):
        suggest_plan(stack_net(), cut=1.5)


def test_plot_similarity_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    report = block_similarity(stack_net(n=3), inputs=torch.randn(8, 8))
    path = plot_similarity(report, str(tmp_path / "sim.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
