"""weightshare: weight sharing for any PyTorch model, measured.

Public names only; the logic lives in the submodules.
"""

from .codebook import ClusterConfig, cluster_
from .errors import WeightShareError
from .io import load, save
from .kmeans1d import kmeans1d
from .report import Report, inspect

__version__ = "0.1.0"

__all__ = [
    "ClusterConfig",
    "Report",
    "WeightShareError",
    "__version__",
    "cluster_",
    "inspect",
    "kmeans1d",
    "load",
    "save",
]
