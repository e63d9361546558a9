"""One package per kind of sharing; importing this package registers them all.

Each package has the same few parts: a frozen ``*Config``, a method that applies it
(selecting targets through ``core.select`` and replacing weights through
``core.walk``), a shared weight implementing ``core.protocol.SharedWeight``, and one
``core.registry.register`` call in its ``__init__``. ``soft`` is a training-time
regulariser whose result is a ``prune`` kind (zero-sharing codebook).
"""

from . import codebook, hash, prune, soft, tie

__all__ = ["codebook", "hash", "prune", "soft", "tie"]
