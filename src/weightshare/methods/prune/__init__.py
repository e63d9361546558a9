"""Zero-sharing: pruning (the zero shared by the smallest weights) and codebooks with a
pinned zero (Deep Compression's prune + share pipeline).

Parts: ``config`` (``PruneConfig``), ``method`` (``prune_``), ``sparse``
(``SparseWeight``: survivors + positions), ``zero_codebook`` (``ZeroCodebookWeight``:
K - 1 shared values + an exact zero), ``cluster`` (what ``ClusterConfig(zero=True)``
runs) and ``positions`` (fixed-width gap code of the nonzeros' positions).
"""

from typing import Any

from torch import nn

from ...core.registry import register
from .cluster import zero_cluster_, zero_kmeans
from .config import PruneConfig
from .method import prune_
from .schedule import GradualPruning
from .sparse import SparseWeight
from .zero_codebook import ZeroCodebookWeight

# after ties, before codebooks: share_(model, PruneConfig(...), ClusterConfig(zero=True))
# prunes, then clusters the survivors
PRUNE_ORDER = 15


def _apply(model: nn.Module, config: PruneConfig, **options: Any) -> nn.Module:
    return prune_(model, config=config, progress=options.get("progress"))


register(PruneConfig, _apply, order=PRUNE_ORDER, weights=(SparseWeight, ZeroCodebookWeight))

__all__ = ["GradualPruning", "PruneConfig", "SparseWeight", "ZeroCodebookWeight", "prune_",
           "zero_cluster_", "zero_kmeans"]
