"""Many small 1-D k-means problems at once: one per output channel or group of channels.

Per-channel codebooks of a large model mean tens of thousands of problems of a few
hundred values each; calling the exact engine (``kmeans1d``) in a Python loop is
dominated by per-call overhead (~5-10 ms a call). Two solvers work on all rows at once:

* ``kmeans1d_batched``: Lloyd's algorithm on prefix sums of the sorted rows. An iteration
  costs O(groups * k * log n) (a ``searchsorted`` of the k - 1 midpoints per row), so
  hundreds are cheap. In 1-D, Lloyd's clusters stay contiguous intervals of the sorted
  values, which makes the prefix-sum update exact. A local optimum: often 10-60% above
  the optimal SSE at k = 16.
* ``kmeans1d_exact_batched``: the optimal partition of every row (the dynamic program of
  ``kmeans1d(method="exact")``), O(k n log n) per row, vectorised across rows. Written in
  numpy: its work is many gathers and in-place updates of mid-sized arrays, where numpy's
  ``take`` and per-call cost beat torch's on CPU; it is ~10x slower than the Lloyd above.
"""

from __future__ import annotations

import numpy as np
import torch

from ....errors import ConfigError, DataError, ShapeError

__all__ = ["INITS", "kmeans1d_batched", "kmeans1d_exact_batched"]

INITS = ("density", "linear", "random", "kmeans++")
_FIRST = 2  # candidates tried for every (row, j) at once; wider ranges go to blocks
_WIDTHS = np.unique(np.round(1.5 ** np.arange(40)).astype(np.int64))  # block widths, x1.5
_BUDGET = 2**27  # bytes of argmax tables and work arrays per chunk of rows


