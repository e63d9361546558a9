"""Batched k-means: Lloyd (each row a proper fixed point) and the exact solver (each row
optimal: brute force on tiny rows, the single-row exact engine on real-sized ones)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightshare.errors import ConfigError, DataError, ShapeError
from weightshare.methods.codebook.kmeans.batched import kmeans1d_batched, kmeans1d_exact_batched
from weightshare.methods.codebook.kmeans.exact import kmeans1d, sse


@settings(max_examples=25, deadline=None)
@given(groups=st.integers(1, 6), n=st.integers(1, 40), k=st.integers(1, 8),
       seed=st.integers(0, 1000), init=st.sampled_from(["density", "linear"]),
       weighted=st.booleans())
def test_each_row_is_a_lloyd_fixed_point(groups, n, k, seed, init, weighted):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(groups, n, generator=gen).round(decimals=1)  # ties on purpose
    w = torch.rand(groups, n, generator=gen) + 0.1 if weighted else None
    c, codes = kmeans1d_batched(x, k, w, init=init)
    assert c.shape == (groups, k) and codes.shape == (groups, n)
    assert (codes >= 0).all() and (codes < k).all()
    assert (c[:, 1:] >= c[:, :-1]).all()
    wt = torch.ones_like(x, dtype=torch.float64) if w is None else w.double()
    for g in range(groups):
        for j in codes[g].unique():
            members = codes[g] == j
            mean = (x[g].double()[members] * wt[g][members]).sum() / wt[g][members].sum()
            assert c[g, j] == pytest.approx(float(mean), abs=1e-9)
        # nearest-centroid assignment (Lloyd's other half), up to ties
        dist = (x[g].double()[:, None] - c[g][None, :]).abs()
        assert torch.allclose(dist.gather(1, codes[g][:, None]).squeeze(1),
                              dist.min(1).values, atol=1e-9)


def test_never_better_than_exact():
    torch.manual_seed(0)
    x = torch.randn(8, 384, dtype=torch.float64)
    c, codes = kmeans1d_batched(x, 16)
    for g in range(8):
        ce, co = kmeans1d(x[g], 16)
        exact = float(((x[g] - ce[co]) ** 2).sum())
        lloyd = float(((x[g] - c[g][codes[g]]) ** 2).sum())
        assert exact <= lloyd * (1 + 1e-9)  # Lloyd: a local optimum at best


def test_errors():
    with pytest.raises(DataError, match="NaN"):
        kmeans1d_batched(torch.tensor([[1.0, float("nan")]]), 2)
    with pytest.raises(DataError, match="groups, n"):
        kmeans1d_batched(torch.zeros(3), 2)
    with pytest.raises(ConfigError, match="init"):
        kmeans1d_batched(torch.zeros(2, 3), 2, init="nearest")


# ---------------------------------------------------------------- exact batched


def brute_force_sse(x: np.ndarray, k: int, w: np.ndarray) -> float:
    """Best weighted SSE over every partition of the sorted row into <= k contiguous runs."""
    order = np.argsort(x, kind="stable")
    x, w = x[order], w[order]
    best = np.inf
    for cuts in itertools.combinations(range(1, x.size), min(k, x.size) - 1):
        total = 0.0
        for a, b in zip((0, *cuts), (*cuts, x.size)):
            if w[a:b].sum() > 0:
                mean = (w[a:b] * x[a:b]).sum() / w[a:b].sum()
                total += float((w[a:b] * (x[a:b] - mean) ** 2).sum())
        best = min(best, total)
    return best


def check_exact_invariants(x: torch.Tensor, k: int, w: torch.Tensor | None,
                           c: torch.Tensor, codes: torch.Tensor) -> np.ndarray:
    """Shapes, ranges, ascending centroids, used centroid = members' weighted mean; the SSEs."""
    groups, n = x.shape
    assert c.shape == (groups, k) and c.dtype == torch.float64
    assert codes.shape == (groups, n) and codes.dtype == torch.int64
    assert (codes >= 0).all() and (codes < k).all()
    assert (c[:, 1:] >= c[:, :-1]).all()
    xd = x.double()
    wd = torch.ones_like(xd) if w is None else w.double()
    wd[~wd.bool().any(1)] = 1.0  # a row without weight is clustered unweighted
    for g in range(groups):
        for j in codes[g].unique():
            members = codes[g] == j
            if wd[g][members].sum() > 0:
                mean = (xd[g][members] * wd[g][members]).sum() / wd[g][members].sum()
                assert float(c[g, j]) == pytest.approx(float(mean), rel=1e-12, abs=1e-12)
    return (wd * (xd - c.gather(1, codes)) ** 2).sum(1).numpy()


@settings(max_examples=150, deadline=None)
@given(groups=st.integers(1, 4), n=st.integers(1, 8), k=st.integers(1, 4),
       seed=st.integers(0, 10_000), weighting=st.sampled_from(["none", "positive", "zeros"]),
       decimals=st.sampled_from([0, 1, 3]))
