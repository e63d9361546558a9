"""prune_: magnitude pruning, the zero shared by the smallest weights, in place."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...core.protocol import dense_weight
from ...core.select import Target, select_targets
from ...core.walk import check_targets, share_targets
from ...errors import SelectionError
from .config import PruneConfig
from .sparse import SparseWeight


def prune_(model: nn.Module, sparsity: Any = None, *, config: PruneConfig | None = None,
           progress: bool | None = None, **fields: Any) -> nn.Module:
    """Set the smallest-magnitude weights of the selected layers to zero, in place.

    Each selected weight becomes a pruned weight (``SparseWeight``): its surviving values
    are its only parameter, so training afterwards keeps the mask (Deep Compression's
    fine-tuning), and files store the survivors and their positions. Pruning a pruned
    weight again prunes further. ``sparsity`` and the other ``PruneConfig`` fields
    (``scope``, ``include``, ...) can be given as keywords or as ``config=``. Each pruned
    weight keeps at least one value. Follow with ``cluster_(model,
    ClusterConfig(zero=True))`` to share the survivors' values too.

    Example:
        >>> import torch, weightshare as ws
        >>> layer = torch.nn.Linear(100, 10)
        >>> _ = ws.prune_(layer, 0.9)
        >>> int((layer.weight == 0).sum())
        900
    """
    values = {f: getattr(config, f) for f in PruneConfig.__dataclass_fields__} if config else {}
    values.update(fields)
    if sparsity is not None:
        values["sparsity"] = sparsity
    config = PruneConfig.from_dict(values)
    targets = select_targets(model, config.include, config.exclude, config.min_size,
                             what="prune")
    check_targets(targets, reshare=(SparseWeight,))
    keep = _kept(targets, config)
    share_targets([t for t in targets if t.name in keep],
                  lambda t: _prune_one(t, keep[t.name]), progress=progress, desc="pruning")
    return model


def _kept(targets: list[Target], config: PruneConfig) -> dict[str, int]:
    """How many values each pruned target keeps (layer) or above the global threshold."""
    if config.scope == "global":
        mags = torch.cat([dense_weight(t.module).detach().abs().reshape(-1) for t in targets])
        kept_total = max(1, round(mags.numel() * (1 - float(config.sparsity))))  # type: ignore
        threshold = mags.kthvalue(mags.numel() - kept_total + 1).values if kept_total < \
            mags.numel() else mags.min()
        return {t.name: max(1, int((dense_weight(t.module).detach().abs() >= threshold).sum()))
                for t in targets}
    out = {}
    for t in targets:
        rate = config.rate(t.name)
        if rate is not None:
            out[t.name] = max(1, round(dense_weight(t.module).numel() * (1 - rate)))
    if not out:
        raise SelectionError(f"no sparsity pattern matches a selected module "
                             f"({', '.join(t.name for t in targets[:4])}); fix the patterns")
    return out


@torch.no_grad()
def _prune_one(t: Target, keep: int) -> tuple[SparseWeight, torch.Tensor]:
    w = dense_weight(t.module).detach().reshape(-1)
    # the largest magnitudes survive; sorted positions for the gap code
    positions = w.abs().topk(keep, sorted=False).indices.sort().values
    return SparseWeight(tuple(dense_weight(t.module).shape), positions), w[positions].clone()
