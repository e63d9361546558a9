"""The registry: config type -> method, kind name -> shared-weight class.

A kind of sharing plugs in with one call to :func:`register` (its package's
``__init__`` makes it): ``ws.share_`` then applies its configs and ``weightshare.load``
rebuilds its weights, with no change anywhere else.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class NothingConfig:
    ...     pass
    >>> _ = register(NothingConfig, lambda model, config, **options: model, order=50)
    >>> method_for(NothingConfig()).order
    50
    >>> unregister(NothingConfig)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import ConfigError, FormatError
from .protocol import SharedWeight

Apply = Callable[..., nn.Module]

# order of application: structure first, then values (a tied weight is clustered once)
STRUCTURE = 10
VALUES = 20


@dataclass(frozen=True)
class Method:
    """A registered method: ``apply(model, config, **options)`` changes the model in place."""

    config_type: type
    apply: Apply
    order: int
    weights: tuple[type[SharedWeight], ...] = ()


_METHODS: dict[type, Method] = {}
_WEIGHTS: dict[str, type[SharedWeight]] = {}


def register(config_type: type, apply: Apply, *, order: int = VALUES,
             weights: tuple[type[SharedWeight], ...] = ()) -> Method:
    """Register a method for ``config_type`` and the shared-weight classes it produces.

    ``order``: methods run in increasing order inside ``share_`` (``STRUCTURE`` for ties,
    ``VALUES`` for value sharing). Re-registering a config type or kind replaces it.
    """
    for cls in weights:
        register_weight(cls)
    method = Method(config_type, apply, order, tuple(weights))
    _METHODS[config_type] = method
    return method


def register_weight(cls: type[SharedWeight]) -> None:
    """Make ``weightshare.load`` know the kind ``cls.kind``."""
    if not (isinstance(cls, type) and issubclass(cls, SharedWeight)) or not cls.kind:
        raise ConfigError(f"{cls!r} is not a SharedWeight subclass with a kind name; subclass "
                          "weightshare.core.SharedWeight and set kind = '...'")
    _WEIGHTS[cls.kind] = cls


def unregister(config_type: type) -> None:
    """Forget a method and the kinds it registered (tests use it)."""
    method = _METHODS.pop(config_type, None)
    for cls in method.weights if method else ():
        _WEIGHTS.pop(cls.kind, None)


def method_for(config: Any) -> Method:
    """The method registered for ``type(config)`` (or the nearest registered base class)."""
    for cls in type(config).__mro__:
        if cls in _METHODS:
            return _METHODS[cls]
    known = ", ".join(sorted(t.__name__ for t in _METHODS)) or "none"
    raise ConfigError(f"no sharing method is registered for {type(config).__name__}; "
                      f"registered configs: {known}")


def weight_class(kind: Any, where: str = "the file") -> type[SharedWeight]:
    """The shared-weight class of ``kind``; FormatError naming it when it is unknown."""
    cls = _WEIGHTS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        shown = repr(kind) if len(repr(kind)) <= 40 else repr(kind)[:37] + "..."
        raise FormatError(f"{where} uses the sharing kind {shown}, which this weightshare does "
                          f"not know (it knows {', '.join(sorted(_WEIGHTS))}); upgrade "
                          "weightshare or import the package that registers that kind")
    return cls


def known_kinds() -> tuple[str, ...]:
    return tuple(sorted(_WEIGHTS))