def test_exact_batched_equals_brute_force(groups, n, k, seed, weighting, decimals):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(groups, n, generator=gen) * 2).round(decimals=decimals)  # ties
    w = None
    if weighting != "none":
        w = torch.rand(groups, n, generator=gen, dtype=torch.float64) + 0.1
        if weighting == "zeros":
            w = w * (torch.rand(groups, n, generator=gen) < 0.6)
    c, codes = kmeans1d_exact_batched(x, k, w)
    got = check_exact_invariants(x, k, w, c, codes)
    for g in range(groups):
        wg = np.ones(n) if w is None or not w[g].any() else w[g].numpy()
        assert got[g] == pytest.approx(brute_force_sse(x[g].double().numpy(), k, wg),
                                       rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_exact_batched_equals_kmeans1d(weighted):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 384, generator=gen)
    x[2] = x[2] ** 3  # heavy tails
    w = torch.rand(3, 384, generator=gen) + 0.05 if weighted else None
    c, codes = kmeans1d_exact_batched(x, 16, w)
    got = check_exact_invariants(x, 16, w, c, codes)
    for g in range(3):
        wg = None if w is None else w[g]
        ce, co = kmeans1d(x[g], 16, weights=wg)
        assert got[g] == pytest.approx(sse(x[g], ce, co, wg), rel=1e-9)
    lloyd_c, lloyd_codes = kmeans1d_batched(x, 16, w)
    wd = torch.ones(3, 384, dtype=torch.float64) if w is None else w.double()
    lloyd = (wd * (x.double() - lloyd_c.gather(1, lloyd_codes)) ** 2).sum(1).numpy()
    assert (got <= lloyd * (1 + 1e-12)).all()


def test_exact_batched_chunks_agree():
    x = torch.randn(7, 50, generator=torch.Generator().manual_seed(2))
    c1, codes1 = kmeans1d_exact_batched(x, 5)
    c3, codes3 = kmeans1d_exact_batched(x, 5, chunk=3)
    assert torch.equal(c1, c3) and torch.equal(codes1, codes3)


def test_exact_batched_edge_cases():
    # constant rows, fewer values than k, fewer distinct values than k, n = 1, k = 1
    x = torch.tensor([[2.0, 2.0, 2.0, 2.0], [1.0, 3.0, 1.0, 3.0], [0.0, 1.0, 2.0, 3.0]])
    c, codes = kmeans1d_exact_batched(x, 3)
    assert c[0].tolist() == [2.0, 2.0, 2.0]
    assert c[1].unique().tolist() == [1.0, 3.0]
    assert check_exact_invariants(x, 3, None, c, codes)[:2].tolist() == [0.0, 0.0]
    c, codes = kmeans1d_exact_batched(x, 8)  # n < k: every value its own centroid
    assert c.shape == (3, 8) and (c.gather(1, codes) == x.double()).all()
    c, codes = kmeans1d_exact_batched(x, 1)
    assert torch.allclose(c[:, 0], x.double().mean(1)) and (codes == 0).all()
    c, codes = kmeans1d_exact_batched(torch.tensor([[5.0]]), 4)
    assert c.tolist() == [[5.0] * 4] and codes.tolist() == [[0]]
    # all-zero weights: clustered unweighted, like kmeans1d
    w = torch.zeros(1, 4)
    assert torch.equal(kmeans1d_exact_batched(x[2:], 2, w)[0],
                       kmeans1d_exact_batched(x[2:], 2)[0])


def test_exact_batched_errors():
    with pytest.raises(DataError, match="NaN"):
        kmeans1d_exact_batched(torch.tensor([[1.0, float("inf")]]), 2)
    with pytest.raises(DataError, match="groups, n"):
        kmeans1d_exact_batched(torch.zeros(3), 2)
    with pytest.raises(ConfigError, match="k must be"):
        kmeans1d_exact_batched(torch.zeros(2, 3), 0)
    with pytest.raises(ShapeError, match="weights shape"):
        kmeans1d_exact_batched(torch.zeros(2, 3), 2, torch.ones(3, 2))
    with pytest.raises(DataError, match=">= 0"):
        kmeans1d_exact_batched(torch.zeros(2, 3), 2, -torch.ones(2, 3))


@pytest.mark.parametrize("init", ["random", "kmeans++"])
def test_seeded_inits_run_batched_and_stay_near_the_optimum(init):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 200, generator=g, dtype=torch.float64)
    c1, codes1 = kmeans1d_batched(x, 8, init=init, seed=3)
    c2, codes2 = kmeans1d_batched(x, 8, init=init, seed=3)
    assert torch.equal(c1, c2) and torch.equal(codes1, codes2)  # deterministic for a seed
    c_exact, exact_codes = kmeans1d_exact_batched(x, 8)
    ratios = [sse(x[r], c1[r], codes1[r]) / sse(x[r], c_exact[r], exact_codes[r])
              for r in range(64)]
    # Lloyd's local optima: like the single-problem engine (mean ~1.15x here)
    assert min(ratios) >= 1 - 1e-12 and sum(ratios) / 64 < 1.3 and max(ratios) < 2.5


def test_cluster_fast_with_seeded_init_uses_the_batched_solver(monkeypatch):
    import weightshare as ws
    from weightshare.methods.codebook import build

    calls = []
    monkeypatch.setattr(build, "kmeans1d", lambda *a, **k: calls.append(1))  # the slow loop
    model = torch.nn.Sequential(torch.nn.Linear(64, 64))
    ws.cluster_(model, ws.ClusterConfig(bits=3, granularity="per_channel", method="fast",
                                        init="kmeans++"))
    assert calls == [] and int(model[0].weight.unique().numel()) <= 64 * 8
