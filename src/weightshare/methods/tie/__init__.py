"""Structural sharing: several places of a model use one tensor.

* ``TieConfig`` + ``tie_``: cross-layer strategies over repeated blocks, explicit
  ties by name pattern, input/output embedding tying, optionally relaxed
  (shared weight + per-member low-rank delta, ``RelaxedWeight``);
* ``untie_``, ``merge_``, ``retie_``: back to independent weights, or ties restored;
* ``find_blocks``: the stacks of repeated blocks.

The checks on ties (``find_ties``, ``verify_ties``, the tie map) live in ``core.ties``,
the redundancy analysis that suggests what to tie in ``analysis``.
"""

from ...core.registry import STRUCTURE, register
from .blocks import Block, BlockStack, find_blocks, select_stack
from .config import INITS, STRATEGIES, TieConfig, TieGroup
from .embeddings import find_embedding_pair
from .method import retie_, tie_, untie_
from .relaxed import RelaxedWeight, attach_relaxed, iter_relaxed, merge_
from .strategies import assign

register(TieConfig, tie_, order=STRUCTURE, weights=(RelaxedWeight,))

__all__ = [
    "INITS",
    "STRATEGIES",
    "Block",
    "BlockStack",
    "RelaxedWeight",
    "TieConfig",
    "TieGroup",
    "assign",
    "attach_relaxed",
    "find_blocks",
    "find_embedding_pair",
    "iter_relaxed",
    "merge_",
    "retie_",
    "select_stack",
    "tie_",
    "untie_",
]
