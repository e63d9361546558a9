"""Many small 1-D k-means problems at once: one per output channel or group of channels.

Per-channel codebooks of a large model mean tens of thousands of problems of a few
hundred values each; calling the exact engine (``kmeans1d``) in a Python loop is
dominated by per-call overhead. Here every row is sorted once and Lloyd's iterations
run on prefix sums of the sorted rows: an iteration costs O(groups * k * log n)
(a ``searchsorted`` of the k - 1 midpoints per row), not O(groups * n), so
hundreds of iterations are cheap. In 1-D, Lloyd's clusters stay contiguous
intervals of the sorted values, which is what makes the prefix-sum update exact.

This is Lloyd's algorithm: a local optimum, not the guaranteed optimum of
``kmeans1d(method="exact")``.
"""

from __future__ import annotations

import torch

from .errors import ConfigError, DataError

INITS = ("density", "linear")


@torch.no_grad()
def kmeans1d_batched(values: torch.Tensor, k: int, weights: torch.Tensor | None = None,
                     init: str = "density", max_iter: int = 300) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
    """Lloyd's k-means on each row of ``values`` (groups, n) independently.

    Returns ``(centroids, codes)``: centroids (groups, k) float64, ascending per row
    (entries of empty clusters repeat a neighbour), codes (groups, n) int64.

    Example:
        >>> import torch
        >>> c, codes = kmeans1d_batched(torch.tensor([[0., 0.1, 5., 5.1], [1., 1., 2., 9.]]), 2)
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

    frac = (torch.arange(k, dtype=torch.float64) + 0.5) / k
    if init == "density":  # weighted quantiles
        idx = torch.searchsorted(p0[:, 1:].contiguous(), p0[:, -1:] * frac)
        c = xs.gather(1, idx.clamp(max=n - 1))
    else:  # evenly spaced between min and max
        c = xs[:, :1] + (xs[:, -1:] - xs[:, :1]) * frac

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
