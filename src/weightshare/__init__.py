"""weightshare: weight sharing for any PyTorch model, measured.

Public names only; the logic lives in the submodules:
``core`` (protocol, registry, selection, ties), ``methods`` (one package per kind of
sharing), ``io`` (the file format), ``analysis`` (inspect, fidelity), ``train``,
``study`` (the evidence: every claim for weight sharing measured, ``ws.study.run``).
"""

from . import nn, study
from .analysis.report import Report, inspect
from .core.protocol import materialize_
from .core.share import share_
from .core.ties import find_ties, verify_ties
from .errors import WeightShareError
from .io import load, save
from .methods.codebook import ClusterConfig, cluster_, finetune_codebooks_
from .methods.codebook.kmeans import kmeans1d
from .methods.hash import HashConfig, hash_
from .methods.prune import PruneConfig, prune_
from .methods.soft import SoftSharingPrior, soft_to_codebook_
from .methods.tie import TieConfig, merge_, retie_, tie_, untie_
from .nn import reshare, unshare
from .runtime import to_runtime_
from .train import distill_, evaluate, fit

__version__ = "0.1.0"

__all__ = [
    "ClusterConfig",
    "HashConfig",
    "PruneConfig",
    "Report",
    "SoftSharingPrior",
    "TieConfig",
    "WeightShareError",
    "__version__",
    "cluster_",
    "distill_",
    "evaluate",
    "finetune_codebooks_",
    "find_ties",
    "fit",
    "hash_",
    "inspect",
    "kmeans1d",
    "load",
    "materialize_",
    "merge_",
    "nn",
    "prune_",
    "reshare",
    "retie_",
    "save",
    "share_",
    "soft_to_codebook_",
    "study",
    "tie_",
    "to_runtime_",
    "unshare",
    "untie_",
    "verify_ties",
]
