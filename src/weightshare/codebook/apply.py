"""cluster_: turn the selected weights of a model into codebook weights, in place."""

from __future__ import annotations

import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from ..errors import SelectionError, ShapeError
from ..kmeans1d import EXACT_MAX_DISTINCT, kmeans1d
from ..kmeans1d_batched import INITS as BATCHED_INITS
from ..kmeans1d_batched import kmeans1d_batched, kmeans1d_exact_batched
from ..select import Target, select_targets
from .calibration import Calibration, input_importance
from .config import ClusterConfig
from .parametrization import attach_codebook, codebook_of, share_codebook


def cluster_(model: nn.Module, config: ClusterConfig | None = None,
             calibration: Calibration | None = None, *, progress: bool | None = None) -> nn.Module:
    """Cluster the selected weights of ``model`` to ``2**bits`` shared values, in place.

    Each selected weight becomes a codebook weight (see ``CodebookWeight``): a trainable
    codebook of shape (groups, 2**bits) plus uint8 codes; the dense weight is dropped.
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
    targets = select_targets(model, config.include, config.exclude, config.min_size)
    for t in targets:
        _check_target(t, config)
    importance = input_importance(model, targets, calibration) if calibration is not None else {}

    # a weight tied into several modules is clustered once, then shared
    by_param: dict[int, list[Target]] = defaultdict(list)
    for t in targets:
        by_param[id(_dense_weight(t.module))].append(t)

    show = progress if progress is not None else sys.stderr.isatty()
    groups = list(by_param.values())
    bar = tqdm(total=len(groups), desc="clustering", unit="layer", disable=not show,
               file=sys.stderr)
    # k-means runs in numpy/torch kernels that release the GIL: one thread per core
    # clusters layers side by side; registering the results stays on this thread
    workers = max(1, min(len(groups), torch.get_num_threads()))
    with bar, ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(_cluster_one, tied[0], config, importance.get(tied[0].name))
                   for tied in groups]
        for tied, future in zip(groups, futures):
            codebook, codes, group_size = future.result()
            source = tied[0]
            attach_codebook(source.module, codebook, codes, config.bits, config.granularity,
                            group_size, source.axis)
            for alias in tied[1:]:
                share_codebook(alias.module, source.module)
            bar.update()
    return model


def _dense_weight(module: nn.Module) -> torch.Tensor:
    if parametrize.is_parametrized(module, "weight"):
        found = codebook_of(module)
        return found[1] if found is not None else module.parametrizations.weight.original
    return module.weight


def _check_target(t: Target, config: ClusterConfig) -> None:
    if parametrize.is_parametrized(t.module, "weight") and codebook_of(t.module) is None:
        kind = type(t.module.parametrizations.weight[0]).__name__
        raise SelectionError(f"{t.fqn} is already parametrized ({kind}); "
                             "merge or remove that parametrization before clustering it")
    rows = t.module.weight.shape[t.axis]
    if config.granularity == "per_group" and rows % config.group_size:
        raise ShapeError(f"group_size {config.group_size} does not divide the {rows} output "
                         f"channels of {t.fqn}; choose a divisor of {rows} or exclude it")


@torch.no_grad()
def _cluster_one(t: Target, config: ClusterConfig,
                 importance: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Codebook (groups, 2**bits) in the weight's dtype, codes (weight's shape), group size."""
    weight = t.module.weight.detach()
    rows = weight.shape[t.axis]
    group_size = {"per_tensor": rows, "per_channel": 1}.get(config.granularity, config.group_size)
    groups = rows // group_size

    # (groups, values per group): a group is `group_size` consecutive output channels
    values = weight.movedim(t.axis, 0).reshape(groups, -1)
    imp = None if importance is None else importance.movedim(t.axis, 0).reshape(groups, -1)

    codebook, codes = _solve(values, imp, config)
    moved_shape = weight.movedim(t.axis, 0).shape
    codes = codes.reshape(moved_shape).movedim(0, t.axis).contiguous()
    return codebook.to(weight.dtype), codes, group_size


def _solve(values: torch.Tensor, imp: torch.Tensor | None,
           config: ClusterConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One k-means problem per row of ``values`` (groups, n) -> codebook (groups, 2**bits)
    float64 and codes (groups, n) uint8."""
    groups, levels = values.shape[0], config.levels
    if config.method == "fast" and groups > 1 and config.init in BATCHED_INITS:
        # many small problems: Lloyd on all groups at once (see kmeans1d_batched)
        codebook, codes = kmeans1d_batched(values, levels, imp, init=config.init)
        return codebook, codes.to(torch.uint8)
    if config.method == "exact" and groups > 1 and values.shape[1] <= EXACT_MAX_DISTINCT:
        # the same optimum as the kmeans1d loop below, solved for all groups at once
        codebook, codes = kmeans1d_exact_batched(values, levels, imp)
        return codebook, codes.to(torch.uint8)
    codebook = torch.empty(groups, levels, dtype=torch.float64)
    codes = torch.empty(values.shape, dtype=torch.uint8)
    for g in range(groups):
        cent, code = kmeans1d(values[g], levels, weights=None if imp is None else imp[g],
                              method=config.method, init=config.init, seed=config.seed)
        cent = cent.double()
        codebook[g, : cent.numel()] = cent
        codebook[g, cent.numel():] = cent[-1]  # fewer distinct values than levels
        codes[g] = code.to(torch.uint8)
    return codebook, codes
