"""Codebook clustering of a model: the math, the module contract, the errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import weightshare as ws
from tests.zoo import mlp
from weightshare.errors import ConfigError, SelectionError, ShapeError
from weightshare.methods.codebook.weight import iter_codebooks


def distinct_per_codebook(module: nn.Module) -> int:
    (_, _, param, _), = [e for e in iter_codebooks(module)]
    w = module.weight.detach().movedim(param.axis, 0)
    w = w.reshape(param.num_groups, -1)
    return max(int(torch.unique(row).numel()) for row in w)


@settings(max_examples=12, deadline=None)
@given(bits=st.integers(1, 8),
       granularity=st.sampled_from(["per_tensor", "per_channel", "per_group"]),
       method=st.sampled_from(["exact", "fast"]))
def test_distinct_values_at_most_two_to_the_bits(bits, granularity, method):
    model = mlp()
    cfg = ws.ClusterConfig(bits=bits, granularity=granularity, group_size=2, method=method,
                           min_size=0)
    ws.cluster_(model, cfg)
    for _, module, _, _ in iter_codebooks(model):
        assert distinct_per_codebook(module) <= 2**bits


def test_module_keeps_working_and_no_dense_copy(tiny_mlp):
    x = torch.randn(5, 32)
    ref = tiny_mlp(x)
    ws.cluster_(tiny_mlp, ws.ClusterConfig(bits=8, min_size=0))
    assert isinstance(tiny_mlp[0], nn.Linear)
    names = dict(tiny_mlp.named_parameters())
    # only codebooks and biases are parameters: no dense weight kept alongside
    assert all(n.endswith(("bias", "original")) for n in names)
    assert names["0.parametrizations.weight.original"].shape == (1, 256)
    assert tiny_mlp[0].parametrizations.weight[0].codes.dtype == torch.uint8
    out = tiny_mlp(x)
    assert torch.allclose(out, ref, atol=0.05)  # 8 bits: close to the original
    state = tiny_mlp.state_dict()
    assert "0.parametrizations.weight.0.codes" in state


def test_codebook_gradient_is_sum_over_members():
    lin = nn.Linear(6, 3)
    ws.cluster_(lin, ws.ClusterConfig(bits=2, min_size=0))
    x = torch.randn(4, 6)
    gw = torch.autograd.grad(lin(x).square().sum(), lin.parametrizations.weight.original)[0]
    # reference: gradient w.r.t. the dense weight, summed per code
    dense = lin.weight.detach().clone().requires_grad_()
    (gd,) = torch.autograd.grad(nn.functional.linear(x, dense, lin.bias).square().sum(), dense)
    codes = lin.parametrizations.weight[0].codes.long()
    expected = torch.zeros(4).index_add_(0, codes.reshape(-1), gd.reshape(-1))
    assert torch.allclose(gw[0], expected, atol=1e-5)


def test_fine_tuning_codebook_with_optimizer_keeps_codes(tiny_mlp):
    ws.cluster_(tiny_mlp, ws.ClusterConfig(bits=3, min_size=0))
    codes_before = tiny_mlp[0].parametrizations.weight[0].codes.clone()
    opt = torch.optim.SGD(tiny_mlp.parameters(), lr=0.1)
    x, y = torch.randn(16, 32), torch.randint(0, 10, (16,))
    loss0 = nn.functional.cross_entropy(tiny_mlp(x), y)
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(tiny_mlp(x), y).backward()
        opt.step()
    assert nn.functional.cross_entropy(tiny_mlp(x), y) < loss0
    assert torch.equal(codes_before, tiny_mlp[0].parametrizations.weight[0].codes)
    assert torch.unique(tiny_mlp[0].weight).numel() <= 8


def test_exact_per_tensor_codebook_is_optimal_kmeans(tiny_mlp):
    w = tiny_mlp[2].weight.detach().clone()
    ws.cluster_(tiny_mlp, ws.ClusterConfig(bits=2, include=(r"^2$",), min_size=0))
    cent, codes = ws.kmeans1d(w.double(), 4)
    assert torch.allclose(tiny_mlp[2].weight.detach().double(), cent[codes], atol=1e-6)


def test_conv_embedding_and_hf_conv1d_targets(conv_net, tiny_lm):
    ws.cluster_(conv_net, ws.ClusterConfig(bits=2, granularity="per_channel", min_size=0))
    assert {n for n, *_ in iter_codebooks(conv_net)} == {"conv1.weight", "conv2.weight",
                                                          "fc.weight"}
    conv_net(torch.randn(2, 1, 12, 12))
    assert distinct_per_codebook(conv_net.conv2) <= 4
    transformers = pytest.importorskip("transformers")
    conv1d = transformers.pytorch_utils.Conv1D(24, 16)  # weight (in=16, out=24)
    ws.cluster_(conv1d, ws.ClusterConfig(bits=2, granularity="per_group", group_size=8,
                                         min_size=0))
    param = conv1d.parametrizations.weight[0]
    assert param.axis == 1 and param.num_groups == 3


def test_tied_embedding_is_clustered_once_and_stays_tied(tiny_lm):
    ws.cluster_(tiny_lm, ws.ClusterConfig(bits=4, min_size=0))
    assert tiny_lm.emb.parametrizations.weight.original is \
        tiny_lm.head.parametrizations.weight.original
    assert torch.equal(tiny_lm.emb.weight, tiny_lm.head.weight)
    names = [n for n, _ in tiny_lm.named_parameters()]
    assert sum("original" in n and ("emb" in n or "head" in n) for n in names) == 1
    tiny_lm(torch.randint(0, 50, (2, 7))).sum().backward()


def test_calibration_lowers_output_error_on_its_distribution():
    torch.manual_seed(0)
    orig = nn.Linear(64, 32)
    with torch.no_grad():  # the important columns hold values unlike the bulk
        orig.weight[:, :4] *= 5
    plain, aware = nn.Linear(64, 32), nn.Linear(64, 32)
    plain.load_state_dict(orig.state_dict())
    aware.load_state_dict(orig.state_dict())
    # inputs where only the first 4 features are large: their weights matter most
    scale = torch.cat([torch.full((4,), 10.0), torch.full((60,), 0.01)])
    x = torch.randn(256, 64) * scale
    ws.cluster_(plain, ws.ClusterConfig(bits=2, min_size=0))
    ws.cluster_(aware, ws.ClusterConfig(bits=2, min_size=0), calibration=[x])
    with torch.no_grad():
        assert (aware(x) - orig(x)).norm() < 0.9 * (plain(x) - orig(x)).norm()


def test_bad_configs():
    with pytest.raises(ConfigError, match="bits"):
        ws.ClusterConfig(bits=9)
    with pytest.raises(ConfigError, match="bits"):
        ws.ClusterConfig(bits=0)
    with pytest.raises(ConfigError, match="granularity"):
        ws.ClusterConfig(granularity="per_row")
    with pytest.raises(ConfigError, match="unknown ClusterConfig key"):
        ws.ClusterConfig.from_dict({"bits": 4, "bitz": 3})


def test_bad_selections(tiny_mlp):
    with pytest.raises(SelectionError, match="matches no module"):
        ws.cluster_(tiny_mlp, ws.ClusterConfig(include=("attention",), min_size=0))
    with pytest.raises(ShapeError, match="does not divide"):
        ws.cluster_(tiny_mlp, ws.ClusterConfig(granularity="per_group", group_size=7,
                                               min_size=0, strict=True))
    with pytest.raises(SelectionError, match="no Linear"):
        ws.cluster_(nn.Sequential(nn.ReLU()), ws.ClusterConfig())
    with pytest.raises(SelectionError, match="no weight left"):
        ws.cluster_(tiny_mlp, ws.ClusterConfig(min_size=10**9))


def test_exact_per_channel_equals_the_single_problem_engine():
    torch.manual_seed(0)
    lin = nn.Linear(96, 12)
    w = lin.weight.detach().clone().double()
    ws.cluster_(lin, ws.ClusterConfig(bits=3, granularity="per_channel", min_size=0))
    got = lin.weight.detach().double()
    for row, original in zip(got, w):
        cent, codes = ws.kmeans1d(original, 8)
        optimum = float(((original - cent[codes]) ** 2).sum())
        assert float(((original - row) ** 2).sum()) == pytest.approx(optimum, rel=1e-6)
