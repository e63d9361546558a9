"""Layers for training with sharing, and the unshared twins that measure what sharing is
worth: ``ws.nn.HashedLinear``, ``ws.nn.HashedConv2d`` (HashedNets),
``ws.nn.LocallyConnected2d`` (a convolution without spatial sharing),
``ws.nn.UnsharedRNN`` / ``ws.nn.UnsharedGRU`` (recurrences without temporal sharing), and
``unshare`` / ``reshare`` (a model's unshared twin, and back)."""

from .hashed import HashedConv2d, HashedLinear
from .local import LocallyConnected2d
from .recurrent import UnsharedGRU, UnsharedRNN
from .unshare import reshare, unshare

__all__ = ["HashedConv2d", "HashedLinear", "LocallyConnected2d", "UnsharedGRU", "UnsharedRNN",
           "reshare", "unshare"]
