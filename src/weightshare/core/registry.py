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
_RUNTIMES: dict[tuple[str, str], type[SharedWeight]] = {}

TRAIN = "train"  # the form a kind registers with register_weight: trainable parametrization
PACKED = "packed"  # codes kept bit-packed in memory, computed from directly (inference)
RUNTIMES = (TRAIN, PACKED)


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


def register_runtime(cls: type[SharedWeight], runtime: str = PACKED) -> None:
    """Register ``cls`` as the ``runtime`` form of the kind ``cls.kind``: the same kind,
    scheme and parts as the training form, built by ``cls.from_stored`` from the parts as
    the file stores them. ``weightshare.load(path, runtime=...)`` then builds it, and
    ``weightshare.runtime.to_runtime_`` converts to and from it."""
    if not (isinstance(cls, type) and issubclass(cls, SharedWeight)) or not cls.kind:
        raise ConfigError(f"{cls!r} is not a SharedWeight subclass with a kind name")
    if runtime not in RUNTIMES or runtime == TRAIN:
        raise ConfigError(f"runtime must be one of {list(RUNTIMES[1:])}, got {runtime!r}")
    _RUNTIMES[(cls.kind, runtime)] = cls


def runtime_class(kind: str, runtime: str) -> type[SharedWeight] | None:
    """The ``runtime`` form of ``kind`` (the training form for ``"train"``); None when the
    kind has no such form (its weights then stay in the training form)."""
    if runtime == TRAIN:
        return _WEIGHTS.get(kind)
    return _RUNTIMES.get((kind, runtime))


def check_runtime(runtime: object) -> str:
    """``runtime`` if it names a form, else ConfigError listing them."""
    if not isinstance(runtime, str) or runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {list(RUNTIMES)}, got {runtime!r}; use "
                          "'packed' for inference, 'train' to fine-tune")
    return runtime


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


def config_from_dict(cls: type[Any], data: dict[str, Any]) -> Any:
    """``cls(**data)`` for a config dataclass, refusing unknown keys with the valid ones
    (every method's ``Config.from_dict``)."""
    import dataclasses

    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} key(s) {unknown}; valid keys: {valid}")
    return cls(**data)
