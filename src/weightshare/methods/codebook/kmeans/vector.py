"""Weighted k-means in d dimensions: the engine under vector codebooks.

``kmeans_nd(points, k, weights)`` clusters n points of dimension d into k centroids,
minimising sum_i sum_j w_ij (x_ij - c_(code i), j)^2: each coordinate may carry its own
weight (the importance of the weight it is), which covers plain (w = 1) and per-point
weights. At d = 1 it is the exact 1-D engine (``kmeans1d``), so a scalar and a 1-d vector
codebook agree. Above, no exact algorithm is practical: k-means++ seeding on a sample
(weighted by importance) followed by Lloyd iterations on all points, chunked so that
memory stays O(chunk x k) whatever n; an empty cluster is re-seeded at the point that
costs most. Why not scikit-learn: its KMeans takes per-point weights only (not one per
coordinate), and is an optional dependency.
"""

from __future__ import annotations

import torch

from ....errors import ConfigError, DataError, ShapeError
from .exact import kmeans1d

_CHUNK_BYTES = 1 << 26  # distance tile: at most 64 MiB of float64 a step


def kmeans_nd(points: torch.Tensor, k: int, weights: torch.Tensor | None = None,
              max_iter: int = 25, seed: int = 0, sample: int = 1 << 16,
              tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster ``points`` (n, d) into at most ``k`` centroids; returns ``(centroids (k, d)
    float64, codes (n,) int64)``.

    ``weights``: None, (n,) per point, or (n, d) per coordinate; non-negative.
    At d = 1 the result is ``kmeans1d(points, k, weights, method="exact")`` (centroids
    padded to k rows by repeating the last one when there are fewer distinct values).

    Example:
        >>> pts = torch.tensor([[0., 0.], [0., .1], [5., 5.], [5., 5.1]])
        >>> c, codes = kmeans_nd(pts, 2)
        >>> codes[0] == codes[1], codes[2] == codes[3], codes[0] != codes[2]
        (tensor(True), tensor(True), tensor(True))
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k!r}")
    if points.dim() != 2 or points.shape[0] == 0:
        raise ShapeError(f"points must be a non-empty (n, d) tensor, got shape "
                         f"{tuple(points.shape)}")
    x = points.detach().double()
    n, d = x.shape
    if not torch.isfinite(x).all():
        raise DataError("points contain NaN or inf; fix the weights before clustering")
    w = _coordinate_weights(weights, n, d)
    if d == 1:
        cent, codes = kmeans1d(x[:, 0], k, None if w is None else w[:, 0], method="exact")
        cent = cent.double()
        if cent.numel() < k:
            cent = torch.cat([cent, cent[-1:].expand(k - cent.numel())])
        return cent.unsqueeze(1), codes.reshape(-1)
    gen = torch.Generator().manual_seed(seed)
    cent = _seed(x, w, k, gen, sample)
    codes = assign(x, cent, w)
    prev = float("inf")
    for _ in range(max_iter):
        cent = _update(x, w, codes, cent)
        codes = assign(x, cent, w)
        cost = float(cost_of(x, cent, codes, w))
        if prev - cost <= tol * max(prev, 1e-300):
            break
        prev = cost
    return cent, codes


def _coordinate_weights(weights: torch.Tensor | None, n: int, d: int) -> torch.Tensor | None:
    if weights is None:
        return None
    w = weights.detach().double()
    if w.shape == (n,):
        w = w.unsqueeze(1).expand(n, d)
    if w.shape != (n, d):
        raise ShapeError(f"weights must be (n,) or (n, d) = ({n}, {d}), got {tuple(w.shape)}")
    if not torch.isfinite(w).all() or bool((w < 0).any()):
        raise DataError("weights must be finite and >= 0")
    return w if bool((w > 0).any()) else None


