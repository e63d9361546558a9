"""The tie map and the checks on ties, for every kind of sharing.

A tie *is* one object registered under several names: a ``Parameter`` (dense ties),
or a shared weight (the same parametrization and original registered in several
modules). ``model.parameters()`` then yields it once and optimizers update it once.

The tie map, ``{alias: source}`` kept on the model, records that fact by name so that
save/load, meta-device initialisation and distributed wrappers can restore ties the
object graph alone would lose. Whole shared weights are recorded by the names users
know (``head.weight``); an original shared by different weights (a codebook shared
across layers, the base of relaxed ties) by its raw name
(``x.parametrizations.weight.original``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import TieError
from .names import canonical, get_param, has_param, shared_at, user_name
from .protocol import iter_shared

TIE_MAP_ATTR = "_weightshare_tie_map"


def discover_ties(model: nn.Module) -> dict[str, str]:
    """``{alias: source}`` for everything registered under several names (same object).

    The source is the first name in module order.

    Example:
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
        >>> m[1].weight = m[0].weight
        >>> discover_ties(m)
        {'1.weight': '0.weight'}
    """
    ties: dict[str, str] = {}
    first_weight: dict[tuple[int, int], str] = {}
    alias_prefixes: list[str] = []  # raw names under a whole-weight alias are not ties of their own
    for fqn, _m, _a, weight, original in iter_shared(model, remove_duplicate=False):
        source = first_weight.setdefault((id(weight), id(original)), fqn)
        if source != fqn:
            ties[fqn] = source
            head, _, attr = fqn.rpartition(".")
            alias_prefixes.append(f"{head}.parametrizations.{attr}." if head
                                  else f"parametrizations.{attr}.")
    first: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if any(name.startswith(p) for p in alias_prefixes):
            continue
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


def _known(model: nn.Module, name: str) -> bool:
    return shared_at(model, name) is not None or has_param(model, name)


def record_ties(model: nn.Module) -> dict[str, str]:
    """Record the ties of ``model`` in its tie map; returns the map.

    Ties visible in the object graph are recorded; entries of the previous map whose
    names still exist are kept, so ties that have split (e.g. after ``to_empty``) stay
    recorded until ``retie_`` restores them.
    """
    old = dict(getattr(model, TIE_MAP_ATTR, None) or {})
    new = discover_ties(model)
    for alias, source in old.items():
        if not (_known(model, alias) and _known(model, source)):
            continue
        if shared_at(model, alias) is None and shared_at(model, source) is None:
            alias, source = canonical(model, alias), canonical(model, source)
        if alias not in new and alias != source:
            new[alias] = source
    set_tie_map(model, new)
    return new


def find_ties(model: nn.Module) -> list[list[str]]:
    """Groups of parameter names that share storage (same object or same memory).

    Names are the ones users know: a codebook or relaxed weight shared by several
    modules is listed as ``<module>.weight``. Groups come in model order.

    Example:
        >>> import torch
        >>> m = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.Linear(2, 2))
        >>> m[1].weight = m[0].weight
        >>> find_ties(m)
        [['0.weight', '1.weight']]
    """
    parent: dict[Any, Any] = {}

    def find(x: Any) -> Any:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    order: list[tuple[str, Any]] = []
    for name, p in model.named_parameters(remove_duplicate=False):
        key = ("id", id(p))
        find(key)
        if p.device.type != "meta" and p.numel() > 0:
            mem = ("mem", p.device, p.untyped_storage().data_ptr(), p.storage_offset(),
                   tuple(p.shape), tuple(p.stride()), p.dtype)
            parent[find(key)] = find(mem)
        order.append((user_name(name), key))
    groups: dict[Any, list[str]] = {}
    for name, key in order:
        members = groups.setdefault(find(key), [])
        if name not in members:
            members.append(name)
    return [g for g in groups.values() if len(g) >= 2]


@dataclass(frozen=True)
class TieProblem:
    """A recorded tie that no longer holds. ``kind``: missing, split, diverged or corrupted."""

    alias: str
    source: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.alias} -> {self.source}: {self.kind} ({self.detail})"


def verify_ties(model: nn.Module, strict: bool = False) -> list[TieProblem]:
    """Recorded ties that have silently split; empty when every tie holds.

    * ``missing``: a name of the tie map is not in the model;
    * ``split``: two objects where the map records one (equal values: an optimizer
      would update them apart from now on), or a shared weight whose alias is no
      longer that shared weight;
    * ``diverged``: two objects whose values already differ;
    * ``corrupted``: a shared weight whose stored original no longer fits it (e.g.
      ``remove_parametrizations`` on one alias wrote a dense weight into the codebook
      the others use).

    With ``strict=True`` a problem raises ``TieError`` instead.

    Example:
        >>> import torch
        >>> m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
        >>> m[1].weight = m[0].weight
        >>> _ = record_ties(m)
        >>> verify_ties(m)
        []
        >>> m[1].weight = torch.nn.Parameter(m[0].weight.detach().clone())
        >>> [p.kind for p in verify_ties(m)]
        ['split']
    """
    problems = [p for alias, source in (getattr(model, TIE_MAP_ATTR, None) or {}).items()
                if (p := _check_tie(model, alias, source)) is not None]
    problems.extend(_corrupted(model))
    if strict and problems:
        raise TieError(f"{len(problems)} recorded tie(s) broken, first: {problems[0]}; call "
                       "weightshare.retie_(model) to restore them from the tie map")
    return problems


def _check_tie(model: nn.Module, alias: str, source: str) -> TieProblem | None:
    a_shared, s_shared = shared_at(model, alias), shared_at(model, source)
    if a_shared is not None or s_shared is not None:
        if (a_shared is not None and s_shared is not None
                and a_shared[2] is s_shared[2] and a_shared[3] is s_shared[3]):
            return None
        lost = alias if a_shared is None else source
        return TieProblem(alias, source, "split",
                          f"{lost} is no longer the shared weight the tie records")
    absent = [n for n in (alias, source) if not has_param(model, n)]
    if absent:
        return TieProblem(alias, source, "missing", f"no parameter {absent[0]}")
    a, s = get_param(model, alias), get_param(model, source)
    if a is s:
        return None
    if a.device.type == "meta" or s.device.type == "meta":
        return TieProblem(alias, source, "split", "two objects on the meta device")
    if a.shape == s.shape and torch.equal(a.detach(), s.detach()):
        return TieProblem(alias, source, "split",
                          "equal values, two objects: updates will drift apart")
    diff = (a.detach().float() - s.detach().float()).abs().max().item() \
        if a.shape == s.shape else float("nan")
    return TieProblem(alias, source, "diverged", f"max |difference| {diff:.3g}")


def _corrupted(model: nn.Module) -> list[TieProblem]:
    out = []
    for fqn, _m, _a, weight, original in iter_shared(model):
        try:
            spec = type(weight).part_specs(weight.scheme(original))[weight.original_part]
            ok = tuple(original.shape) == spec.shape
        except Exception:  # a weight that cannot even describe itself is corrupt too
            ok = False
        if not ok:
            out.append(TieProblem(fqn, fqn, "corrupted",
                                  f"its {weight.original_part} has shape "
                                  f"{list(original.shape)}, which no longer fits the weight"))
    return out


def require_ties(model: nn.Module, doing: str = "saving") -> None:
    """Raise TieError if a recorded tie is broken: ``save`` must not silently write one tie
    fewer than the model claims."""
    problems = verify_ties(model)
    if problems:
        raise TieError(f"recorded tie {problems[0]} ({len(problems)} problem(s)); call "
                       "weightshare.retie_(model) to restore the ties, or weightshare.untie_(model)"
                       f" to drop them, before {doing}")
