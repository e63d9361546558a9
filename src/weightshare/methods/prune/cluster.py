"""Clustering with the zero shared: ``cluster_(model, ClusterConfig(zero=True))``.

Each group of weights gets K - 1 = 2**bits - 1 nonzero values plus an exact zero:
the nonzero weights are clustered optimally (exact 1-D k-means), then Lloyd iterations
with the zero entry pinned move every weight to its nearest value, zero included. After
``prune_`` the pruned weights are exact zeros and stay so; on a dense weight the
smallest ones join the zero. The result is a ``ZeroCodebookWeight`` (sparse or dense
layout, whichever is smaller).
"""

from __future__ import annotations

import torch
from torch import nn

from ...core.protocol import dense_weight
from ...core.select import Target, select_targets
from ...core.walk import check_targets, share_targets
from ...errors import ShapeError
from ..codebook.calibration import Calibration, input_importance
from ..codebook.config import ClusterConfig, group_size_for
from ..codebook.kmeans import kmeans1d
from ..codebook.weight import CodebookWeight
from .sparse import SparseWeight
from .zero_codebook import ZeroCodebookWeight

LLOYD_ITERATIONS = 50


def zero_cluster_(model: nn.Module, config: ClusterConfig, calibration: Calibration | None = None,
                  *, progress: bool | None = None) -> nn.Module:
    """``cluster_`` for ``config.zero``: zero-sharing codebooks, in place (see the module
    docstring). Pruned (``sparse``) and codebook weights can be clustered again."""
    targets = select_targets(model, config.include, config.exclude, config.min_size,
                             what="cluster")
    check_targets(targets, reshare=(CodebookWeight, SparseWeight, ZeroCodebookWeight))
    for t in targets:
        rows = dense_weight(t.module).shape[t.axis]
        if config.granularity == "per_group" and rows % config.group_size:
            raise ShapeError(f"group_size {config.group_size} does not divide the {rows} output "
                             f"channels of {t.fqn}; choose a divisor of {rows} or exclude it")
    importance = input_importance(model, targets, calibration) if calibration is not None else {}
    share_targets(targets, lambda t: _cluster_one(t, config, importance.get(t.name)),
                  progress=progress, desc="clustering")
    return model


@torch.no_grad()
def _cluster_one(t: Target, config: ClusterConfig, importance: torch.Tensor | None
                 ) -> tuple[ZeroCodebookWeight, torch.Tensor]:
    weight = dense_weight(t.module).detach()
    rows = weight.shape[t.axis]
    group_size = group_size_for(config.granularity, rows, config.group_size)
    groups = rows // group_size
    values = weight.movedim(t.axis, 0).reshape(groups, -1).double()
    imp = None if importance is None else importance.movedim(t.axis, 0).reshape(groups, -1)
    k = config.levels - 1
    codebook = torch.zeros(groups, k, dtype=torch.float64)
    codes = torch.zeros(values.shape, dtype=torch.int64)
    for g in range(groups):
        codebook[g], codes[g] = zero_kmeans(values[g], k, None if imp is None else imp[g])
    codes = codes.reshape(weight.movedim(t.axis, 0).shape).movedim(0, t.axis)
    zw = ZeroCodebookWeight(codes, config.bits, config.granularity, group_size, t.axis)
    return zw, codebook.to(weight.dtype)


def zero_kmeans(values: torch.Tensor, k: int, weights: torch.Tensor | None = None,
                iterations: int = LLOYD_ITERATIONS) -> tuple[torch.Tensor, torch.Tensor]:
    """k nonzero centroids plus a pinned zero for 1-D ``values``.

    Returns ``(centroids, codes)``: centroids (k,) float64 ascending (repeating the last
    when there are fewer distinct values), codes (n,) int64 with 0 = zero and ``j + 1`` =
    ``centroids[j]``.

    Example:
        >>> x = torch.tensor([0., 0., 0.1, 1., 1.2, -2.], dtype=torch.float64)
        >>> c, codes = zero_kmeans(x, 2)
        >>> c.tolist(), codes.tolist()
        ([-2.0, 1.1], [0, 0, 0, 2, 2, 1])
    """
    x = values.double().reshape(-1)
    w = torch.ones_like(x) if weights is None else weights.double().reshape(-1)
    nonzero = x != 0
    if not bool(nonzero.any()):
        return torch.zeros(k, dtype=torch.float64), torch.zeros(x.numel(), dtype=torch.int64)
    c, _ = kmeans1d(x[nonzero], k, weights=None if weights is None else w[nonzero])
    c = c.double().sort().values
    codes = None
    for _ in range(iterations):
        new = _nearest(x, c)
        if codes is not None and torch.equal(new, codes):
            break
        codes = new
        sums = torch.zeros(c.numel() + 1, dtype=torch.float64).index_add_(0, codes, w * x)
        mass = torch.zeros(c.numel() + 1, dtype=torch.float64).index_add_(0, codes, w)
        c = torch.where(mass[1:] > 0, sums[1:] / mass[1:].clamp(min=1e-300), c)
    assert codes is not None
    if c.numel() < k:  # fewer distinct nonzero values than entries
        c = torch.cat([c, c[-1:].expand(k - c.numel())])
    return c, codes


def _nearest(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Code of the nearest of [0, *c] for each value (c ascending): 0 or j + 1."""
    table = torch.cat([c.new_zeros(1), c])
    order = table.argsort()
    ordered = table[order]
    mids = (ordered[1:] + ordered[:-1]) / 2
    return order[torch.searchsorted(mids, x)]
