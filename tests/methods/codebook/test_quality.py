"""Codebook quality methods: error feedback, refit, vector k-means, scales, outliers,
Fisher sensitivities — each checked against a direct computation."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import weightshare as ws
from tests.zoo import mlp
from weightshare.core.select import select_targets
from weightshare.methods.codebook.feedback import RowCodebooks, error_feedback, output_error
from weightshare.methods.codebook.fisher import fisher_importance
from weightshare.methods.codebook.hessian import forward_stages, input_hessians
from weightshare.methods.codebook.kmeans import kmeans1d
from weightshare.methods.codebook.kmeans.vector import cost_of, kmeans_nd
from weightshare.methods.codebook.refit import Problem, refit_codebook, refit_scales
from weightshare.methods.codebook.vector import VectorCodebookWeight
from weightshare.methods.codebook.weight import CodebookWeight


def correlated_layer(rows: int = 24, cols: int = 32, seed: int = 0):
    """A weight and the Hessian of strongly correlated inputs (where feedback matters)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g, dtype=torch.float64)
    x = torch.randn(400, cols, generator=g, dtype=torch.float64) @ mix
    w = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    return w, x.T @ x / x.shape[0]


def scalar_books(w: torch.Tensor, bits: int) -> RowCodebooks:
    cent, _ = kmeans1d(w.reshape(-1), 1 << bits)
    return RowCodebooks(cent.double().reshape(1, -1, 1), w.shape[0])


# ---------------------------------------------------------------- error feedback


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000), bits=st.integers(1, 4))
def test_error_feedback_never_worse_than_plain_assignment(seed, bits):
    w, h = correlated_layer(seed=seed)
    books = scalar_books(w, bits)
    plain = books.values(books.nearest_all(w))
    _, fed = error_feedback(w, h, books)
    assert output_error(w, fed, h) <= output_error(w, plain, h) * (1 + 1e-9)


def test_error_feedback_on_vectors_never_worse_than_plain_assignment():
    w, h = correlated_layer()
    cent, _ = kmeans_nd(w.reshape(-1, 2), 16)
    books = RowCodebooks(cent.unsqueeze(0), w.shape[0])
    plain = books.values(books.nearest_all(w))
    codes, fed = error_feedback(w, h, books)
    assert codes.shape == (24, 16)
    assert torch.allclose(books.values(codes), fed)  # every value is a codebook entry
    assert output_error(w, fed, h) < output_error(w, plain, h)


def test_error_feedback_keeps_exact_positions_exact():
    w, h = correlated_layer()
    exact = torch.zeros_like(w, dtype=torch.bool)
    first = int(torch.argmax(torch.diagonal(h)))  # act order: the largest input goes first
    other = (first + 5) % w.shape[1]
    exact[3, other] = exact[10, first] = True
    _, values = error_feedback(w, h, scalar_books(w, 2), exact=exact)
    # the first column is never compensated: its exact value is the weight itself
    assert values[10, first] == w[10, first].float()
    assert not torch.isin(values[3, other], scalar_books(w, 2).codebook)


def test_refit_reaches_the_least_squares_optimum():
    w, h = correlated_layer(rows=6, cols=8)
    codes = torch.randint(0, 4, (6, 8), generator=torch.Generator().manual_seed(1))
    p = Problem(w, h, codes)
    got = refit_codebook(torch.zeros(1, 4, 1), [p], iters=20).flatten()
    # direct solution: one-hot design, normal equations in the H metric
    onehot = torch.nn.functional.one_hot(codes, 4).double()  # (rows, cols, K)
    a = torch.einsum("rik,ij,rjl->kl", onehot, h, onehot)
    b = torch.einsum("ri,ij,rjk->k", w, h, onehot)
    assert torch.allclose(got, torch.linalg.solve(a, b), atol=1e-8)


