"""The registry of studies: name -> what it claims, what data it needs, how it runs.

A study is one module under ``study/studies/`` whose ``STUDY`` is a :class:`Study`;
``studies/__init__.py`` lists them. ``run`` looks names up here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigError
from .context import Context, Result


@dataclass(frozen=True)
class Study:
    """One claim about weight sharing, and the experiment that measures it.

    ``summary``: the claims in one sentence (the CLI's list); ``needs``: the data kinds
    read from ``--data`` ("mnist", "shakespeare");
    ``budget_s``: what the full version must stay within on a 2-core machine.
    """

    name: str
    title: str
    summary: str
    needs: tuple[str, ...]
    fn: Callable[[Context], Result]
    budget_s: float = 900.0


_STUDIES: dict[str, Study] = {}


def register(study: Study) -> Study:
    if study.name in _STUDIES:
        raise ConfigError(f"study {study.name!r} is registered twice")
    _STUDIES[study.name] = study
    return study


def names() -> tuple[str, ...]:
    """The registered study names, in the order of the evidence document.

    Example:
        >>> from weightshare import study
        >>> "params" in study.names()
        True
    """
    order = _load()
    return tuple(sorted(_STUDIES, key=lambda n: order.index(n) if n in order else len(order)))


def get(name: str) -> Study:
    _load()
    key = str(name).strip().lower().replace("_", "-")
    if key not in _STUDIES:
        raise ConfigError(f"unknown study {name!r}; choose one of {', '.join(names())}")
    return _STUDIES[key]


def _load() -> tuple[str, ...]:
    from . import studies  # registers every study on import

    return studies.ORDER
