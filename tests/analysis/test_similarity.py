"""Redundancy analysis (similarity, tie plans, heatmap) and distillation."""

from __future__ import annotations

import copy

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
from weightshare.core.ties import find_ties
from weightshare.errors import ConfigError, DataError
from weightshare.methods.tie import TieConfig, tie_
from weightshare.train.distill import cosine_loss, distill_


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


def test_distill_recovers_a_tied_model():
    teacher = stack_net()
    student = tie_(copy.deepcopy(teacher), TieConfig(strategy="cycle", unique=2, rank=2))
    data = [torch.randn(32, 8) for _ in range(4)]
    log: list[dict] = []
    out = distill_(student, teacher, data, steps=60, lr=3e-3, history=log, progress=False)
    assert out is student and len(log) == 60
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]
    assert find_ties(student) != []  # still tied after training
    assert student.training is teacher.training is False


def test_distill_transformers_dicts_and_time_budget():
    teacher = tiny_bert()
    student = tie_(copy.deepcopy(teacher), TieConfig(strategy="all"))
    log: list[dict] = []
    distill_(student, teacher, [bert_inputs(0), bert_inputs(1)], steps=None, time_budget=0.5,
             lr=1e-3, history=log)
    assert len(log) >= 1 and log[-1]["seconds"] < 5


class WordTokenizer:
    """Sentences -> ids of their words (a test stand-in for a transformers tokenizer)."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.calls: list[list[str]] = []

    def __call__(self, texts, **_):
        self.calls.append(list(texts))
        ids = [[self.vocab.setdefault(w, len(self.vocab) % 50) for w in t.split()] for t in texts]
        width = max(len(i) for i in ids)
        return {"input_ids": torch.tensor([i + [0] * (width - len(i)) for i in ids]),
                "attention_mask": torch.tensor([[1] * len(i) + [0] * (width - len(i))
                                                for i in ids])}


class BagOfWords(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(50, 8)
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, input_ids, attention_mask):
        return self.proj(self.emb(input_ids))


def test_distill_regroups_sentences_every_pass():
    sentences = [f"s{i} w{i % 3} x y" for i in range(12)]
    tok = WordTokenizer()
    teacher, student = BagOfWords(), BagOfWords()
    distill_(student, teacher, sentences, steps=6, lr=1e-3, tokenizer=tok, batch_size=4)
    passes = [sum(tok.calls[k:k + 3], []) for k in (0, 3)]
    assert all(sorted(p) == sorted(sentences) for p in passes)  # each pass sees every sentence once
    assert [set(b) for b in tok.calls[:3]] != [set(b) for b in tok.calls[3:6]]  # regrouped
    tok.calls.clear()
    distill_(student, teacher, sentences, steps=6, lr=1e-3, tokenizer=tok, batch_size=4,
             augment=True)
    seen = sum(tok.calls, [])
    assert len(seen) == 24 and any(s not in sentences for s in seen)  # variants were fed


@pytest.mark.parametrize(("schedule", "last"), [("cosine", 0.0), ("linear", 0.0),
                                                ("constant", 1.0)])
def test_distill_learning_rate_schedules(schedule, last):
    teacher, student = stack_net(), stack_net()
    log: list[dict] = []
    distill_(student, teacher, torch.randn(16, 8), steps=100, lr=1e-3, schedule=schedule,
             history=log)
    assert 0.85e-3 < max(r["lr"] for r in log) <= 1e-3  # reached after the warm-up
    assert log[-1]["lr"] == pytest.approx(last * 1e-3, abs=1e-6 + 0.05e-3 * (last == 0.0))


def test_cosine_loss_is_zero_for_equal_outputs():
    x = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert float(cosine_loss(x, x, mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(cosine_loss(x, -x, mask)) == pytest.approx(4.0, abs=1e-5)


def test_distill_errors():
    model = stack_net()
    with pytest.raises(ConfigError, match="steps=N or time_budget"):
        distill_(model, model, torch.randn(2, 8), steps=None)
    with pytest.raises(ConfigError, match="unknown distillation loss"):
        distill_(model, model, torch.randn(2, 8), loss="l1")
    with pytest.raises(DataError, match="no tokenizer"):
        distill_(model, model, ["a sentence"], steps=1)
    with pytest.raises(ConfigError, match="unknown learning-rate schedule"):
        distill_(model, model, torch.randn(2, 8), schedule="step")
    with pytest.raises(ConfigError, match="augment=True needs sentences"):
        distill_(model, model, torch.randn(2, 8), augment=True)
    with pytest.raises(ConfigError, match="batch_size must be"):
        distill_(model, model, ["a"], tokenizer=WordTokenizer(), batch_size=0)
