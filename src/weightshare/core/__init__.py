"""The core every method plugs into: the shared-weight protocol, the registry, the one
pattern language and walk, running models on batches, ties and the tie map."""

from .protocol import PartSpec, SharedWeight, attach, iter_shared, materialize_, share, shared_of
from .registry import register, register_weight
from .share import share_

__all__ = ["PartSpec", "SharedWeight", "attach", "iter_shared", "materialize_", "register",
           "register_weight", "share", "share_", "shared_of"]
