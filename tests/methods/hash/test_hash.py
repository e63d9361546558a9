"""Hashed weights (HashedNets): the seed is the map, the bucket gets the gradients, the
expansion is the naive construction, files keep the seed and bucket only."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from torch import nn

import weightshare as ws
from weightshare.errors import ConfigError, FormatError
from weightshare.methods.hash import HashedWeight
from weightshare.methods.hash.hashing import lowbias32, signed_index


def reference_lowbias32(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_the_hash_is_exact_32_bit_arithmetic():
    xs = [0, 1, 2, 0xFFFFFFFF, 0x80000000, 123456789, 987654321]
    xs += torch.randint(0, 2**32, (200,), generator=torch.Generator().manual_seed(0)).tolist()
    assert lowbias32(torch.tensor(xs)).tolist() == [reference_lowbias32(x) for x in xs]


def test_same_seed_same_virtual_weight_other_seed_another():
    a, b = ws.nn.HashedLinear(20, 10, budget=16, seed=3), ws.nn.HashedLinear(20, 10, budget=16,
                                                                             seed=3)
    c = ws.nn.HashedLinear(20, 10, budget=16, seed=4)
    with torch.no_grad():
        for layer in (a, b, c):
            layer.bucket.copy_(torch.arange(16.0) + 1)
    assert torch.equal(a.weight, b.weight)
    assert not torch.equal(a.weight, c.weight)


def test_expansion_equals_the_naive_construction():
    shape, budget, seed = (6, 7), 5, 11
    hw = HashedWeight(shape, budget, seed)
    bucket = torch.randn(budget)
    naive = torch.empty(shape)
    for i in range(shape[0]):
        for j in range(shape[1]):
            pos = i * shape[1] + j
            s = int(signed_index(torch.tensor([pos]), budget, seed, True)[0])
            naive[i, j] = bucket[s % budget] * (-1 if s >= budget else 1)
    assert torch.equal(hw(bucket), naive)
    # computed on the fly: the same weight, no index kept
    lazy = HashedWeight(shape, budget, seed, cache=False)
    assert lazy.index is None and torch.equal(lazy(bucket), naive)


def test_the_sign_hash_gives_both_signs_and_every_bucket_is_used():
    hw = HashedWeight((100, 100), 50, seed=0)
    index = hw.index.long()
    assert 0.45 < float((index >= 50).float().mean()) < 0.55
    assert torch.bincount(index % 50, minlength=50).min() > 0


def test_gradients_reach_the_bucket_summed_over_its_positions():
    layer = ws.nn.HashedLinear(8, 4, budget=6, seed=1)
    x = torch.randn(3, 8)
    layer(x).sum().backward()
    grad = layer.bucket.grad
    assert grad is not None and grad.shape == (6,)
    # d loss / d bucket[k] = sum over positions p hashed to k of sign(p) * dL/dW[p]
    dense_grad = torch.ones(3, 4).T @ x  # dL/dW for loss = sum(W x + b)
    index = layer.parametrizations.weight[0].index.long().reshape(4, 8)
    signs = torch.where(index >= 6, -1.0, 1.0)
    expected = torch.zeros(6).index_add_(0, (index % 6).reshape(-1),
                                         (signs * dense_grad).reshape(-1))
    assert torch.allclose(grad, expected, atol=1e-5)


def test_hash_on_a_model_projects_trained_weights_and_counts_buckets(tiny_mlp):
    before = tiny_mlp[0].weight.detach().clone()
    ws.hash_(tiny_mlp, ratio=1 / 8, include=("0",))
    bucket = tiny_mlp[0].parametrizations.weight.original
    assert bucket.numel() == round(before.numel() / 8)
    # least squares: no other bucket is closer to the trained weight
    hw = tiny_mlp[0].parametrizations.weight[0]
    err = (hw(bucket) - before).square().sum()
    nudged = bucket.detach() + 0.01 * torch.randn_like(bucket)
    assert err <= (hw(nudged) - before).square().sum()
    assert isinstance(tiny_mlp[2].weight, nn.Parameter)  # not included: dense


def test_round_trip_stores_seed_and_bucket_never_the_index(tmp_path, tiny_mlp):
    ws.hash_(tiny_mlp, ratio=1 / 4, seed=7)
    path = ws.save(tiny_mlp, tmp_path / "h.safetensors")
    with safe_open(str(path), "pt") as f:
        names = set(f.keys())
    assert "0.weight.bucket" in names and not any("index" in n for n in names)
    from tests.zoo import mlp
    loaded = ws.load(path, mlp(seed=1))
    x = torch.randn(5, 32)
    assert torch.equal(loaded(x), tiny_mlp.eval()(x))
    rows = {r.name: r for r in ws.inspect(path).rows}
    assert rows["0.weight"].scheme == "hash" and rows["0.weight"].stored_bytes == 512 * 4
    assert "seed 7" in rows["0.weight"].detail


def test_hashed_conv_layer_runs_and_saves(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(ws.nn.HashedConv2d(1, 4, 3, ratio=1 / 4), nn.Flatten(),
                        ws.nn.HashedLinear(4 * 6 * 6, 3, ratio=1 / 16, seed=1))
    x = torch.randn(2, 1, 8, 8)
    path = ws.save(net, tmp_path / "c.safetensors")
    skeleton = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    assert torch.equal(ws.load(path, skeleton)(x), net(x))


def test_a_ratio_that_leaves_no_bucket_is_one_clear_error(tiny_mlp):
    with pytest.raises(ConfigError, match="no bucket.*raise the ratio"):
        ws.hash_(tiny_mlp, ratio=1e-6)
    assert isinstance(tiny_mlp[0].weight, nn.Parameter)  # checked before any change
    with pytest.raises(ConfigError, match="ratio must be a fraction"):
        ws.hash_(tiny_mlp, ratio=2)
    with pytest.raises(ConfigError, match="exactly one of ratio"):
        ws.nn.HashedLinear(4, 4)
    with pytest.raises(ConfigError, match="unknown HashConfig key"):
        ws.hash_(tiny_mlp, ratio=0.5, seeds=3)


def test_share_applies_a_hash_config(tiny_mlp):
    ws.share_(tiny_mlp, ws.HashConfig(ratio=0.5, include=("2",)))
    assert tiny_mlp[2].parametrizations.weight[0].kind == "hash"


@pytest.mark.parametrize("change, match", [
    ({"budget": 0}, "budget"), ({"seed": -1}, "seed"), ({"sign": 1}, "sign"),
    ({"budget": 10**9}, "budget"), ({"extra": 1}, "keys"),
])
def test_forged_schemes_are_refused(change, match):
    scheme = {"kind": "hash", "shape": [4, 4], "budget": 3, "seed": 0, "sign": True,
              "dtype": "float32"}
    with pytest.raises(FormatError, match=match):
        HashedWeight.check_scheme({**scheme, **change})
