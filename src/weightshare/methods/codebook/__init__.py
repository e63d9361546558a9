"""Value sharing: weights clustered to K = 2**bits shared values (codebook + codes).

One package, the same few parts as every method: ``config`` (``ClusterConfig``),
``weight`` (``CodebookWeight``, the shared-weight protocol), ``method`` (``cluster_``),
``calibration`` (data-aware importance) and ``kmeans`` (the 1-D k-means engine).
"""

from ...core.registry import VALUES, register
from .config import ClusterConfig
from .method import cluster_
from .weight import CodebookWeight, attach_codebook, codebook_of, iter_codebooks

register(ClusterConfig, cluster_, order=VALUES, weights=(CodebookWeight,))

__all__ = ["ClusterConfig", "CodebookWeight", "attach_codebook", "cluster_", "codebook_of",
           "iter_codebooks"]
