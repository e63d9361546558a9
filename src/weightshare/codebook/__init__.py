"""Value sharing: weights clustered to K = 2**bits shared values (codebook + codes)."""

from .apply import cluster_
from .config import ClusterConfig
from .parametrization import CodebookWeight, attach_codebook, iter_codebooks

__all__ = ["ClusterConfig", "CodebookWeight", "attach_codebook", "cluster_", "iter_codebooks"]
