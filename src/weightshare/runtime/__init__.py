"""Runtime forms of shared weights: cheaper to run, not only to store.

``weightshare.load(path, runtime="packed")`` (or :func:`to_runtime_`) keeps each
codebook weight's codes bit-packed in memory at their real width with its codebook
beside them; layers compute from them (``ops``: tiled decoding into one small buffer,
a compiled kernel straight from the codes for up to 24 input rows, embedding rows
decoded on demand).
``weightshare.materialize_`` turns them into plain dense weights,
``to_runtime_(model, "train")`` back into trainable codebooks.

A kind adds its own packed form with ``core.registry.register_runtime(cls)``: a
SharedWeight subclass of the same kind implementing ``from_stored`` (its parts as the
file stores them), ``packed_parts`` and ``dense``; its ``forward`` may return a
:class:`PackedTensor` whose ``form`` has ``packed``, ``rows``, ``cols``, ``group_size``
and ``axis`` (as :class:`PackedCodebookWeight`), or a tensor of its own.
"""

from ..core.registry import register_runtime
from . import ops  # noqa: F401  (registers the operations PackedTensor computes)
from .codebook import PackedCodebookWeight
from .convert import to_runtime_
from .kernels import backend
from .tensor import PackedTensor

register_runtime(PackedCodebookWeight, "packed")

__all__ = ["PackedCodebookWeight", "PackedTensor", "backend", "to_runtime_"]
