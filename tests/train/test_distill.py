"""Distillation toward the original, its schedule, and the training hooks."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from tests.zoo import bert_inputs, stack_net, tiny_bert
from weightshare.core.ties import find_ties
from weightshare.errors import ConfigError, DataError
from weightshare.methods.tie import TieConfig, tie_
from weightshare.train import distill as distill_module
from weightshare.train.distill import cosine_loss, distill_, lr_factor
from weightshare.train.hooks import StepInfo


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


def test_distill_transformers_dicts_and_time_budget(monkeypatch):
    # a clock that ticks 0.1 s per reading: the budget ends the run after a known number of
    # steps, whatever the machine's speed
    ticks = itertools.count()
    monkeypatch.setattr(distill_module.time, "perf_counter", lambda: 0.1 * next(ticks))
    teacher = tiny_bert()
    student = tie_(copy.deepcopy(teacher), TieConfig(strategy="all"))
    log: list[dict] = []
    distill_(student, teacher, [bert_inputs(0), bert_inputs(1)], steps=None, time_budget=0.5,
             lr=1e-3, history=log)
    assert 1 <= len(log) <= 3 and all(r["seconds"] < 0.5 for r in log)


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


@pytest.mark.parametrize(("schedule", "mid", "last"), [("cosine", 0.5, 0.0),
                                                       ("linear", 0.5, 0.0),
                                                       ("constant", 1.0, 1.0)])
def test_learning_rate_schedules(schedule, mid, last):
    assert lr_factor(schedule, 0.0) == 1.0
    assert lr_factor(schedule, 0.5) == pytest.approx(mid)
    assert lr_factor(schedule, 1.0) == pytest.approx(last, abs=1e-12)
    assert lr_factor(schedule, 2.0) == lr_factor(schedule, 1.0)  # clamped


def test_distill_follows_the_schedule_in_steps():
    teacher, student = stack_net(), stack_net()
    log: list[dict] = []
    distill_(student, teacher, torch.randn(16, 8), steps=40, lr=1e-3, schedule="linear",
             history=log)
    warmup = 4  # min(10, steps // 10)
    for record in log[warmup:]:
        done = (record["step"] - 1) / 40
        assert record["lr"] == pytest.approx(1e-3 * lr_factor("linear", done))


def test_regularizers_add_to_the_loss_and_callbacks_can_stop():
    teacher, student, x = stack_net(seed=0), stack_net(seed=1), torch.randn(16, 8)
    plain: list[dict] = []
    distill_(copy.deepcopy(student), teacher, x, steps=3, history=plain)
    seen: list[StepInfo] = []
    regularized: list[dict] = []
    distill_(student, teacher, x, steps=10, history=regularized,
             regularizers=[lambda model: torch.tensor(5.0)],
             callbacks=[lambda info: seen.append(info) or info.step < 3])
    assert len(regularized) == 3 and [i.step for i in seen] == [1, 2, 3]
    assert regularized[0]["loss"] == pytest.approx(plain[0]["loss"] + 5.0, rel=1e-5)
    assert seen[0].model is student


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


class Encoder(BagOfWords):
    """BagOfWords with an encoder's output (``last_hidden_state``); counts its calls."""

    calls = 0

    def forward(self, input_ids, attention_mask):
        from types import SimpleNamespace

        type(self).calls += 1
        return SimpleNamespace(last_hidden_state=super().forward(input_ids, attention_mask))


def test_sentence_teacher_cache_runs_the_teacher_once_per_sentence():
    """Sentences are regrouped every pass, so the teacher's output is cached per sentence:
    it runs in the first pass only, and training is the same as without the cache."""
    sentences = [f"s{i} w{i % 3} x y" + " z" * (i % 4) for i in range(12)]
    torch.manual_seed(0)
    teacher, start = Encoder(), Encoder()
    runs = []
    for cache in (True, False):
        student = copy.deepcopy(start)
        Encoder.calls = 0
        distill_(student, teacher, sentences, steps=9, lr=1e-2, tokenizer=WordTokenizer(),
                 batch_size=4, cache_teacher=cache)
        runs.append((Encoder.calls, student))
    (cached_calls, cached), (plain_calls, plain) = runs
    assert cached_calls == 9 + 3 and plain_calls == 9 + 9  # student 9, teacher 3 vs 9
    for a, b in zip(cached.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b)
