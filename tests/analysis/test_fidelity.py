"""Fidelity metrics on tiny in-file models: the math, not a real checkpoint."""

from __future__ import annotations

import copy
import math
import zlib
from types import SimpleNamespace

import pytest
import torch

from weightshare.analysis.fidelity import (
    accuracy,
    embed,
    embedding_fidelity,
    perplexity,
    relative_output_error,
    sentence_fidelity,
)
from weightshare.data.sentences import eval_sentences
from weightshare.errors import DataError

VOCAB = 97


class ToyTokenizer:
    """Hashes words to ids, pads right, returns what a transformers tokenizer returns."""

    def __call__(self, texts, padding=True, truncation=True, max_length=128, return_tensors="pt"):
        rows = [[zlib.crc32(w.encode()) % (VOCAB - 1) + 1 for w in t.lower().split()]
                [:max_length] or [1] for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}


class ToyEncoder(torch.nn.Module):
    """Embedding + one linear layer; returns a ModelOutput-like object."""

    def __init__(self, dim: int = 32, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embedding = torch.nn.Embedding(VOCAB, dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.dropout = torch.nn.Dropout(0.5)

    def forward(self, input_ids, attention_mask=None):
        hidden = self.dropout(self.proj(self.embedding(input_ids)))  # (B, T, D)
        return SimpleNamespace(last_hidden_state=hidden)


def perturbed(model: torch.nn.Module, scale: float, seed: int = 1) -> torch.nn.Module:
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * p.std())
    return other


SENTENCES = eval_sentences()[:96]


def test_embed_shape_order_and_padding():
    model, tok = ToyEncoder(), ToyTokenizer()
    emb = embed(model, tok, SENTENCES, batch_size=7)
    assert emb.shape == (96, 32) and emb.dtype == torch.float32
    # Each row equals the sentence embedded alone: order restored, padding masked out.
    for i in (0, 5, 95):
        torch.testing.assert_close(emb[i], embed(model, tok, [SENTENCES[i]])[0])


def test_embed_restores_training_mode():
    model = ToyEncoder().train()
    first = embed(model, ToyTokenizer(), SENTENCES[:8])
    assert model.training and model.dropout.training
    torch.testing.assert_close(first, embed(model, ToyTokenizer(), SENTENCES[:8]))  # no dropout


def test_embed_rejects_bad_input():
    with pytest.raises(DataError, match="non-empty list"):
        embed(ToyEncoder(), ToyTokenizer(), [])
    with pytest.raises(DataError, match="non-empty list"):
        embed(ToyEncoder(), ToyTokenizer(), "a single string")


def test_embedding_fidelity_identical_and_by_hand():
    emb = torch.randn(10, 8)
    assert embedding_fidelity(emb, emb.clone()) == pytest.approx(
        {"cosine_mean": 1.0, "cosine_min": 1.0, "top1_agreement": 1.0})
    # Reference: 0 and 1 are neighbours, 2 and 3 are neighbours. The candidate flips 2's
    # direction, so 2's neighbour and 3's neighbour change: agreement 2 of 4.
    ref = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    cand = ref.clone()
    cand[2] = torch.tensor([0.8, -0.2])
    result = embedding_fidelity(ref, cand)
    assert result["top1_agreement"] == 0.5
    expected_cos = torch.nn.functional.cosine_similarity(ref[2], cand[2], dim=0).item()
    assert result["cosine_min"] == pytest.approx(expected_cos)
    assert result["cosine_mean"] == pytest.approx((3 + expected_cos) / 4)


def test_embedding_fidelity_is_scale_invariant():
    emb = torch.randn(20, 6)
    assert embedding_fidelity(emb, 3.0 * emb)["cosine_min"] == pytest.approx(1.0)


@pytest.mark.parametrize(("ref", "cand", "match"), [
    (torch.randn(4, 3), torch.randn(5, 3), "equal shapes"),
    (torch.randn(4), torch.randn(4), "equal shapes"),
    (torch.randn(1, 3), torch.randn(1, 3), "at least 2"),
    (torch.randn(3, 3), torch.full((3, 3), math.nan), "NaN"),
])
def test_embedding_fidelity_errors(ref, cand, match):
    with pytest.raises(DataError, match=match):
        embedding_fidelity(ref, cand)


def test_sentence_fidelity_identical_then_perturbed():
    model, tok = ToyEncoder(), ToyTokenizer()
    same = sentence_fidelity(model, copy.deepcopy(model), tok, SENTENCES)
    assert same["cosine_mean"] == pytest.approx(1.0)
    assert same["top1_agreement"] == 1.0 and same["num_sentences"] == 96
    small = sentence_fidelity(model, perturbed(model, 0.05), tok, SENTENCES)
    large = sentence_fidelity(model, perturbed(model, 1.0), tok, SENTENCES)
    assert 1.0 > small["cosine_mean"] > large["cosine_mean"]
    assert small["cosine_min"] < 1.0
    assert large["top1_agreement"] < 1.0


def test_sentence_fidelity_defaults_and_cached_reference():
    model, tok = ToyEncoder(), ToyTokenizer()
    candidate = perturbed(model, 0.3)
    default = sentence_fidelity(model, candidate, tok)
    assert default["num_sentences"] == len(eval_sentences())
    reference = embed(model, tok, eval_sentences())
    assert sentence_fidelity(model, candidate, tok, reference_emb=reference) == default
    with pytest.raises(DataError, match="rows"):
        sentence_fidelity(model, candidate, tok, SENTENCES, reference_emb=reference)


def test_relative_output_error():
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    x = torch.randn(32, 6)
    assert relative_output_error(net, copy.deepcopy(net), x) == {
        "relative_error": 0.0, "max_abs_error": 0.0}
    other = perturbed(net, 0.1)
    result = relative_output_error(net, other, x)
    with torch.no_grad():
        y, z = net(x), other(x)
    assert result["relative_error"] == pytest.approx(float((z - y).norm() / y.norm()), rel=1e-5)
    assert result["max_abs_error"] > 0


class TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 3)

    def forward(self, a, b):
        return {"out": self.linear(a) + b, "aux": None}


