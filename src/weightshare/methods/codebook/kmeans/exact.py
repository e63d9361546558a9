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
from .dp import EXACT_MAX_DISTINCT, exact_bounds
from .lloyd import init_centroids, lloyd
from .sorted import SortedValues

__all__ = ["EXACT_MAX_DISTINCT", "kmeans1d", "sse"]

METHODS = ("exact", "fast")
INITS = ("linear", "density", "random", "kmeans++")

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
    data = SortedValues(x, w)
    m = min(k, data.n_distinct)
    if method == "exact":
        bounds = exact_bounds(data, m)
        centroids = data.means(bounds)
    else:
        centroids, bounds = lloyd(data, init_centroids(data, m, init, seed), max_iter)
    starts, x_lo, x_hi = _starts(data, bounds), data.x_lo, data.x_hi
    del data  # sorted copy and prefix sums: freed before the codes are allocated
    codes = _encode(x, starts, x_lo, x_hi)
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


# ---------------------------------------------------------------- codes


def _starts(data: SortedValues, bounds: np.ndarray) -> np.ndarray:
    """The value each cluster but the first starts at (inf for an empty last cluster)."""
    n, inner = data.xs.size, bounds[1:-1]
    return np.where(inner < n, data.xs[np.minimum(inner, n - 1)], np.inf)


def _encode(x: np.ndarray, starts: np.ndarray, x_lo: np.floating,
            x_hi: np.floating) -> np.ndarray:
    """codes[i] = number of cluster starts <= x[i] (``starts``: see ``_starts``).

    A searchsorted over the n values costs ~30 ns each; instead a lookup table over
    equal-width bins answers every value whose bin holds no cluster start (the bin index
    is monotone in x, so comparing bins is exact there) and searchsorted fixes the rest.
    """
    if starts.size == 0:
        return np.zeros(x.size, dtype=np.int64)
    starts = starts.astype(x.dtype)
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
    bins = t.astype(np.int32)  # bin <= _LUT_BINS + 1 even after rounding
    del t
    codes = lut[bins]
    del bins
    fix = np.flatnonzero(codes < 0)
    codes[fix] = np.searchsorted(starts, x[fix], side="right")
    return codes