def test_refit_scales_is_the_per_row_optimum():
    w, h = correlated_layer(rows=5, cols=8)
    codes = torch.randint(0, 4, (5, 8), generator=torch.Generator().manual_seed(2))
    cb = torch.tensor([-1.0, -0.3, 0.3, 1.0]).reshape(1, 4, 1)
    s = refit_scales(cb, Problem(w, h, codes, scales=torch.ones(5)))
    v = cb.flatten().double()[codes]
    for r in range(5):  # d/ds (w - s v) H (w - s v)^T = 0
        assert torch.allclose(s[r], (v[r] @ h @ w[r]) / (v[r] @ h @ v[r]))


# ---------------------------------------------------------------- vector k-means


@settings(max_examples=10, deadline=None)
@given(n=st.integers(5, 300), k=st.integers(1, 16), seed=st.integers(0, 100),
       weighted=st.booleans())
def test_vector_kmeans_at_d1_equals_the_exact_1d_result(n, k, seed, weighted):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    w = torch.rand(n, generator=g, dtype=torch.float64) if weighted else None
    cent, codes = kmeans_nd(x.unsqueeze(1), k, None if w is None else w.unsqueeze(1))
    ref_cent, ref_codes = kmeans1d(x, k, w, method="exact")
    assert torch.equal(codes, ref_codes)
    assert torch.allclose(cent[:ref_cent.numel(), 0], ref_cent.double())


def test_vector_kmeans_finds_separated_clusters_and_lowers_cost():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(8, 4, generator=g, dtype=torch.float64) * 10
    x = centers.repeat(50, 1) + 0.01 * torch.randn(400, 4, generator=g, dtype=torch.float64)
    cent, codes = kmeans_nd(x, 8)
    assert float(cost_of(x, cent, codes)) < 400 * 4 * 0.01 ** 2 * 2
    # per-coordinate weights: a zero-weight coordinate does not matter
    w = torch.ones_like(x)
    w[:, 3] = 0
    cent_w, codes_w = kmeans_nd(x, 8, w)
    assert torch.unique(codes_w).numel() == 8


# ---------------------------------------------------------------- stored forms


def roundtrip(model: nn.Module, tmp_path, skeleton: nn.Module) -> nn.Module:
    path = tmp_path / "m.safetensors"
    ws.save(model, path)
    return ws.load(path, model=skeleton)


def test_per_channel_scales_round_trip_exactly(tmp_path):
    model = mlp()
    skeleton = copy.deepcopy(model)
    ws.cluster_(model, ws.ClusterConfig(bits=3, scales="per_channel", min_size=0))
    weight = model[0].parametrizations.weight[0]
    assert isinstance(weight, CodebookWeight) and weight.scales is not None
    assert weight.scales.shape == (64,)
    # one codebook, so the rows differ only by their scale
    cb = model[0].parametrizations.weight.original
    dense = model[0].weight.detach()
    assert torch.allclose(dense / weight.scales.detach().unsqueeze(1),
                          cb.detach()[0][weight.codes.long()])
    back = roundtrip(model, tmp_path, skeleton)
    bw = back[0].parametrizations.weight[0]
    assert torch.equal(bw.scales, weight.scales)
    assert torch.equal(back[0].weight, model[0].weight)
    x = torch.randn(4, 32)
    assert torch.equal(back(x), model(x))


