"""weightshare: weight sharing for any PyTorch model, measured.

Public names only; the logic lives in the submodules.
"""

from .codebook import ClusterConfig, cluster_
from .distill import distill_
from .errors import WeightShareError
from .io import load, save
from .kmeans1d import kmeans1d
from .report import Report, inspect
from .tying import TieConfig, find_ties, merge_, retie_, tie_, untie_, verify_ties

__version__ = "0.1.0"

__all__ = [
    "ClusterConfig",
    "Report",
    "TieConfig",
    "WeightShareError",
    "__version__",
    "cluster_",
    "distill_",
    "find_ties",
    "inspect",
    "kmeans1d",
    "load",
    "merge_",
    "retie_",
    "save",
    "tie_",
    "untie_",
    "verify_ties",
]
