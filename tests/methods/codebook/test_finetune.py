"""Trained codebooks: codes stay fixed, the NaN guard restores, DKM memory stays bounded."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import weightshare as ws
from tests.zoo import mlp
from weightshare.errors import ConfigError
from weightshare.methods.codebook.dkm import DKMWeight, saved_sizes
from weightshare.methods.codebook.weight import CodebookWeight, iter_codebooks


def clustered(**cfg):
    teacher = mlp()
    student = ws.cluster_(copy.deepcopy(teacher), ws.ClusterConfig(min_size=0, **cfg))
    return teacher, student


def codes_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: w.codes.clone() for name, _m, w, _o in iter_codebooks(model)}


def data() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(32, 32, generator=g) for _ in range(4)]


def test_finetuning_trains_codebooks_and_keeps_codes_fixed():
    teacher, student = clustered(bits=2, scales="per_channel")
    before_codes = codes_of(student)
    cb_before = student[0].parametrizations.weight.original.detach().clone()
    x = torch.cat(data())
    with torch.no_grad():
        err_before = float((student(x) - teacher(x)).pow(2).mean())
    ws.finetune_codebooks_(student, teacher, data(), steps=40, lr=1e-2)
    after = codes_of(student)
    assert all(torch.equal(before_codes[k], after[k]) for k in before_codes)
    assert not torch.equal(cb_before, student[0].parametrizations.weight.original)
    with torch.no_grad():
        assert float((student(x) - teacher(x)).pow(2).mean()) < err_before
    # flags restored: every parameter trainable as before
    assert all(p.requires_grad for p in student.parameters())


def test_reassignment_moves_codes_to_the_nearest_trained_entries():
    teacher, student = clustered(bits=2)
    ws.finetune_codebooks_(student, teacher, data(), steps=10, lr=5e-2, reassign_every=5)
    weight = student[0].parametrizations.weight[0]
    cb = student[0].parametrizations.weight.original.detach()[0]
    dense = teacher[0].weight.detach()
    nearest = (dense.unsqueeze(-1) - cb).abs().argmin(-1)
    # after the last re-assignment (step 10) the codes are the nearest entries
    assert torch.equal(weight.codes.long(), nearest)


def test_nan_guard_restores_the_last_good_codebooks_and_says_so():
    teacher, student = clustered(bits=2)
    snapshots: list[torch.Tensor] = []
    calls = {"n": 0}

    def loss(out, target, batch):
        calls["n"] += 1
        if calls["n"] == 4:  # the 4th step diverges
            return (out - target).pow(2).mean() * float("nan")
        return (out - target).pow(2).mean()

    def remember(info):
        snapshots.append(student[0].parametrizations.weight.original.detach().clone())

    history: list[dict] = []
    with pytest.warns(RuntimeWarning, match="diverged at step 4"):
        ws.finetune_codebooks_(student, teacher, data(), steps=10, lr=1e-2, loss=loss,
                               history=history, callbacks=[remember])
    assert calls["n"] == 4  # training stopped
    restored = student[0].parametrizations.weight.original.detach()
    assert torch.isfinite(restored).all()
    assert torch.equal(restored, snapshots[2])  # the codebook after step 3
    assert {"event": "diverged", "step": 4, "restored_step": 3} in history


@pytest.mark.parametrize("kwargs, message", [
    ({"seconds": 0}, "budget of 0 seconds"),
    ({"steps": 0}, "budget of 0 steps"),
    ({}, "give a fine-tuning budget"),
    ({"steps": 5, "method": "magic"}, "method must be one of"),
])
def test_bad_budgets_and_methods_are_one_line_errors(kwargs, message):
    teacher, student = clustered(bits=2)
    with pytest.raises(ConfigError, match=message):
        ws.finetune_codebooks_(student, teacher, data(), **kwargs)


def test_finetuning_a_model_without_codebooks_is_refused():
    with pytest.raises(ConfigError, match="run ws.cluster_ first"):
        ws.finetune_codebooks_(mlp(), mlp(), data(), steps=1)


def test_dkm_trains_dense_weights_and_ends_with_codes():
    teacher, student = clustered(bits=2)
    x = torch.cat(data())
    ws.finetune_codebooks_(student, teacher, data(), steps=30, lr=1e-3, method="dkm")
    weight = student[0].parametrizations.weight[0]
    assert isinstance(weight, CodebookWeight)
    assert student[0].weight.unique().numel() <= 4
    with torch.no_grad():
        assert torch.isfinite(student(x)).all()


def test_dkm_refuses_vector_codebooks():
    teacher, student = clustered(bits=4, vector_dim=2)
    with pytest.raises(ConfigError, match="scalar per-tensor"):
        ws.finetune_codebooks_(student, teacher, data(), steps=1, method="dkm")


def test_dkm_memory_does_not_grow_with_layer_size_times_k():
    # a layer of 1M weights and K = 16: coremltools' DKM keeps (n x K) = 16M-element
    # attention maps for the backward pass; binned DKM keeps O(n) + O(65,536 x K)
    torch.manual_seed(0)
    rows, cols, k = 1024, 1024, 16
    lin = nn.Linear(cols, rows, bias=False)
    ws.cluster_(lin, ws.ClusterConfig(bits=4, min_size=0))
    base = lin.parametrizations.weight[0]
    dkm = DKMWeight(base, lin.parametrizations.weight.original)
    master = nn.Parameter(torch.randn(rows, cols) * 0.02)
    sizes = saved_sizes(lambda m: dkm(m).sum().backward(), master)
    n = rows * cols
    assert max(sizes) <= n  # nothing bigger than the layer itself
    assert sum(s for s in sizes if s != n) <= 8 * 65536 * k  # clustering: O(bins x K)
    assert all(s != n * k for s in sizes)
    assert master.grad is not None and torch.isfinite(master.grad).all()


def test_untied_embedding_tables_stay_fixed_and_come_back_intact():
    from tests.zoo import TinyLM

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 16), nn.Tanh(),
                            nn.Linear(16, 8))
    student = ws.cluster_(copy.deepcopy(teacher), ws.ClusterConfig(bits=2, min_size=0))
    table_weight = student[0].parametrizations.weight[0]
    table_cb = student[0].parametrizations.weight.original.detach().clone()
    ids = [torch.randint(0, 50, (8, 5)) for _ in range(3)]
    ws.finetune_codebooks_(student, teacher, ids, steps=5, lr=1e-2)
    assert student[0].parametrizations.weight[0] is table_weight  # re-attached as it was
    assert torch.equal(student[0].parametrizations.weight.original, table_cb)
    assert student[0].parametrizations.weight.original.requires_grad
    # a tied table (embedding = output head) is trained with its tie
    lm = TinyLM()
    tied = ws.cluster_(copy.deepcopy(lm), ws.ClusterConfig(bits=2, min_size=0))
    before = tied.emb.parametrizations.weight.original.detach().clone()
    ws.finetune_codebooks_(tied, lm, ids, steps=5, lr=1e-2)
    assert not torch.equal(tied.emb.parametrizations.weight.original, before)
    assert tied.emb.parametrizations.weight.original is tied.head.parametrizations.weight.original


def test_finetuning_a_copy_leaves_the_original_clustered_model_working():
    """copy.deepcopy shares the parametrized module classes; fixing embedding tables for
    the run must not edit them (it once removed the original's ``weight``)."""
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Embedding(256, 16), nn.Linear(16, 16))
    original = ws.cluster_(copy.deepcopy(teacher), ws.ClusterConfig(bits=2, min_size=0))
    ids = torch.randint(0, 256, (2, 3))
    before = original(ids).detach().clone()
    tuned = copy.deepcopy(original)
    table_codebook = tuned[0].parametrizations.weight.original.detach().clone()
    ws.finetune_codebooks_(tuned, teacher, [torch.randint(0, 256, (8, 6))], steps=3, lr=1e-2)
    assert torch.equal(original(ids), before)
    assert "forward" not in vars(tuned[0])
    # the table stayed fixed (train_embeddings=False), the linear layer trained
    assert torch.equal(tuned[0].parametrizations.weight.original, table_codebook)
    assert not torch.equal(tuned(ids), before)