def _chunk(n_cols: int) -> int:
    return max(1, _CHUNK_BYTES // (8 * max(n_cols, 1)))


def assign(x: torch.Tensor, cent: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Index of each point's nearest centroid (weighted squared distance), in chunks.

    Distances are compared in float32 after centring on the centroids' mean (the argmin
    only needs their order; float32 halves the memory traffic of the (chunk, k) tile)."""
    out = torch.empty(x.shape[0], dtype=torch.int64)
    mid = cent.mean(0, keepdim=True)
    c = (cent - mid).float()
    c2 = c * c  # (k, d)
    step = _chunk(cent.shape[0]) * 2
    for a in range(0, x.shape[0], step):
        xb = (x[a:a + step] - mid).float()
        if w is None:  # |x|^2 is the same for every centroid: left out
            dist = torch.addmm(c2.sum(1).unsqueeze(0), xb, c.T, alpha=-2)
        else:
            wb = w[a:a + step].float()
            dist = torch.addmm(wb @ c2.T, wb * xb, c.T, alpha=-2)
        out[a:a + step] = dist.argmin(1)
    return out


def cost_of(x: torch.Tensor, cent: torch.Tensor, codes: torch.Tensor,
            w: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted sum of squared errors of an assignment."""
    err = (x - cent[codes]) ** 2
    return (err if w is None else err * w).sum()


def _update(x: torch.Tensor, w: torch.Tensor | None, codes: torch.Tensor,
            cent: torch.Tensor) -> torch.Tensor:
    k, d = cent.shape
    ww = torch.ones_like(x) if w is None else w
    num = torch.zeros(k, d, dtype=x.dtype).index_add_(0, codes, ww * x)
    den = torch.zeros(k, d, dtype=x.dtype).index_add_(0, codes, ww)
    new = torch.where(den > 0, num / den.clamp(min=1e-300), cent)
    empty = torch.nonzero(torch.bincount(codes, minlength=k) == 0).flatten()
    if empty.numel():  # re-seed empty clusters at the points that cost most now
        err = ((x - new[codes]) ** 2 * ww).sum(1)
        worst = torch.topk(err, min(int(empty.numel()), x.shape[0])).indices
        new[empty[:worst.numel()]] = x[worst]
    return new


def _seed(x: torch.Tensor, w: torch.Tensor | None, k: int, gen: torch.Generator,
          sample: int) -> torch.Tensor:
    """k-means++ on a sample of at most ``sample`` points (importance-weighted); above
    1,024 entries k-means++ costs O(k^2) passes, so entries are drawn from the sample."""
    n = x.shape[0]
    sample = min(sample, max(32 * k, 4096))
    pw = torch.ones(n, dtype=x.dtype) if w is None else w.mean(1)
    if n > sample:
        idx = torch.multinomial(pw + 1e-12 * pw.max(), sample, replacement=False,
                                generator=gen)
        xs, ps = x[idx], pw[idx]
    else:
        xs, ps = x, pw
    m = xs.shape[0]
    if m <= k:  # fewer points than entries: every point is an entry, the rest repeat
        return torch.cat([xs, xs[-1:].expand(k - m, -1)]) if m < k else xs.clone()
    if k > 1024:
        return xs[torch.multinomial(ps + 1e-300, k, replacement=False, generator=gen)].clone()
    first = int(torch.multinomial(ps + 1e-300, 1, generator=gen))
    chosen = [first]
    dist = ((xs - xs[first]) ** 2).sum(1)
    for _ in range(k - 1):
        prob = dist * ps
        total = float(prob.sum())
        if total <= 0:  # all points coincide with chosen ones: pick any remaining
            nxt = int(torch.randint(m, (1,), generator=gen))
        else:
            nxt = int(torch.multinomial(prob / total, 1, generator=gen))
        chosen.append(nxt)
        torch.minimum(dist, ((xs - xs[nxt]) ** 2).sum(1), out=dist)
    return xs[torch.tensor(chosen)].clone()