@torch.no_grad()
def kmeans1d_batched(values: torch.Tensor, k: int, weights: torch.Tensor | None = None,
                     init: str = "density", max_iter: int = 300, seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on each row of ``values`` (groups, n) independently: a local optimum,
    ~10x faster than ``kmeans1d_exact_batched`` (the optimum).

    Returns ``(centroids, codes)``: centroids (groups, k) float64, ascending per row
    (entries of empty clusters repeat a neighbour), codes (groups, n) int64.

    Example:
        >>> x = torch.tensor([[0., 0.1, 5., 5.1], [1., 1., 2., 9.]], dtype=torch.float64)
        >>> c, codes = kmeans1d_batched(x, 2)
        >>> c.tolist()
        [[0.05, 5.05], [1.3333333333333333, 9.0]]
    """
    if values.ndim != 2 or values.numel() == 0:
        raise DataError(f"expected a non-empty (groups, n) tensor, got shape "
                        f"{tuple(values.shape)}")
    if init not in INITS:
        raise ConfigError(f"init must be one of {', '.join(INITS)} for batched k-means; "
                          f"got {init!r}")
    x = values.detach().to(torch.float64)
    if not torch.isfinite(x).all():
        raise DataError(f"{int((~torch.isfinite(x)).sum())} values are NaN or infinite; "
                        "fix the weights before clustering")
    groups, n = x.shape
    xs, order = x.sort(dim=1)
    w = torch.ones_like(xs) if weights is None else \
        weights.detach().to(torch.float64).reshape(groups, n).gather(1, order)
    zero = torch.zeros(groups, 1, dtype=torch.float64)
    p0 = torch.cat([zero, w.cumsum(1)], 1)  # (groups, n + 1)
    p1 = torch.cat([zero, (w * xs).cumsum(1)], 1)

    c = _initial_centroids(xs, w, p0, k, init, seed)

    ends = torch.full((groups, 1), n, dtype=torch.long)
    starts = torch.zeros(groups, 1, dtype=torch.long)
    for _ in range(max_iter):
        mid = (c[:, 1:] + c[:, :-1]) / 2  # (groups, k - 1)
        bounds = torch.cat([starts, torch.searchsorted(xs, mid), ends], 1)  # (groups, k + 1)
        weight = p0.gather(1, bounds[:, 1:]) - p0.gather(1, bounds[:, :-1])
        total = p1.gather(1, bounds[:, 1:]) - p1.gather(1, bounds[:, :-1])
        new = torch.where(weight > 0, total / weight.clamp(min=1e-300), c)
        new = torch.cummax(new, 1).values  # keep rows ascending where a cluster emptied
        if torch.equal(new, c):
            break
        c = new
    # codes from the midpoints that produced the final clusters, so every centroid is
    # the mean of its members
    codes = torch.searchsorted(mid.contiguous(), x, right=True)
    return new, codes


def _initial_centroids(xs: torch.Tensor, w: torch.Tensor, p0: torch.Tensor, k: int, init: str,
                       seed: int) -> torch.Tensor:
    """(groups, k) ascending starting centroids for every sorted row of ``xs`` at once."""
    groups, n = xs.shape
    frac = (torch.arange(k, dtype=torch.float64) + 0.5) / k
    if init == "density":  # weighted quantiles
        idx = torch.searchsorted(p0[:, 1:].contiguous(), p0[:, -1:] * frac)
        return xs.gather(1, idx.clamp(max=n - 1))
    if init == "linear":  # evenly spaced between min and max
        return xs[:, :1] + (xs[:, -1:] - xs[:, :1]) * frac
    gen = torch.Generator().manual_seed(seed)
    if init == "random":  # k values of each row, drawn without replacement
        idx = torch.rand(groups, n, generator=gen, dtype=torch.float64).argsort(1)[:, :k]
        return xs.gather(1, idx.clamp(max=n - 1)).sort(1).values
    # kmeans++: each next centroid drawn with probability ~ weight * squared distance to the
    # nearest chosen one; k passes over all rows at once
    probs = w / w.sum(1, keepdim=True).clamp(min=1e-300)
    first = torch.multinomial(probs.float().clamp(min=0) + 1e-30, 1, generator=gen)
    chosen = [xs.gather(1, first)]
    nearest = (xs - chosen[0]) ** 2
    for _ in range(1, k):
        score = (w * nearest).float() + 1e-30
        nxt = xs.gather(1, torch.multinomial(score, 1, generator=gen))
        chosen.append(nxt)
        nearest = torch.minimum(nearest, (xs - nxt) ** 2)
    return torch.cat(chosen, 1).sort(1).values


@torch.no_grad()
def kmeans1d_exact_batched(values: torch.Tensor, k: int, weights: torch.Tensor | None = None,
                           chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The optimal (weighted) k-means partition of each row of ``values`` (groups, n).

    The same SSE as ``kmeans1d(row, k, method="exact")`` on every row (ties between equally
    good partitions aside), without a Python loop over rows. ``weights`` (groups, n): finite
    and >= 0; a row whose weights are all 0 is clustered unweighted. ``chunk``: rows
    solved together (default: what ~128 MB of work arrays hold, ~256 rows).

    Returns ``(centroids, codes)`` like ``kmeans1d_batched``: centroids (groups, k) float64,
    ascending per row, each used one the weighted mean of its members (a row with fewer
    than k distinct values repeats entries); codes (groups, n) int64.

    Example:
        >>> c, codes = kmeans1d_exact_batched(torch.tensor([[0., 1., 2., 10.]]), 2)
        >>> c.tolist(), codes.tolist()
        ([[1.0, 10.0]], [[0, 0, 0, 1]])
    """
    if values.ndim != 2 or values.numel() == 0:
        raise DataError(f"expected a non-empty (groups, n) tensor, got shape "
                        f"{tuple(values.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k!r}; pass e.g. k=16 for 4 bits")
    x = values.detach().cpu().double().numpy()
    if not np.isfinite(x).all():
        raise DataError(f"{int((~np.isfinite(x)).sum())} values are NaN or infinite; "
                        "fix the weights before clustering")
    groups, n = x.shape
    order = np.argsort(x, axis=1, kind="stable")
    xs = np.take_along_axis(x, order, 1)
    w = None
    if weights is not None:
        if tuple(weights.shape) != x.shape:
            raise ShapeError(f"weights shape {tuple(weights.shape)} differs from values shape "
                             f"{x.shape}; pass one weight per value")
        w = weights.detach().cpu().double().numpy()
        if not (np.isfinite(w).all() and (w >= 0).all()):
            raise DataError("weights must be finite and >= 0; fix the importance first")
        w = np.take_along_axis(w, order, 1)
        w[~w.any(1)] = 1.0  # no signal in a row: plain SSE, as kmeans1d does
    # centred rows: the prefix sums stay small, so the gains S**2 / W keep their digits
    mean = (xs.mean(1) if w is None else (w * xs).sum(1) / w.sum(1))[:, None]
    xc = xs - mean
    m = min(k, n)
    if chunk is None:  # memory: int16 argmax table (m + 1) x (n - m + 1), ~25 float rows
        # of n; speed: numpy calls are per level, so short levels want more rows at once
        chunk = min(_BUDGET // (2 * (m + 1) * (n - m + 1) + 200 * n),
                    max(256, 2**17 // (n - m + 1)))
    chunk = max(int(chunk), 1)
    bounds = np.tile(np.arange(n + 1), (groups, 1))  # m == n: one value per cluster
    if m < n:
        bounds = np.concatenate([_optimal_bounds(xc[g:g + chunk],
                                                 None if w is None else w[g:g + chunk], m)
                                 for g in range(0, groups, chunk)])
    centroids = _means(xs, xc, mean, w, bounds)
    centroids = np.concatenate([centroids, np.repeat(centroids[:, -1:], k - m, 1)], 1)
    starts = np.zeros((groups, n + 1), dtype=np.int64)  # 1 where a cluster starts
    np.put_along_axis(starts, bounds[:, 1:-1], 1, 1)
    codes = np.empty_like(order)
    np.put_along_axis(codes, order, np.cumsum(starts[:, :n], 1), 1)
    return (torch.from_numpy(centroids).to(values.device),
            torch.from_numpy(codes).to(values.device))


def _means(xs: np.ndarray, xc: np.ndarray, mean: np.ndarray, w: np.ndarray | None,
           bounds: np.ndarray) -> np.ndarray:
    """(groups, m) weighted mean of each cluster; a one-value cluster gets that value exactly."""
    zero = np.zeros((xs.shape[0], 1))
    cs = np.concatenate([zero, np.cumsum(xc if w is None else w * xc, 1)], 1)
    cw = np.concatenate([zero, np.cumsum(np.ones_like(xs) if w is None else w, 1)], 1)
    lo, hi = bounds[:, :-1], bounds[:, 1:]
    weight = np.take_along_axis(cw, hi, 1) - np.take_along_axis(cw, lo, 1)
    first, last = np.take_along_axis(xs, lo, 1), np.take_along_axis(xs, hi - 1, 1)
    with np.errstate(invalid="ignore", divide="ignore"):  # weight 0: zero-weight members only
        c = (np.take_along_axis(cs, hi, 1) - np.take_along_axis(cs, lo, 1)) / weight + mean
    c = np.where(weight > 0, c, (first + last) / 2)
    c = np.where(first == last, first, c)
    return np.maximum.accumulate(c, 1)  # rounding must not unsort neighbouring means


def _bisection(size: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Levels of the bisection of 1..size: (mids, left, right neighbours solved before)."""
    levels, a, b = [], np.array([1]), np.array([size])
    while a.size:
        mid = (a + b) // 2
        levels.append((mid, a - 1, b + 1))
        a, b = np.concatenate([a, mid + 1]), np.concatenate([mid - 1, b])
        a, b = a[a <= b], b[a <= b]
    return levels


def _optimal_bounds(xc: np.ndarray, w: np.ndarray | None, m: int) -> np.ndarray:
    """Cluster starts (rows, m + 1), 0 = b0 < ... < bm = n, of each row's optimal partition.

    D_l[j] = max_i D_(l-1)[i] + S(i, j)**2 / W(i, j) is the best total gain of l clusters
    on the first j sorted values (their SSE is sum(w x**2) - gain). The cost is concave
    Monge, so the rightmost argmax opt_l[j] is non-decreasing in j and >= opt_(l-1)[j]
    (Knuth): each layer is a divide and conquer over j, the same bisection for every row;
    only the candidate ranges [lo, hi] differ. Layer l needs j in [l, n - m + l] only.
    """
    rows, n = xc.shape
    size = n - m + 1  # j's per layer; local index u = j - layer + 1 in 1..size
    # (rows, 2n + 1): column n + i holds prefix position i; the n columns on the left make
    # every candidate window start inside its own row (as -inf candidates)
    cs = np.zeros((rows, 2 * n + 1))
    np.cumsum(xc if w is None else xc * w, 1, out=cs[:, n + 1:])
    cw = None
    if w is not None:
        cw = np.full((rows, 2 * n + 1), -1.0)  # -1: the padding never divides by 0
        cw[:, n] = 0.0
        np.cumsum(w, 1, out=cw[:, n + 1:])
    total = np.full((rows, 2 * n + 1), -np.inf)  # D_(layer - 1) at column n + i
    weight = np.arange(1.0, n + 1) if cw is None else np.maximum(cw[:, n + 1:], 1e-300)
    total[:, n + 1:] = cs[:, n + 1:] ** 2 / weight
    table = np.zeros((m + 1, rows, size), dtype=np.int16 if n < 2**15 else np.int32)
    levels = _bisection(size)
    base = (np.arange(rows) * (2 * n + 1) + n)[:, None]  # flat column of position 0
    prev = np.zeros((rows, size + 2), dtype=np.int64)  # opt_(layer - 1) at u + 1
    for layer in range(2, m + 1):
        opt = np.zeros((rows, size + 2), dtype=np.int64)  # u = 0, size + 1: sentinels
        opt[:, -1] = n
        cur = np.full_like(total, -np.inf)
        for mid, left, right in levels if layer < m else [(np.array([size]), [0], [size + 1])]:
            j = mid + layer - 1
            hi = np.minimum(opt.take(right, 1), j - 1)  # (rows, segments)
            span = hi - np.maximum(opt.take(left, 1), prev.take(mid + 1, 1))
            best, arg = _best_candidates(cs.ravel(), None if cw is None else cw.ravel(),
                                         total.ravel(), (base + hi).ravel(),
                                         (base + j).ravel(), span.ravel(), n)
            cur[:, n + j] = best.reshape(hi.shape)
            opt[:, mid] = hi - arg.reshape(hi.shape)
        table[layer] = opt[:, 1:-1]
        prev, total = opt, cur
        prev[:, -1] = 0  # the next layer's last j was not solved here: no Knuth bound
    bounds = np.empty((rows, m + 1), dtype=np.int64)
    bounds[:, 0], bounds[:, m] = 0, n
    r = np.arange(rows)
    for layer in range(m, 1, -1):  # backtrack from j = n
        bounds[:, layer - 1] = table[layer, r, bounds[:, layer] - layer]
    return bounds


def _best_candidates(cs: np.ndarray, cw: np.ndarray | None, total: np.ndarray, top: np.ndarray,
                     jcol: np.ndarray, span: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per (row, j) pair p: the max over t >= 0 of total[i] + gain(i, j), i = top[p] - t,
    and its t; t = 0..span[p] is the proven range (flat column indices).

    Most ranges hold 1 or 2 candidates: those are tried for all pairs at once. Wider ranges
    are grouped by width (rounded up by at most 2x) into dense (pairs, width) blocks: one
    width for a whole level would waste ~5x, since rows differ. A padded window reaches at
    most ``hi`` candidates below the range, still in its row's padding; candidates outside
    the range are valid clusters (or -inf) and change nothing. Ties keep the smallest t:
    the rightmost argmax, the one the monotonicity holds for.
    """
    s_j = cs.take(jcol)
    w_j = (jcol - top).astype(np.float64) if cw is None else cw.take(jcol)
    best, arg = _gain_total(cs, cw, total, top, s_j, w_j, 0), np.zeros(top.size, np.int64)
    for t in range(1, _FIRST):
        _keep_better(best, arg, _gain_total(cs, cw, total, top - t, s_j, w_j, t), t)
    rest = np.flatnonzero(span >= _FIRST)
    size = np.searchsorted(_WIDTHS, span[rest] - _FIRST + 1).astype(np.int8)
    order = rest[np.argsort(size, kind="stable")]  # a radix sort on int8
    start = 0
    for cls, count in enumerate(np.bincount(size).tolist()):
        q, start = order[start:start + count], start + count
        if count:
            width = min(int(_WIDTHS[cls]), n)
            offsets = np.arange(_FIRST, _FIRST + width)
            val = _gain_total(cs, cw, total, top.take(q)[:, None] - offsets,
                              s_j.take(q)[:, None], w_j.take(q)[:, None],
                              offsets.astype(np.float64))
            a = val.argmax(1)  # the first maximum: the rightmost i
            _keep_better(best, arg, val.ravel()[np.arange(count) * width + a], a + _FIRST, q)
    return best, arg


def _keep_better(best: np.ndarray, arg: np.ndarray, val: np.ndarray, t: np.ndarray | int,
                 q: np.ndarray | None = None) -> None:
    """best[q], arg[q] = val, t where val is strictly larger (ties keep the smaller t)."""
    if q is None:
        arg[val > best] = t
        np.maximum(best, val, out=best)
        return
    up = val > best[q]
    best[q[up]], arg[q[up]] = val[up], np.asarray(t)[up]


def _gain_total(cs: np.ndarray, cw: np.ndarray | None, total: np.ndarray, i: np.ndarray,
                s_j: np.ndarray, w_j: np.ndarray, t: np.ndarray | int) -> np.ndarray:
    """total[i] + (S_j - S_i)**2 / (W_j - W_i); unit weights pass w_j = j - top, t = top - i."""
    val = cs.take(i)  # np.take and in-place ops: ~2x faster than fancy indexing here
    np.subtract(s_j, val, out=val)
    val *= val
    if cw is None:
        val /= w_j + t
    else:  # a cluster of zero-weight values has S = 0 exactly: gain 0, not 0 / 0
        val /= np.maximum(w_j - cw.take(i), 1e-300)
    val += total.take(i)
    return val
