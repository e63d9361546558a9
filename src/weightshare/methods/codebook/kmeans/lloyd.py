"""The fast engine: Lloyd's algorithm on sorted values, and its initialisations."""

from __future__ import annotations

import numpy as np

from .sorted import SortedValues


def lloyd(data: SortedValues, c: np.ndarray, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd on sorted data: assignment = searchsorted of the midpoints, O(k log n) a step.

    The same iterates as the textbook n x k version. Cells are ordered, so centroids stay
    sorted; an empty cluster keeps its previous centroid instead of becoming NaN.
    """
    bounds: np.ndarray | None = None
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
    assert bounds is not None  # the loop runs at least once
    return c, bounds


def init_centroids(data: SortedValues, m: int, init: str, seed: int) -> np.ndarray:
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
