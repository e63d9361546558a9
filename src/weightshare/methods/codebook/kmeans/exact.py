"""1-D k-means: the engine under every weightshare codebook.

``kmeans1d(values, k)`` clusters the scalar values of a tensor into at most ``k``
centroids and returns ``(centroids, codes)``. ``method="exact"`` minimises the (weighted)
sum of squared errors (SSE); ``method="fast"`` is Lloyd's algorithm from a chosen
initialisation (Deep Compression's baseline).

Why hand-written: no well-kept library is both exact and fast. scikit-learn's KMeans is
general-purpose (n x k distances, many iterations) and only locally optimal; flash1dkmeans
is a numba kmeans++ + Lloyd heuristic (2-3% above the optimum at k = 256, ~15 s compile on
first use); Ckmeans.1d.dp is exact but R/C++. In 1-D the optimum is a contiguous partition
of the sorted values, so after one sort everything is prefix sums, ``searchsorted`` and
small dynamic programs (DP) over whole arrays: plain numpy, no Python loop over values.
"""

from __future__ import annotations

import numpy as np
import torch

from ....errors import ConfigError, DataError, ShapeError

__all__ = ["kmeans1d", "sse"]

METHODS = ("exact", "fast")
INITS = ("linear", "density", "random", "kmeans++")

# With at most this many distinct values the DP runs over all of them (optimal); above
# it, over at most this many bins, and the result is refined (see _refine).
EXACT_MAX_DISTINCT = 2048
_ONE_PASS = 32  # a DP layer is one flat pass when Knuth's bound leaves <= this * g pairs
_DENSE_MAX = 320  # DPs over at most this many items use a dense (g, g) gain matrix
_FINE = 16  # refinement tries every offset within +-_FINE values of each boundary ...
_PER_OCTAVE = 3  # ... and this many fractions of a neighbouring cluster per halving
_MAX_PASSES = 100  # refinement passes (a safety cap; 2-6 are usual)
_LUT_BINS = 16384  # code lookup table: 128 KiB of int64, stays in L2 cache


