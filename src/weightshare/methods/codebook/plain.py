"""Plain clustering of one weight: scalar codes, no error feedback, scales or outliers.

The common case (``weightshare compress`` without quality options, the ``fast`` recipe)
takes this lean path: it works in the weight's own dtype and narrows the codes as soon
as they exist, so clustering a large table holds about one extra copy of it at a time
(``build.py``, which every other option goes through, works on float64 copies and
would double the peak memory of compressing BERT-base).
"""

from __future__ import annotations

import torch

from ...core.protocol import dense_weight
from ...core.select import Target
from .config import ClusterConfig, group_size_for
from .kmeans import EXACT_MAX_DISTINCT, kmeans1d, kmeans1d_batched, kmeans1d_exact_batched
from .weight import CodebookWeight, codes_dtype


def is_plain(config: ClusterConfig) -> bool:
    """Whether ``config`` needs nothing beyond per-weight k-means."""
    return (config.vector_dim == 1 and config.scales == "none" and config.outliers == 0
            and not config.error_feedback)


@torch.no_grad()
def cluster_plain(t: Target, config: ClusterConfig, importance: torch.Tensor | None
                  ) -> tuple[CodebookWeight, torch.Tensor]:
    """The codebook weight of one target and its codebook (groups, 2**bits).

    Example:
        >>> from weightshare.core.select import select_targets
        >>> lin = torch.nn.Linear(8, 4)
        >>> w, cb = cluster_plain(select_targets(lin, min_size=0)[0], ClusterConfig(bits=2),
        ...                       None)
        >>> tuple(cb.shape), w.bits
        ((1, 4), 2)
    """
    weight = dense_weight(t.module).detach()
    rows = weight.shape[t.axis]
    group_size = group_size_for(config.granularity, rows, config.group_size)
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
