"""Batched Lloyd: many rows at once, each a proper 1-D k-means fixed point."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightshare.errors import ConfigError, DataError
from weightshare.kmeans1d import kmeans1d
from weightshare.kmeans1d_batched import kmeans1d_batched


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
        kmeans1d_batched(torch.zeros(2, 3), 2, init="kmeans++")
