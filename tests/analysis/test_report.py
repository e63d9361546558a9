"""inspect(): counts and bytes, for models and files."""

from __future__ import annotations

import json

import torch

import weightshare as ws


def test_dense_model_counts(tiny_mlp):
    rep = ws.inspect(tiny_mlp)
    n = sum(p.numel() for p in tiny_mlp.parameters())
    assert rep.total_params == rep.unique_params == n
    assert rep.dense_bytes == rep.stored_bytes == 4 * n
    assert all(r.scheme == "dense" for r in rep.rows)
    json.dumps(rep.to_dict())
    assert "0.weight" in str(rep)


def test_tied_lm_counts_alias_once(tiny_lm):
    rep = ws.inspect(tiny_lm)
    emb = tiny_lm.emb.weight.numel()
    unique = sum(p.numel() for p in tiny_lm.parameters())
    assert rep.unique_params == unique
    assert rep.total_params == unique + emb
    tied = [r for r in rep.rows if r.scheme == "tied"]
    assert [(r.name, r.source, r.stored_bytes) for r in tied] == [("head.weight", "emb.weight", 0)]


def test_codebook_rows_bits_and_bytes(tiny_mlp):
    ws.cluster_(tiny_mlp, ws.ClusterConfig(bits=3, min_size=0))
    rep = ws.inspect(tiny_mlp)
    row = next(r for r in rep.rows if r.name == "2.weight")
    assert row.scheme == "codebook" and row.bits == 3 and row.distinct <= 8
    assert row.stored_bytes == (64 * 48 * 3 + 7) // 8 + 8 * 4
    assert rep.total_params == sum(p.numel() for p in [torch.empty(64, 32), torch.empty(48, 64),
                                                        torch.empty(10, 48)]) + 64 + 48 + 10
    assert rep.unique_params == 3 * 8 + 64 + 48 + 10
    assert rep.stored_bytes < rep.dense_bytes / 8


def test_relaxed_tie_counts_virtual_weights_once_and_deltas_as_stored():
    from weightshare.methods.tie import TieConfig, tie_

    torch.manual_seed(0)
    stack = torch.nn.Sequential(*[torch.nn.Linear(16, 16) for _ in range(4)])
    dense = ws.inspect(stack)
    tie_(stack, TieConfig(strategy="all", rank=2, init="mean"))
    rep = ws.inspect(stack)
    assert rep.total_params == dense.total_params  # the model still computes with 4 layers
    # one shared weight + bias, and per layer: rank-2 delta (16x2 + 2x16) + a dense bias delta
    assert rep.unique_params == 16 * 16 + 16 + 4 * (2 * 16 * 2 + 16)
    relaxed = [r for r in rep.rows if r.scheme == "relaxed"]
    assert len(relaxed) == 8  # every weight and bias of the 4 layers
    assert sum("shared of" in r.detail for r in relaxed) == 6  # the base stored once