def kmeans1d(
    values: torch.Tensor | np.ndarray,
    k: int,
    weights: torch.Tensor | np.ndarray | None = None,
    method: str = "exact",
    init: str = "linear",
    max_iter: int = 300,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster the values of a tensor (any shape) into at most ``k`` centroids.

    Args:
        values: torch tensor (any float dtype, any device) or numpy array; flattened.
        k: number of centroids, >= 1. Exactly ``min(k, number of distinct values)``
            centroids are returned.
        weights: optional non-negative weights of ``values``' shape (weighted SSE, e.g.
            Fisher information). Zero-weight values do not move the centroids; they get
            the code of the cluster whose value range holds them. If every weight is 0
            the weights are ignored (plain SSE), so a layer without signal still clusters.
        method: ``"exact"``: the optimal partition when there are at most
            ``EXACT_MAX_DISTINCT`` distinct values. Above that, the optimum over ~2048
            bins, refined to single values by a multi-scale windowed DP: not proven
            optimal, tested to be within 0.1% of the optimum (and usually equal to it).
            ``"fast"``: Lloyd's algorithm from ``init``, at most ``max_iter`` iterations.
        init: ``"linear"`` (evenly spaced between min and max), ``"density"`` (evenly
            spaced quantiles), ``"random"`` (distinct values drawn with ``seed``) or
            ``"kmeans++"`` (seeded). Used by ``method="fast"`` only.
        max_iter: Lloyd iterations for ``method="fast"``; ignored by ``"exact"``.
        seed: random seed for ``init="random"`` and ``"kmeans++"`` (deterministic).

    Returns:
        ``(centroids, codes)``: centroids sorted ascending, float32 for float16, bfloat16
        and float32 input, float64 otherwise (the computation is always float64); codes
        int64 of ``values``' shape, ``codes[i]`` the index of value i's centroid. Exact
        centroids are the weighted means of their members; a ``"fast"`` centroid whose
        cluster emptied keeps its last position (never NaN) and has no members.

    Raises:
        ConfigError: bad ``k``, ``method``, ``init`` or ``max_iter``.
        DataError: empty input, NaN/inf values, negative or non-finite weights.
        ShapeError: ``weights`` shape differs from ``values``.

    Example:
        >>> centroids, codes = kmeans1d(torch.tensor([0.0, 0.1, 1.0, 1.2]), k=2)
        >>> [round(c, 4) for c in centroids.tolist()], codes.tolist()
        ([0.05, 1.1], [0, 0, 1, 1])
    """
    _check_config(k, method, init, max_iter)
    x, out_dtype = _flat_numpy(values)
    w = None if weights is None else _flat_weights(weights, tuple(values.shape), x.size)
    data = _Sorted(x, w)
    m = min(k, data.n_distinct)
    if method == "exact":
        bounds = _exact_bounds(data, m)
        centroids = data.means(bounds)
    else:
        centroids, bounds = _lloyd(data, _init_centroids(data, m, init, seed), max_iter)
    codes = _encode(x, data.xs, bounds, data.x_lo, data.x_hi)
    return (torch.from_numpy(centroids.astype(out_dtype)),
            torch.from_numpy(codes).reshape(tuple(values.shape)))


def sse(values: torch.Tensor | np.ndarray, centroids: torch.Tensor | np.ndarray,
        codes: torch.Tensor | np.ndarray, weights: torch.Tensor | np.ndarray | None = None
        ) -> float:
    """Weighted sum of squared errors ``sum(w * (values - centroids[codes])**2)``, in float64.

    Example:
        >>> sse(torch.tensor([0.0, 1.0, 3.0]), torch.tensor([0.5, 3.0]), torch.tensor([0, 0, 1]))
        0.5
    """
    err = (_as_f64(values).ravel() - _as_f64(centroids).ravel()[_as_index(codes)]) ** 2
    if weights is not None:
        err *= _as_f64(weights).ravel()
    return float(err.sum())


# ---------------------------------------------------------------- input handling


def _check_config(k: object, method: str, init: str, max_iter: object) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k!r}; pass e.g. k=16 for 4 bits.")
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}.")
    if init not in INITS:
        raise ConfigError(f"unknown init {init!r}; valid inits: {', '.join(INITS)}.")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ConfigError(f"max_iter must be an integer >= 0, got {max_iter!r}.")


def _as_f64(a: torch.Tensor | np.ndarray) -> np.ndarray:
    return a.detach().cpu().double().numpy() if isinstance(a, torch.Tensor) else np.asarray(
        a, dtype=np.float64)


def _as_index(a: torch.Tensor | np.ndarray) -> np.ndarray:
    return (a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)).ravel()


def _flat_numpy(a: torch.Tensor | np.ndarray) -> tuple[np.ndarray, type]:
    """Flat float32 (for <= 32-bit floats) or float64 copy-free view, and the output dtype."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        if a.dtype in (torch.float16, torch.bfloat16):
            a = a.float()  # numpy has no bfloat16, and sorts float16 slowly
        a = a.numpy()
    a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise DataError(f"values must be real numbers, got dtype {a.dtype}.")
    # float32 stays float32: sorting it is ~1.6x faster, and the prefix sums are float64
    dtype = np.float32 if a.dtype.kind == "f" and a.dtype.itemsize <= 4 else np.float64
    flat = np.ascontiguousarray(a, dtype=dtype).ravel()
    if dtype == np.float64 and flat.size >= 1 << 16:  # float64 copies of float32 weights,
        with np.errstate(over="ignore"):  # the usual case: sort as the float32 they are
            narrow = flat.astype(np.float32)
        if np.array_equal(narrow, flat):
            return narrow, dtype
    return flat, dtype


