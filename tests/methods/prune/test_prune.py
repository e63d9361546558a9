"""Zero-sharing: gap-coded positions, pruned weights that keep their mask through
training, codebooks with an exact zero, and Deep Compression's prune-then-cluster."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import weightshare as ws
from tests.zoo import mlp
from weightshare.errors import ConfigError, FormatError
from weightshare.methods.prune import GradualPruning, SparseWeight, ZeroCodebookWeight
from weightshare.methods.prune.positions import (
    best_gap_bits,
    decode_gaps,
    encode_gaps,
    entries_for,
    raw_gaps,
)


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, 500), min_size=1, max_size=120), st.integers(1, 12))
def test_gaps_decode_to_the_positions_they_encode(positions, bits):
    p = torch.tensor(sorted(positions))
    symbols = encode_gaps(p, bits)
    assert symbols.numel() == entries_for(raw_gaps(p), bits)
    assert int(symbols.max()) < (1 << bits)
    assert torch.equal(decode_gaps(symbols, bits, 501, len(positions)), p)


def test_the_chosen_gap_width_is_the_cheapest():
    g = torch.Generator().manual_seed(0)
    p = torch.randperm(10_000, generator=g)[:300].sort().values
    cost = {b: entries_for(raw_gaps(p), b) * b + 300 * 4 for b in range(1, 17)}
    assert cost[best_gap_bits(p, 4)] == min(cost.values())


def test_corrupt_gaps_are_refused():
    with pytest.raises(FormatError, match="outside"):
        decode_gaps(torch.tensor([0, 9]), 2)
    with pytest.raises(FormatError, match="entries"):
        decode_gaps(torch.tensor([0, 1]), 2, nnz=3)
    with pytest.raises(FormatError, match="falls outside"):
        decode_gaps(torch.tensor([2, 2]), 2, numel=5)


def test_prune_keeps_the_largest_and_training_keeps_the_mask(tiny_mlp):
    w = tiny_mlp[0].weight.detach().clone()
    ws.prune_(tiny_mlp, 0.75)
    kept = tiny_mlp[0].weight != 0
    assert int(kept.sum()) == w.numel() // 4
    assert w.abs()[kept].min() >= w.abs()[~kept].max()
    x, y = torch.randn(64, 32), torch.randint(0, 10, (64,))
    ws.fit(tiny_mlp, (x, y), epochs=3, batch_size=16, lr=1e-2, progress=False)
    assert torch.equal(tiny_mlp[0].weight != 0, kept)  # pruned weights have no parameter
    ws.prune_(tiny_mlp, 0.9, include=("0",))  # pruning again prunes further
    assert int((tiny_mlp[0].weight != 0).sum()) == round(w.numel() * 0.1)


def test_global_and_per_layer_sparsity(tiny_mlp):
    ws.prune_(tiny_mlp, {"^0$": 0.5, "^2$": 0.25})
    assert float((tiny_mlp[0].weight == 0).float().mean()) == 0.5
    assert float((tiny_mlp[2].weight == 0).float().mean()) == 0.25
    assert isinstance(tiny_mlp[4].weight, nn.Parameter)  # no pattern: not pruned
    model = mlp()
    ws.prune_(model, 0.8, scope="global")
    zeros = sum(int((model[i].weight == 0).sum()) for i in (0, 2, 4))
    total = sum(model[i].weight.numel() for i in (0, 2, 4))
    assert zeros == round(0.8 * total)


def test_zero_codebook_pins_an_exact_zero_through_training_and_files(tmp_path, tiny_mlp):
    ws.prune_(tiny_mlp, 0.8)
    zeros = tiny_mlp[0].weight == 0
    ws.cluster_(tiny_mlp, ws.ClusterConfig(bits=3, zero=True, min_size=0))
    weight = tiny_mlp[0].parametrizations.weight[0]
    assert isinstance(weight, ZeroCodebookWeight) and weight.layout == "sparse"
    assert torch.equal(tiny_mlp[0].weight == 0, zeros)
    assert tiny_mlp[0].weight.unique().numel() <= 8
    x, y = torch.randn(64, 32), torch.randint(0, 10, (64,))
    ws.fit(tiny_mlp, (x, y), epochs=3, batch_size=16, lr=1e-2, progress=False)
    assert torch.equal(tiny_mlp[0].weight == 0, zeros)  # zero stays exactly zero
    path = ws.save(tiny_mlp, tmp_path / "z.safetensors")
    loaded = ws.load(path, mlp(seed=3))
    assert torch.equal(loaded[0].weight == 0, zeros)
    assert torch.equal(loaded(x), tiny_mlp.eval()(x))
    ws.fit(loaded, (x, y), epochs=1, batch_size=16, lr=1e-2, progress=False)
    assert torch.equal(loaded[0].weight == 0, zeros)


def test_zero_on_a_dense_weight_sends_each_weight_to_its_nearest_value_zero_included(tiny_mlp):
    w = tiny_mlp[2].weight.detach().clone()
    ws.cluster_(tiny_mlp, ws.ClusterConfig(bits=2, zero=True, min_size=0, include=("2",)))
    out = tiny_mlp[2].weight.detach()
    values = out.unique()
    assert values.numel() <= 4 and bool((values == 0).any())
    nearest = (w.reshape(-1, 1) - values).abs().min(1).values
    assert torch.allclose((w - out).abs().reshape(-1), nearest)


@pytest.mark.parametrize("density", [0.02, 0.6, 0.97])
def test_both_layouts_round_trip_and_count_their_bytes(tmp_path, density):
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(1, 16, (40, 50), generator=g) * (torch.rand(40, 50, generator=g)
                                                           < density)
    zw = ZeroCodebookWeight(codes, bits=4)
    # a bitmap (1-bit gaps) beats a code per weight until nearly every weight is nonzero
    assert zw.layout == ("sparse" if density < 0.9 else "dense")
    assert torch.equal(zw.codes(), codes)
    layer = nn.Linear(50, 40)
    from weightshare.core.protocol import attach
    attach(layer, "weight", zw, nn.Parameter(torch.randn(1, 15)))
    path = ws.save(layer, tmp_path / "l.safetensors")
    loaded = ws.load(path, nn.Linear(50, 40))
    assert torch.equal(loaded.weight, layer.weight)
    row = ws.inspect(path).rows[-1]
    parts = type(zw).part_specs(zw.scheme(layer.parametrizations.weight.original))
    assert row.stored_bytes == sum(s.stored_bytes for s in parts.values())


def test_sparse_weight_round_trip(tmp_path, tiny_mlp):
    ws.prune_(tiny_mlp, 0.95)
    assert isinstance(tiny_mlp[0].parametrizations.weight[0], SparseWeight)
    path = ws.save(tiny_mlp, tmp_path / "s.safetensors")
    x = torch.randn(4, 32)
    assert torch.equal(ws.load(path, mlp(seed=2))(x), tiny_mlp.eval()(x))
    assert {r.scheme for r in ws.inspect(path).rows} == {"dense", "sparse"}


def test_share_prunes_before_clustering(tiny_mlp):
    ws.share_(tiny_mlp, ws.ClusterConfig(bits=2, zero=True, min_size=0),
              ws.PruneConfig(sparsity=0.9))
    w = tiny_mlp[0].weight
    assert float((w == 0).float().mean()) == pytest.approx(0.9, abs=1e-3)
    assert w.unique().numel() <= 4


def test_gradual_pruning_reaches_the_target_and_finishes_sparse():
    model = mlp()
    x, y = torch.randn(128, 32), torch.randint(0, 10, (128,))
    pruning = GradualPruning(model, {"^0$": 0.9, "^2$": 0.5}, every=2, end=0.5)
    assert pruning.progress(0, 10) == 0 and pruning.progress(5, 10) == 1
    ws.fit(model, (x, y), epochs=4, batch_size=16, callbacks=[pruning], progress=False)
    assert float((model[0].weight == 0).float().mean()) == pytest.approx(0.9, abs=1e-3)
    pruning.finish()
    assert isinstance(model[0].parametrizations.weight[0], SparseWeight)
    assert isinstance(model[4].weight, nn.Parameter)


def test_bad_prune_settings_are_refused(tiny_mlp):
    with pytest.raises(ConfigError, match="sparsity must be a fraction"):
        ws.prune_(tiny_mlp, 1.0)
    with pytest.raises(ConfigError, match="global"):
        ws.PruneConfig(sparsity={"0": 0.5}, scope="global")
    with pytest.raises(ws.WeightShareError, match="no sparsity pattern matches"):
        ws.prune_(tiny_mlp, {"nothing": 0.5})


def test_every_stored_byte_is_counted_from_the_file(tmp_path):
    # parts() builds new tensors each call (gaps, codes): neither save nor inspect may take
    # a reused id() for a shared part
    model = mlp()
    ws.prune_(model, 0.9)
    ws.cluster_(model, ws.ClusterConfig(bits=4, zero=True, min_size=0))
    path = ws.save(model, tmp_path / "m.safetensors")
    from weightshare.io import StoredTensors

    stored = StoredTensors(path)
    data_bytes = sum(info.nbytes for info in stored.infos.values())
    assert ws.inspect(path).stored_bytes == ws.inspect(model).stored_bytes == data_bytes
    assert len(stored.infos) == 3 * 3 + 3  # codebook, gaps, codes per weight + biases


@pytest.mark.parametrize("extra", [{"vector_dim": 2, "bits": 4}, {"scales": "per_channel"},
                                   {"error_feedback": True}, {"outliers": 0.01}])
def test_zero_codebooks_refuse_the_quality_options(extra):
    with pytest.raises(ConfigError, match="zero=True makes plain scalar codebooks"):
        ws.ClusterConfig(zero=True, **extra)
