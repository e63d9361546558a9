"""cluster_: turn the selected weights of a model into codebook weights, in place."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...core.guard import before_sharing
from ...core.protocol import dense_weight
from ...core.select import Target, select_targets
from ...core.walk import check_targets, share_targets
from .calibration import Calibration, input_importance
from .config import ClusterConfig, group_size_for
from .groups import group_sizes, warn_changes
from .kmeans import EXACT_MAX_DISTINCT, kmeans1d, kmeans1d_batched, kmeans1d_exact_batched
from .weight import CodebookWeight, codes_dtype


def cluster_(model: nn.Module, config: ClusterConfig | None = None,
             calibration: Calibration | None = None, *, progress: bool | None = None,
             **_options: Any) -> nn.Module:
    """Cluster the selected weights of ``model`` to ``2**bits`` shared values, in place.

    Each selected weight becomes a codebook weight (see ``CodebookWeight``): a trainable
    codebook of shape (groups, 2**bits) plus integer codes; the dense weight is dropped.
    With ``calibration`` inputs the clustering is data-aware: each weight counts in
    proportion to the mean square of the input it multiplies. Tied weights are clustered
    once and stay tied.

    Example:
        >>> import torch, weightshare as ws
        >>> model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU())
        >>> _ = ws.cluster_(model, ws.ClusterConfig(bits=2))
        >>> model[0].weight.unique().numel() <= 4
        True
    """
    config = config or ClusterConfig()
    before_sharing(model)
    if config.zero:  # zero-sharing codebooks live with pruning (methods/prune)
        from ..prune.cluster import zero_cluster_

        return zero_cluster_(model, config, calibration, progress=progress)
    targets = select_targets(model, config.include, config.exclude, config.min_size,
                             what="cluster")
    check_targets(targets, reshare=(CodebookWeight,))
    sizes, changes = group_sizes(targets, config)  # per_group fallback (groups.py)
    warn_changes(changes)
    importance = input_importance(model, targets, calibration) if calibration is not None else {}
    share_targets(targets, lambda t: _cluster_one(t, config, importance.get(t.name),
                                                  sizes.get(t.name)),
                  progress=progress, desc="clustering")
    return model


@torch.no_grad()
def _cluster_one(t: Target, config: ClusterConfig, importance: torch.Tensor | None,
                 group_size: int | None = None) -> tuple[CodebookWeight, torch.Tensor]:
    """The codebook weight of one target and its codebook (groups, 2**bits), weight dtype.
    ``group_size``: rows per codebook when the fallback changed it (groups.py)."""
    weight = dense_weight(t.module).detach()
    rows = weight.shape[t.axis]
    group_size = group_size or group_size_for(config.granularity, rows, config.group_size)
    groups = rows // group_size

    # (groups, values per group): a group is `group_size` consecutive output channels
    values = weight.movedim(t.axis, 0).reshape(groups, -1)
    imp = None if importance is None else importance.movedim(t.axis, 0).reshape(groups, -1)

    codebook, codes = _solve(values, imp, config)
    moved_shape = weight.movedim(t.axis, 0).shape
    # narrow first: the int64 codes of a large tensor are 8 bytes a weight
    codes = codes.to(codes_dtype(config.bits)).reshape(moved_shape).movedim(0, t.axis)
    stored = getattr(torch, config.codebook_dtype) if config.codebook_dtype else weight.dtype
    cw = CodebookWeight(codes.contiguous(), config.bits, config.granularity, group_size, t.axis,
                        dense_dtype=weight.dtype if stored != weight.dtype else None)
    return cw, codebook.to(stored)


def _solve(values: torch.Tensor, imp: torch.Tensor | None,
           config: ClusterConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One k-means problem per row of ``values`` (groups, n) -> codebook (groups, 2**bits)
    float64 and codes (groups, n) int64."""
    groups, levels = values.shape[0], config.levels
    if config.method == "fast" and groups > 1:
        # many small problems: Lloyd on all groups at once (see kmeans/batched.py)
        return kmeans1d_batched(values, levels, imp, init=config.init, seed=config.seed)
    if config.method == "exact" and groups > 1 and values.shape[1] <= EXACT_MAX_DISTINCT:
        # the same optimum as the kmeans1d loop below, solved for all groups at once
        return kmeans1d_exact_batched(values, levels, imp)
    if groups == 1:  # one problem: no second (groups, n) int64 array (memory of big tensors)
        cent, code = kmeans1d(values[0], levels, weights=None if imp is None else imp[0],
                              method=config.method, init=config.init, seed=config.seed)
        cent = cent.double()
        row = torch.cat([cent, cent[-1:].expand(levels - cent.numel())]).unsqueeze(0)
        return row, code.reshape(1, -1)
    codebook = torch.empty(groups, levels, dtype=torch.float64)
    codes = torch.empty(values.shape, dtype=torch.int64)
    for g in range(groups):
        cent, code = kmeans1d(values[g], levels, weights=None if imp is None else imp[g],
                              method=config.method, init=config.init, seed=config.seed)
        cent = cent.double()
        codebook[g, : cent.numel()] = cent
        codebook[g, cent.numel():] = cent[-1]  # fewer distinct values than levels
        codes[g] = code
    return codebook, codes