def _flat_weights(weights: torch.Tensor | np.ndarray, shape: tuple, n: int) -> np.ndarray | None:
    w = _as_f64(weights)
    if w.shape != shape:
        raise ShapeError(f"weights shape {w.shape} differs from values shape {shape}; "
                         "pass one weight per value.")
    w = w.ravel()
    bad = np.count_nonzero(~np.isfinite(w)) + np.count_nonzero(w < 0)
    if bad:
        raise DataError(f"weights must be finite and >= 0; {bad} of {n} are not. Fix them.")
    return w if w.any() else None  # all zero: documented fallback to the plain SSE


class _Sorted:
    """Sorted values and prefix sums: any cluster's weight, sum and mean in O(1).

    ``xs`` holds the values of positive weight, ascending (n of them). A partition is an
    array b of positions ``0 = b[0] <= ... <= b[m] = n``, cluster j being ``xs[b[j]:b[j+1]]``,
    that never splits a run of equal values. The prefix sums ``cs`` are of
    ``(xs - shift) / unit`` (shift = median, so that the cancellation in ``S**2 / W``
    stays small; unit = 1 unless the squares would over- or underflow float64).
    """

    def __init__(self, x: np.ndarray, w: np.ndarray | None) -> None:
        if x.size == 0:
            raise DataError("values is empty; pass a tensor with at least one value.")
        # min/max propagate NaN and show inf: a cheap finiteness check, reused by _encode
        self.x_lo, self.x_hi = x.min(), x.max()
        if not (np.isfinite(self.x_lo) and np.isfinite(self.x_hi)):
            bad = np.count_nonzero(~np.isfinite(x))
            raise DataError(f"values hold {bad} NaN/inf of {x.size}; clean them before clustering.")
        span = float(self.x_hi) - float(self.x_lo)
        if not np.isfinite(span):
            raise DataError(f"values span {self.x_lo} to {self.x_hi}, more than float64 holds; "
                            "rescale them first.")
        self.unit = span if span > 1e100 or 0 < span < 1e-100 else 1.0
        if w is None:
            self.xs, self.cw = np.sort(x), None  # numpy sorts ~7x faster than torch on CPU
        else:
            order = np.argsort(x[w > 0])
            self.xs, ws = x[w > 0][order], w[w > 0][order]
            self.cw = np.concatenate(([0.0], np.cumsum(ws)))
        xs = self.xs
        self.n, self.lo, self.hi = xs.size, float(xs[0]), float(xs[-1])
        self.shift = xs[xs.size // 2]
        centred = np.subtract(xs, self.shift, dtype=np.float64)
        if self.unit != 1.0:
            centred /= self.unit
        if w is not None:
            centred *= ws
        self.cs = np.empty(self.n + 1)  # cs[p] = sum of (xs[:p] - shift) * weight
        self.cs[0] = 0.0
        np.cumsum(centred, out=self.cs[1:])
        self.n_distinct = int(np.count_nonzero(xs[1:] != xs[:-1])) + 1

    def snap(self, p: np.ndarray) -> np.ndarray:
        """Move positions 0 < p < n left to the start of their run of equal values."""
        if self.n_distinct == self.n:
            return p
        return np.searchsorted(self.xs, self.xs[np.minimum(p, self.n - 1)], side="left")

    def run_starts(self) -> np.ndarray:
        """0, the position of every later new value, n."""
        return np.concatenate(([0], np.flatnonzero(self.xs[1:] != self.xs[:-1]) + 1, [self.n]))

    def cum_weight(self, p: np.ndarray) -> np.ndarray:
        return p.astype(np.float64) if self.cw is None else self.cw[p]

    def means(self, bounds: np.ndarray, fallback: np.ndarray | None = None) -> np.ndarray:
        """Weighted mean of each cluster of the partition ``bounds``; empty -> fallback."""
        wsum = np.diff(self.cum_weight(bounds))
        mean = np.diff(self.cs[bounds]) / np.where(wsum > 0, wsum, 1.0) * self.unit
        mean += float(self.shift)
        first = self.xs[np.minimum(bounds[:-1], self.n - 1)]
        one_value = first == self.xs[np.maximum(bounds[1:] - 1, 0)]
        mean = np.where(one_value, first, mean)  # a single distinct value: exact, no rounding
        return mean if fallback is None else np.where(wsum > 0, mean, fallback)


# ---------------------------------------------------------------- exact


def _exact_bounds(data: _Sorted, m: int) -> np.ndarray:
    """Partition (m + 1 positions) of the optimal, or refined near-optimal, clustering."""
    if m == 1:
        return np.array([0, data.n])
    if data.n_distinct <= EXACT_MAX_DISTINCT:  # DP over every distinct value: optimal
        grid = data.run_starts() if data.n_distinct < data.n else np.arange(data.n + 1)
        return grid[_dp_partition(data.cum_weight(grid), data.cs[grid], m)]
    # 8 to 16 bins per optimal cluster; the DP costs O(m * bins * log bins)
    grid = _coarse_grid(data, min(max(16 * m, 256), EXACT_MAX_DISTINCT))
    return _refine(data, grid[_dp_partition(data.cum_weight(grid), data.cs[grid], m)])


def _coarse_grid(data: _Sorted, n_bins: int) -> np.ndarray:
    """~1.25 * n_bins positions, denser where optimal cluster boundaries are denser.

    High-rate quantisation theory: optimal 1-D clusters are ~ density**(-1/3) wide, so
    edges evenly spaced in the integral of density**(1/3) give every cluster about the same
    number of bins: dense centres, sparse tails and lone outliers alike. (Equal-count bins
    starve the tails; equal-width bins starve the centre.) The density is read off
    n_bins // 4 equal-weight bins, whose edges are kept too.
    """
    n_q = max(n_bins // 4, 2)
    if data.cw is None:
        q_pos = np.linspace(0, data.n, n_q + 1).astype(np.int64)
    else:
        q_pos = np.minimum(np.searchsorted(data.cw, np.linspace(0, data.cw[-1], n_q + 1)), data.n)
    q_val = data.xs[np.minimum(q_pos, data.n - 1)].astype(np.float64)
    q_val[-1] = data.hi
    width = np.diff(q_val)
    # integral of density**(1/3) over a bin of mass M and width w: M**(1/3) * w**(2/3)
    mass = np.cbrt(np.diff(data.cum_weight(q_pos))) * np.cbrt(width) ** 2
    cum = np.concatenate(([0.0], np.cumsum(mass)))
    target = np.linspace(0.0, cum[-1], n_bins + 1)
    b = np.clip(np.searchsorted(cum, target, side="right") - 1, 0, n_q - 1)
    frac = np.clip((target - cum[b]) / np.where(mass[b] > 0, mass[b], 1.0), 0.0, 1.0)
    values = (q_val[b] + frac * width[b]).astype(data.xs.dtype)
    pos = data.snap(np.clip(np.concatenate((q_pos, np.searchsorted(data.xs, values))), 0, data.n))
    return np.unique(np.concatenate(([0, data.n], pos)))


Num = np.ndarray | float  # broadcastable operands


def _gain(qw: Num, qs: Num, pw: Num, ps: Num) -> np.ndarray:
    """S**2 / W of the cluster between positions q < p (prefix sums); -inf if p <= q.

    A cluster's SSE is its sum of squares minus S**2 / W. The sums of squares add up to
    the same total for every partition, so minimising SSE = maximising the total gain.
    """
    dw, ds = pw - qw, ps - qs
    np.multiply(ds, ds, out=ds)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(ds, dw, out=ds)
    ds[dw <= 0] = -np.inf
    return ds


def _segment_argmax(prev: np.ndarray, cw: np.ndarray, cs: np.ndarray, i: np.ndarray,
                    jlo: np.ndarray, jhi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per i: max and rightmost argmax over j in [jlo, jhi] (j < i) of prev[j] + gain(j, i).

    All (i, j) pairs are flattened into one vector: numpy work, no Python loop over items.
    """
    cnt = jhi - jlo + 1
    start = np.cumsum(cnt) - cnt
    flat = np.arange(int(start[-1] + cnt[-1]))
    j = flat + np.repeat(jlo - start, cnt)
    ii = np.repeat(i, cnt)
    val = cs[ii] - cs[j]
    val *= val
    val /= cw[ii] - cw[j]
    val += prev[j]
    best = np.maximum.reduceat(val, start)
    # the rightmost argmax: the one Knuth's bound opt[l-1][i] <= opt[l][i] is proved for
    pos = np.maximum.reduceat(np.where(val == np.repeat(best, cnt), flat, -1), start)
    return best, j[pos]


def _dp_partition(cw: np.ndarray, cs: np.ndarray, m: int) -> np.ndarray:
    """Optimal m-cluster partition of g weighted items (prefix sums cw, cs of length g+1).

    D[l][i] = max_j D[l-1][j] + gain(j, i). The SSE is concave Monge, so the argmax
    opt[l][i] is non-decreasing in i (divide and conquer: one numpy pass per bisection
    level, O(g log g) a layer) and in l (Knuth: opt[l-1][i] <= opt[l][i], which narrows
    the search as l grows, until one flat pass per layer is cheapest). Returns the item
    boundaries 0 = b0 < ... < bm = g.
    """
    g = cw.size - 1
    prev = _gain(0.0, 0.0, cw, cs)  # layer 1: one cluster over items 0..i-1
    opts = np.zeros((m + 1, g + 2), dtype=np.int64)
    idx = np.arange(g + 1)
    if g <= _DENSE_MAX:
        gain = _gain(cw[:, None], cs[:, None], cw[None, :], cs[None, :])  # (j, i)
        for layer in range(2, m + 1):
            total = prev[:, None] + gain
            opts[layer, : g + 1] = total.argmax(axis=0)
            prev = total[opts[layer, : g + 1], idx]
    else:
        levels, a, b = [], np.array([1]), np.array([g])  # bisection of 1..g, level by level
        while a.size:
            mid = (a + b) // 2
            levels.append((mid, a - 1, b + 1))  # left / right neighbours solved before mid
            a, b = np.concatenate((a, mid + 1)), np.concatenate((mid - 1, b))
            a, b = a[a <= b], b[a <= b]
        for layer in range(2, m):
            lower, opt = np.maximum(opts[layer - 1, : g + 1], layer - 1), opts[layer]
            cur = np.full(g + 1, -np.inf)
            if np.maximum(idx - lower, 1).sum() <= _ONE_PASS * g:
                cur[1:], opt[1 : g + 1] = _segment_argmax(
                    prev, cw, cs, idx[1:], np.minimum(lower[1:], idx[:-1]), idx[:-1])
            else:
                opt[0], opt[g + 1] = 0, g
                for mid, left, right in levels:
                    jhi = np.minimum(opt[right], mid - 1)
                    jlo = np.minimum(np.maximum(opt[left], lower[mid]), jhi)
                    cur[mid], opt[mid] = _segment_argmax(prev, cw, cs, mid, jlo, jhi)
            prev = cur
        # the last layer only needs D[m][g]
        _, opts[m, g : g + 1] = _segment_argmax(
            prev, cw, cs, idx[g:], np.maximum(opts[m - 1, g : g + 1], m - 1), idx[g - 1 : g])
    bounds = [g]
    for layer in range(m, 1, -1):
        bounds.append(int(opts[layer, bounds[-1]]))
    return np.array([0, *bounds[::-1]])


def _refine(data: _Sorted, bounds: np.ndarray) -> np.ndarray:
    """Move all boundaries jointly to the best of multi-scale candidates, until stable.

    Each pass is an exact DP over ~100 candidates per boundary (a chain: boundary j only
    meets j-1 and j+1), so the SSE never rises and boundaries move together: every offset
    within +-_FINE values, plus log-spaced fractions (1 down to ~_FINE values) of each
    neighbouring cluster's size. Near the optimum the SSE is flat along joint shifts of
    many boundaries: Lloyd and small windows stall ~100 values short of it in the 589,824
    MiniLM weights. A fraction of exactly 1 lets a run of boundaries each step onto the
    next: a whole cluster migrates, fixing what the coarse bins misallocated.
    """
    n, b = data.n, bounds[1:-1].copy()
    fine = np.arange(-_FINE, _FINE + 1)
    rows = np.arange(b.size)
    w_end, s_end = float(data.cum_weight(np.array([n]))[0]), data.cs[n]
    cand, link = None, None
    for _ in range(_MAX_PASSES):
        size = np.diff(np.concatenate(([0], b, [n])))  # (m,) cluster sizes in values
        octaves = np.log2(max(int(size.max()), _FINE) / _FINE)
        frac = 2.0 ** (-np.arange(int(np.ceil(octaves * _PER_OCTAVE)) + 1) / _PER_OCTAVE)
        left = np.round(size[:-1, None] * frac).astype(np.int64)
        right = np.round(size[1:, None] * frac).astype(np.int64)
        offsets = np.concatenate((-left, np.broadcast_to(fine, (b.size, fine.size)), right), 1)
        new = data.snap(np.clip(b[:, None] + offsets, 1, n - 1))  # (m-1, candidates)
        cw, cs = data.cum_weight(new), data.cs[new]
        # the links between unchanged candidate sets are unchanged: most, after a pass or two
        todo = np.ones(b.size - 1, dtype=bool)
        if cand is not None and cand.shape == new.shape:
            same = (cand == new).all(axis=1)
            todo = ~(same[:-1] & same[1:])
        else:
            link = np.empty((b.size - 1, new.shape[1], new.shape[1]))
        link[todo] = _gain(cw[:-1][todo, :, None], cs[:-1][todo, :, None],
                           cw[1:][todo, None, :], cs[1:][todo, None, :])
        cand = new
        choice = _chain_dp(cw, cs, link, w_end, s_end)
        moved = cand[rows, choice]
        if np.array_equal(moved, b):
            break
        b = moved
    return np.concatenate(([0], b, [n]))


def _chain_dp(
    cw: np.ndarray, cs: np.ndarray, link: np.ndarray, w_end: float, s_end: float
) -> np.ndarray:
    """Index of the best candidate per boundary.

    cw, cs: (boundaries, candidates) prefix sums at the candidates; link[j, a, b]: gain of
    the cluster from candidate a of boundary j to candidate b of boundary j + 1.
    """
    n_bounds, n_cand = cw.shape
    best = _gain(0.0, 0.0, cw[0], cs[0])  # the first cluster: everything before
    back = np.empty((n_bounds - 1, n_cand), dtype=np.int64)
    cols = np.arange(n_cand)
    for j in range(n_bounds - 1):  # sequential over boundaries, vectorised over candidates
        total = link[j] + best[:, None]
        back[j] = total.argmax(axis=0)
        best = total[back[j], cols]
    choice = np.empty(n_bounds, dtype=np.int64)
    choice[-1] = int(np.argmax(best + _gain(cw[-1], cs[-1], w_end, s_end)))
    for j in range(n_bounds - 2, -1, -1):
        choice[j] = back[j, choice[j + 1]]
    return choice


# ---------------------------------------------------------------- fast (Lloyd)


def _lloyd(data: _Sorted, c: np.ndarray, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd on sorted data: assignment = searchsorted of the midpoints, O(k log n) a step.

    The same iterates as the textbook n x k version. Cells are ordered, so centroids stay
    sorted; an empty cluster keeps its previous centroid instead of becoming NaN.
    """
    bounds = None
    for _ in range(max(max_iter, 1)):
        mids = c[:-1] + np.diff(c) / 2  # (no overflow near the float64 limits)
        if data.xs.dtype != np.float64:  # round down into xs's dtype: searching float64
            # keys in float32 would copy xs each call; x <= key32 iff x <= mid then
            key = mids.astype(data.xs.dtype)
            mids = np.where(key > mids, np.nextafter(key, -np.inf, dtype=key.dtype), key)
        new = np.concatenate(([0], np.searchsorted(data.xs, mids.astype(data.xs.dtype),
                                                   side="right"), [data.n]))
        if bounds is not None and np.array_equal(new, bounds):
            break
        bounds = new
        if max_iter > 0:
            c = data.means(bounds, fallback=c)
    return c, bounds


def _init_centroids(data: _Sorted, m: int, init: str, seed: int) -> np.ndarray:
    if init == "linear":  # Deep Compression's best: also covers the rare large weights
        return np.linspace(data.lo, data.hi, m)
    if init == "density":  # evenly spaced quantiles of the (weighted) CDF
        target = (np.arange(m) + 0.5) / m * (data.n if data.cw is None else data.cw[-1])
        pos = target.astype(np.int64) if data.cw is None else np.searchsorted(data.cw, target) - 1
        return data.xs[np.clip(pos, 0, data.n - 1)].astype(np.float64)
    rng = np.random.default_rng(seed)
    starts = data.run_starts()
    distinct = data.xs[starts[:-1]].astype(np.float64)
    if init == "random":
        return np.sort(distinct[rng.choice(distinct.size, size=m, replace=False)])
    # kmeans++ over the distinct values, each weighted by its total weight
    mass = np.diff(data.cum_weight(starts))
    chosen = [int(rng.choice(distinct.size, p=mass / mass.sum()))]
    distinct /= data.unit  # squared distances in float64 range, whatever the data's scale
    dist2 = (distinct - distinct[chosen[0]]) ** 2
    for _ in range(m - 1):
        cum = np.cumsum(dist2 * mass)
        chosen.append(min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")),
                          cum.size - 1))
        np.minimum(dist2, (distinct - distinct[chosen[-1]]) ** 2, out=dist2)
    return np.sort(distinct[chosen]) * data.unit


# ---------------------------------------------------------------- codes


def _encode(x: np.ndarray, xs: np.ndarray, bounds: np.ndarray, x_lo: np.floating,
            x_hi: np.floating) -> np.ndarray:
    """codes[i] = number of cluster starts <= x[i]; cluster j starts at value xs[bounds[j]].

    A searchsorted over the n values costs ~30 ns each; instead a lookup table over
    equal-width bins answers every value whose bin holds no cluster start (the bin index
    is monotone in x, so comparing bins is exact there) and searchsorted fixes the rest.
    """
    n, inner = xs.size, bounds[1:-1]
    if inner.size == 0:
        return np.zeros(x.size, dtype=np.int64)
    starts = np.where(inner < n, xs[np.minimum(inner, n - 1)], np.inf).astype(x.dtype)
    dt = x.dtype.type  # x's range, not xs's: zero-weight values may lie outside xs's
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        scale = dt(_LUT_BINS) / (x_hi - x_lo)
    if not (np.isfinite(scale) and scale > 0):  # the range overflows or is ~0: plain search
        return np.searchsorted(starts, x, side="right").astype(np.int64)
    start_bin = ((starts[np.isfinite(starts)] - x_lo) * scale).astype(np.int64)
    lut = np.searchsorted(np.sort(start_bin), np.arange(_LUT_BINS + 2), side="left")
    lut[start_bin] = -1  # bins holding a cluster start: resolved below
    t = x - x_lo
    t *= scale
    codes = lut[t.astype(np.int32)]  # bin <= _LUT_BINS + 1 even after rounding
    fix = np.flatnonzero(codes < 0)
    codes[fix] = np.searchsorted(starts, x[fix], side="right")
    return codes
