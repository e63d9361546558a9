"""The exact engine: optimal partitions by dynamic programming over sorted values.

In 1-D the optimum is a contiguous partition of the sorted values, so after one sort
everything is prefix sums, ``searchsorted`` and small dynamic programs (DP) over whole
arrays: plain numpy, no Python loop over values.
"""

from __future__ import annotations

import numpy as np

from .sorted import SortedValues

# With at most this many distinct values the DP runs over all of them (optimal); above
# it, over at most this many bins, and the result is refined (see refine).
EXACT_MAX_DISTINCT = 2048
_ONE_PASS = 32  # a DP layer is one flat pass when Knuth's bound leaves <= this * g pairs
_DENSE_MAX = 320  # DPs over at most this many items use a dense (g, g) gain matrix
_FINE = 16  # refinement tries every offset within +-_FINE values of each boundary ...
_PER_OCTAVE = 3  # ... and this many fractions of a neighbouring cluster per halving
_MAX_PASSES = 100  # refinement passes (a safety cap; 2-6 are usual)


def exact_bounds(data: SortedValues, m: int) -> np.ndarray:
    """Partition (m + 1 positions) of the optimal, or refined near-optimal, clustering."""
    if m == 1:
        return np.array([0, data.n])
    if data.n_distinct <= EXACT_MAX_DISTINCT:  # DP over every distinct value: optimal
        grid = data.run_starts() if data.n_distinct < data.n else np.arange(data.n + 1)
        return grid[_dp_partition(data.cum_weight(grid), data.cs[grid], m)]
    # 8 to 16 bins per optimal cluster; the DP costs O(m * bins * log bins)
    grid = _coarse_grid(data, min(max(16 * m, 256), EXACT_MAX_DISTINCT))
    return _refine(data, grid[_dp_partition(data.cum_weight(grid), data.cs[grid], m)])


def _coarse_grid(data: SortedValues, n_bins: int) -> np.ndarray:
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
    dw, ds = np.asarray(pw - qw), np.asarray(ps - qs, dtype=np.float64)
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


def _refine(data: SortedValues, bounds: np.ndarray) -> np.ndarray:
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
    cand: np.ndarray | None = None
    link = np.empty((0, 0, 0))
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