def test_relative_output_error_tuple_inputs_and_dict_outputs():
    net = TwoInputs()
    inputs = (torch.randn(4, 3), torch.randn(4, 3))
    assert relative_output_error(net, net, inputs)["relative_error"] == 0.0
    assert relative_output_error(net, perturbed(net, 0.5), inputs)["relative_error"] > 0
    kwargs = {"a": inputs[0], "b": inputs[1]}
    assert relative_output_error(net, net, kwargs)["relative_error"] == 0.0


def test_relative_output_error_zero_reference_and_shape_mismatch():
    zero = torch.nn.Linear(3, 2, bias=False)
    torch.nn.init.zeros_(zero.weight)
    x = torch.randn(5, 3)
    assert relative_output_error(zero, zero, x)["relative_error"] == 0.0
    assert relative_output_error(zero, torch.nn.Linear(3, 2), x)["relative_error"] == math.inf
    with pytest.raises(DataError, match="shape"):
        relative_output_error(zero, torch.nn.Linear(3, 4), x)


class UniformLM(torch.nn.Module):
    def forward(self, ids, attention_mask=None):
        return SimpleNamespace(logits=torch.zeros(*ids.shape, VOCAB))


class CopyNextLM(torch.nn.Module):
    """Knows the sequence 0, 1, 2, ...: predicts token t + 1 with near certainty."""

    def forward(self, ids):
        return torch.nn.functional.one_hot((ids + 1) % VOCAB, VOCAB).float() * 50.0


def test_perplexity_uniform_equals_vocab_size():
    ids = torch.randint(0, VOCAB, (5, 12))
    assert perplexity(UniformLM(), ids, batch_size=2) == pytest.approx(VOCAB)
    assert perplexity(UniformLM(), ids[0]) == pytest.approx(VOCAB)  # 1-D input
    mask = torch.ones_like(ids)
    mask[:, 8:] = 0
    assert perplexity(UniformLM(), ids, attention_mask=mask) == pytest.approx(VOCAB)


def test_perplexity_perfect_model_is_one_and_mask_counts():
    ids = torch.arange(20).repeat(3, 1)
    assert perplexity(CopyNextLM(), ids) == pytest.approx(1.0, abs=1e-6)
    broken = ids.clone()
    broken[:, 10:] = 0  # wrong continuations after position 10
    assert perplexity(CopyNextLM(), broken) > 2.0


@pytest.mark.parametrize("ids", [torch.tensor([[3]]), torch.randn(2, 5)])
def test_perplexity_rejects_bad_ids(ids):
    with pytest.raises(DataError, match="token_ids"):
        perplexity(UniformLM(), ids)


def test_perplexity_rejects_all_masked():
    ids = torch.randint(0, VOCAB, (2, 6))
    mask = torch.zeros_like(ids)
    mask[:, 0] = 1
    with pytest.raises(DataError, match="no token"):
        perplexity(UniformLM(), ids, attention_mask=mask)


def test_accuracy():
    net = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.eye(3))
    x = torch.eye(3).repeat(4, 1)
    assert accuracy(net, x, torch.tensor([0, 1, 2] * 4), batch_size=5) == 1.0
    assert accuracy(net, x, torch.tensor([0, 0, 0] * 4)) == pytest.approx(1 / 3)
    with pytest.raises(DataError, match="labels"):
        accuracy(net, x, torch.tensor([0]))
