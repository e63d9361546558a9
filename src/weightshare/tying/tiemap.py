"""The tie map: ``{alias fqn: source fqn}``, kept on the model so that save/load,
meta-device initialisation and distributed wrappers can restore ties that the
Python object graph alone would lose.

A tie *is* the same ``Parameter`` object registered under several names, so
``model.parameters()`` yields it once and optimizers update it once. The map
records that fact by name; :func:`discover_ties` reads it off the object graph.
"""

from __future__ import annotations

from torch import nn

TIE_MAP_ATTR = "_weightshare_tie_map"


def discover_ties(model: nn.Module) -> dict[str, str]:
    """``{alias: source}`` for parameters registered under several names (same object).

    The source is the first name in ``named_parameters`` order.

    Example:
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
        >>> m[1].weight = m[0].weight
        >>> discover_ties(m)
        {'1.weight': '0.weight'}
    """
    first: dict[int, str] = {}
    ties: dict[str, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        source = first.setdefault(id(param), name)
        if source != name:
            ties[name] = source
    return ties


def get_tie_map(model: nn.Module) -> dict[str, str]:
    """The recorded tie map (a copy), merged with the ties visible in the object graph."""
    recorded = dict(getattr(model, TIE_MAP_ATTR, {}) or {})
    for alias, source in discover_ties(model).items():
        recorded.setdefault(alias, source)
    return recorded


def set_tie_map(model: nn.Module, tie_map: dict[str, str]) -> None:
    """Record ``tie_map`` on the model (replacing any previous one)."""
    object.__setattr__(model, TIE_MAP_ATTR, dict(tie_map))