def test_outliers_are_exact_and_restored_exactly_after_load(tmp_path):
    model = mlp()
    skeleton, original = copy.deepcopy(model), copy.deepcopy(model)
    ws.cluster_(model, ws.ClusterConfig(bits=2, outliers=0.02, min_size=0))
    weight = model[0].parametrizations.weight[0]
    assert weight.num_outliers == round(0.02 * 64 * 32)
    r, c = weight.outlier_rows.long(), weight.outlier_cols.long()
    # without error feedback, the kept values are the original weights themselves
    assert torch.equal(model[0].weight[r, c], original[0].weight[r, c])
    # they are the largest weights (no calibration: importance 1)
    top = original[0].weight.detach().abs().flatten().topk(weight.num_outliers).values
    assert torch.equal(model[0].weight[r, c].abs().sort().values, top.sort().values)
    back = roundtrip(model, tmp_path, skeleton)
    assert torch.equal(back[0].weight, model[0].weight)
    report = ws.inspect(model)
    row = next(x for x in report.rows if x.name == "0.weight")
    n = weight.num_outliers
    # codes + codebook + outlier rows (6 bits) and cols (5 bits) packed + fp32 values
    assert row.stored_bytes == (64 * 32 * 2 + 7) // 8 + 4 * 4 + (n * 6 + 7) // 8 + \
        (n * 5 + 7) // 8 + 4 * n


def test_vector_codebook_weight_is_stored_packed_and_round_trips(tmp_path):
    model = mlp()
    skeleton = copy.deepcopy(model)
    cfg = ws.ClusterConfig(bits=10, vector_dim=4, scales="per_channel", min_size=0)
    ws.cluster_(model, cfg)
    weight = model[0].parametrizations.weight[0]
    assert isinstance(weight, VectorCodebookWeight)
    assert weight.codes.shape == (64, 8) and int(weight.codes.max()) < 1024
    assert model[0].parametrizations.weight.original.shape == (1, 1024, 4)
    back = roundtrip(model, tmp_path, skeleton)
    assert torch.equal(back[0].weight, model[0].weight)
    row = next(x for x in ws.inspect(model).rows if x.name == "0.weight")
    assert row.stored_bytes == 64 * 8 * 10 // 8 + 1024 * 4 * 4 + 64 * 4


def test_cross_layer_codebook_is_one_tensor_in_the_file(tmp_path):
    model = mlp()
    skeleton = copy.deepcopy(model)
    ws.cluster_(model, ws.ClusterConfig(bits=3, scales="per_channel", min_size=0,
                                        shared_codebooks=(r"^[02]$",)))
    cb0 = model[0].parametrizations.weight.original
    assert cb0 is model[2].parametrizations.weight.original
    assert cb0 is not model[4].parametrizations.weight.original
    back = roundtrip(model, tmp_path, skeleton)
    assert back[0].parametrizations.weight.original is back[2].parametrizations.weight.original
    x = torch.randn(3, 32)
    assert torch.equal(back(x), model(x))


# ---------------------------------------------------------------- calibration statistics


def test_fisher_sensitivities_equal_a_direct_computation():
    model = mlp()
    batches = [torch.randn(8, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)]

    def loss(out, batch):
        return out.pow(2).sum()

    got = fisher_importance(model, select_targets(model, min_size=0), batches, loss=loss)
    for name, idx in (("0", 0), ("2", 2), ("4", 4)):
        ref = torch.zeros_like(model[idx].weight, dtype=torch.float64)
        for b in batches:
            (g,) = torch.autograd.grad(loss(model(b), b), model[idx].weight)
            ref += g.double() ** 2
        assert torch.allclose(got[name], ref / len(batches))
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_input_hessian_and_stages_follow_the_forward_pass():
    model = mlp()
    x = torch.randn(16, 32)
    h = input_hessians(model, select_targets(model, min_size=0), [x])
    assert torch.allclose(h["0"], (x.double().T @ x.double()) / 16)
    stages = forward_stages(model, select_targets(model, min_size=0), [x])
    assert [[t.name for t in s] for s, _ in stages] == [["0"], ["2"], ["4"]]


def test_sequential_stages_group_layers_reading_one_input():
    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
            self.o = nn.Linear(8, 8)

        def forward(self, x):
            return self.o(self.q(x) * self.k(x) + self.v(x))

    model = Attn()
    stages = forward_stages(model, select_targets(model, min_size=0), [torch.randn(2, 8)])
    assert [sorted(t.name for t in s) for s, _ in stages] == [["k", "q", "v"], ["o"]]


