"""The 1-D k-means engine under every codebook: exact (``exact.kmeans1d``) and many rows
at once (``batched``)."""

from .batched import kmeans1d_batched, kmeans1d_exact_batched
from .exact import EXACT_MAX_DISTINCT, kmeans1d, sse

__all__ = ["EXACT_MAX_DISTINCT", "kmeans1d", "kmeans1d_batched", "kmeans1d_exact_batched", "sse"]
