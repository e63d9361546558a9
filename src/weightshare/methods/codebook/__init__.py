"""Value sharing: weights clustered to K = 2**bits shared values (codebook + codes).

One package, the same few parts as every method: ``config`` (``ClusterConfig``),
``weight`` (``CodebookWeight``, the shared-weight protocol) and ``vector``
(``VectorCodebookWeight``: several weights per code), ``extras`` (per-channel scales and
exact outliers, parts of both), ``method`` (``cluster_``) and ``build`` (one weight's fit),
``calibration`` / ``fisher`` / ``hessian`` (what calibration data tells), ``feedback``
(GPTQ-style error feedback) and ``refit`` (least-squares codebook and scales),
``recipes`` (measured combinations), ``finetune`` / ``dkm`` (trained codebooks) and
``kmeans`` (the 1-D and d-dimensional k-means engines).
"""

from ...core.registry import VALUES, register
from .config import ClusterConfig
from .finetune import finetune_codebooks_
from .method import cluster_
from .vector import VectorCodebookWeight
from .weight import CodebookWeight, attach_codebook, codebook_of, iter_codebooks

register(ClusterConfig, cluster_, order=VALUES, weights=(CodebookWeight, VectorCodebookWeight))

__all__ = ["ClusterConfig", "CodebookWeight", "VectorCodebookWeight", "attach_codebook",
           "cluster_", "codebook_of", "finetune_codebooks_", "iter_codebooks"]
