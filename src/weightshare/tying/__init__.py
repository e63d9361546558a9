"""Structural sharing: several places of a model use one tensor.

* ``TieConfig`` + ``tie_``: cross-layer strategies over repeated blocks, explicit
  ties by name pattern, input/output embedding tying, optionally relaxed
  (shared weight + per-member low-rank delta);
* ``untie_``, ``merge_``: back to independent dense weights;
* ``find_ties``, ``verify_ties``, ``retie_``: see, check and restore ties;
* ``find_blocks``: the stacks of repeated blocks;
* ``block_similarity``, ``suggest_plan``: what is worth tying;
* ``distill_`` (from ``weightshare.distill``): recover quality after tying.
"""

from typing import Any

from .apply import TieProblem, find_ties, record_ties, retie_, tie_, untie_, verify_ties
from .blocks import Block, BlockStack, find_blocks, select_stack
from .config import INITS, STRATEGIES, TieConfig, TieGroup
from .embeddings import find_embedding_pair
from .relax import RelaxedWeight, attach_relaxed, iter_relaxed, merge_
from .similarity import SimilarityReport, block_similarity, plot_similarity
from .strategies import assign
from .suggest import TiePlan, suggest_plan
from .tiemap import discover_ties, get_tie_map, set_tie_map

__all__ = [
    "INITS",
    "STRATEGIES",
    "Block",
    "BlockStack",
    "RelaxedWeight",
    "SimilarityReport",
    "TieConfig",
    "TieGroup",
    "TiePlan",
    "TieProblem",
    "assign",
    "attach_relaxed",
    "block_similarity",
    "discover_ties",
    "distill_",
    "find_blocks",
    "find_embedding_pair",
    "find_ties",
    "get_tie_map",
    "iter_relaxed",
    "merge_",
    "plot_similarity",
    "record_ties",
    "retie_",
    "select_stack",
    "set_tie_map",
    "suggest_plan",
    "tie_",
    "untie_",
    "verify_ties",
]


def __getattr__(name: str) -> Any:
    # weightshare.distill imports tying.batches, so import it lazily to avoid a cycle
    if name == "distill_":
        from ..distill import distill_
        return distill_
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
