"""One package per kind of sharing; importing this package registers them all.

Each package has the same few parts: a frozen ``*Config``, a method that applies it
(selecting targets through ``core.select`` and replacing weights through
``core.walk``), a shared weight implementing ``core.protocol.SharedWeight``, and one
``core.registry.register`` call in its ``__init__``.
"""

from . import codebook, tie

__all__ = ["codebook", "tie"]