@pytest.mark.parametrize("sequential", [False, True])
def test_error_feedback_beats_plain_clustering_on_correlated_inputs(sequential):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 48), nn.Tanh(), nn.Linear(48, 16))
    mix = torch.randn(32, 32)
    calib = [torch.randn(64, 32) @ mix for _ in range(4)]
    test = torch.randn(128, 32) @ mix
    with torch.no_grad():
        ref = model(test)

    def err(cfg):
        m = ws.cluster_(copy.deepcopy(model), cfg, calib, progress=False)
        with torch.no_grad():
            return float((m(test) - ref).norm() / ref.norm())

    plain = err(ws.ClusterConfig(bits=2, min_size=0))
    fed = err(ws.ClusterConfig(bits=2, min_size=0, error_feedback=True, sequential=sequential))
    assert fed < plain


class _TwoConvs(nn.Module):
    """Two convolutions of different kernels reading one input."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x).mean() + self.b(x).mean()


def test_conv2d_hessians_are_those_of_the_unfolded_patches():
    torch.manual_seed(0)
    net, x = _TwoConvs(), torch.randn(2, 3, 6, 6)
    hs = input_hessians(net, select_targets(net, min_size=0), [x])
    for name, conv in (("a", net.a), ("b", net.b)):
        cols = nn.functional.unfold(x, conv.kernel_size, conv.dilation, conv.padding,
                                    conv.stride).transpose(1, 2)
        cols = cols.reshape(-1, conv.weight[0].numel())
        # the weight's (out, in*kh*kw) rows times these patches give the convolution
        with torch.no_grad():
            y = (cols @ conv.weight.reshape(8, -1).T).reshape(2, -1, 8)
            assert torch.allclose(y.transpose(1, 2).reshape(conv(x).shape),
                                  conv(x) - conv.bias.view(1, -1, 1, 1), atol=1e-5)
        direct = (cols.double().T @ cols.double()) / cols.shape[0]
        assert torch.allclose(hs[name], direct, atol=1e-5)  # not the other conv's patches


def test_error_feedback_lowers_a_convolution_s_output_error():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1))
    base = torch.randn(8, 1, 10, 10)
    x = base + 0.3 * torch.randn(8, 4, 10, 10)  # correlated channels: feedback has work
    errs = {}
    for ef in (False, True):
        m = ws.cluster_(copy.deepcopy(conv), ws.ClusterConfig(bits=2, min_size=0,
                                                              error_feedback=ef), [x])
        with torch.no_grad():
            errs[ef] = float((m(x) - conv(x)).pow(2).sum())
    assert errs[True] < errs[False]


def test_scales_outliers_and_vectors_load_packed_as_their_trainable_form(tmp_path):
    from weightshare.runtime import to_runtime_

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                          nn.Linear(32, 32))
    x = torch.randn(16, 32)
    ws.cluster_(model, ws.ClusterConfig(bits=3, min_size=0, scales="per_channel",
                                        outliers=0.01, include=(r"^0$",)))
    ws.cluster_(model, ws.ClusterConfig(bits=6, vector_dim=2, min_size=0, include=(r"^2$",)))
    ws.cluster_(model, ws.ClusterConfig(bits=3, min_size=0, include=(r"^4$",)))
    with torch.no_grad():
        want = model(x)
    path = tmp_path / "m.safetensors"
    ws.save(model, path)
    packed = ws.load(path, copy.deepcopy(model), runtime="packed")
    kinds = [type(w).__name__ for _, _, _, w, _ in ws.core.protocol.iter_shared(packed)]
    # only the plain codebook has a packed form; the others keep their trainable one
    assert kinds == ["CodebookWeight", "VectorCodebookWeight", "PackedCodebookWeight"]
    with torch.no_grad():
        assert torch.allclose(packed(x), want, atol=1e-5)
        assert torch.allclose(to_runtime_(model, "packed")(x), want, atol=1e-5)
