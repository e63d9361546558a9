"""The tie verbs: ``tie_``, ``untie_``, ``retie_`` (the checks live in ``core.ties``).

A tie is one ``Parameter`` object registered under several names, so
``model.parameters()`` yields it once and an optimizer updates it once; ``.to()``,
``copy.deepcopy`` and ``load_state_dict`` keep object identity and so keep ties.
What loses them is anything that builds new Parameter objects per name:
``model.to_empty(device=...)`` after meta-device construction,
``load_state_dict(..., assign=True)``, some loaders. For those the model carries a
tie map (``core/ties.py``), and ``retie_`` restores the ties from it.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ...core.guard import before_sharing
from ...core.names import dense_shape, get_param, has_param, resolve, set_param, shared_at
from ...core.protocol import attach, share
from ...core.ties import TIE_MAP_ATTR, discover_ties, record_ties, set_tie_map
from ...errors import TieError
from .config import TieConfig
from .embeddings import find_embedding_pair, set_tie_word_embeddings, wants_tied_embeddings
from .relaxed import RelaxedWeight, attach_relaxed, max_rank
from .tiesets import TieSet, build_tie_sets


def tie_(model: nn.Module, config: TieConfig | dict[str, Any], **_options: Any) -> nn.Module:
    """Tie parts of ``model`` in place as ``config`` says; returns ``model``.

    Every check runs before the model changes: on error it is left as it was.

    Example:
        >>> import torch
        >>> from weightshare import TieConfig, tie_, find_ties
        >>> m = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(4)])
        >>> _ = tie_(m, TieConfig(strategy="cycle", unique=2))
        >>> find_ties(m)[:2]
        [['0.weight', '2.weight'], ['0.bias', '2.bias']]
    """
    if isinstance(config, dict):
        config = TieConfig.from_dict(config)
    sets = build_tie_sets(model, config)
    before_sharing(model)
    for ts in sets:
        _apply_set(model, ts)
    if any(ts.label == "embeddings" for ts in sets):
        set_tie_word_embeddings(model, True)
    record_ties(model)
    return model


@torch.no_grad()
def _apply_set(model: nn.Module, ts: TieSet) -> None:
    src = get_param(model, ts.fqns[0])
    shared = ts.value if ts.value is not None else src.detach()
    if ts.rank == 0:
        if ts.value is not None:
            src.copy_(ts.value)
        for alias in ts.fqns[1:]:
            set_param(model, alias, src)
        return
    # residual of every member to the shared value, before the source is overwritten
    residuals = [get_param(model, f).detach() - shared for f in ts.fqns]
    if ts.value is not None:
        src.copy_(ts.value)
    for fqn, residual in zip(ts.fqns, residuals):
        owner, attr = resolve(model, fqn)
        shape = tuple(residual.shape)
        rank = max_rank(shape) if ts.rank == "full" else int(ts.rank)
        attach_relaxed(owner, attr, src, RelaxedWeight(shape, rank, residual=residual))


def untie_(model: nn.Module) -> nn.Module:
    """Give every alias its own copy again: no two names share a tensor afterwards.

    Modules registered in several places are deep-copied; relaxed weights keep their
    deltas, each on its own copy of the base (``merge_`` makes them plain). A
    transformers config's ``tie_word_embeddings`` is cleared when the embeddings were
    tied. The tie map is emptied.

    Example:
        >>> import torch
        >>> from weightshare import untie_, find_ties
        >>> m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
        >>> m[1].weight = m[0].weight
        >>> find_ties(untie_(m))
        []
    """
    pair = find_embedding_pair(model)
    embeddings_tied = pair is not None and all(has_param(model, n) for n in pair) and \
        get_param(model, pair[0]) is get_param(model, pair[1])
    _split_shared_modules(model)
    with torch.no_grad():
        for alias, source in discover_ties(model).items():
            shared, target = shared_at(model, source), shared_at(model, alias)
            if shared is not None and target is not None:  # one shared weight in two modules
                weight, original = shared[2], shared[3]
                attach(target[0], target[1], copy.deepcopy(weight),
                       nn.Parameter(original.detach().clone(),
                                    requires_grad=original.requires_grad))
                continue
            src = get_param(model, source)
            set_param(model, alias, nn.Parameter(src.detach().clone(),
                                                 requires_grad=src.requires_grad))
    if embeddings_tied:
        set_tie_word_embeddings(model, False)
    set_tie_map(model, {})
    return model


def _split_shared_modules(model: nn.Module) -> None:
    while True:
        first: dict[int, str] = {}
        duplicate = None
        for name, module in model.named_modules(remove_duplicate=False):
            if first.setdefault(id(module), name) != name:
                duplicate = name
                break
        if duplicate is None:
            return
        parent_name, _, child = duplicate.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        parent._modules[child] = copy.deepcopy(parent._modules[child])


def retie_(model: nn.Module, tie_map: dict[str, str] | None = None) -> nn.Module:
    """Restore the ties recorded in the model's tie map (or in ``tie_map``); returns ``model``.

    Use it wherever Parameter objects were rebuilt per name: after
    ``model.to_empty(device=...)`` following meta-device construction, after
    ``load_state_dict(..., assign=True)``. Each alias is registered as its source's
    object again (the source's values win). transformers models whose config asks
    for tied word embeddings are re-tied with their own ``tie_weights()`` as well.

    Example:
        >>> import torch
        >>> from weightshare import TieConfig, tie_, retie_, find_ties
        >>> with torch.device("meta"):
        ...     m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
        >>> _ = tie_(m, TieConfig(strategy="all"))
        >>> _ = m.to_empty(device="cpu")
        >>> find_ties(m)
        []
        >>> find_ties(retie_(m))
        [['0.weight', '1.weight'], ['0.bias', '1.bias']]
    """
    recorded = dict(getattr(model, TIE_MAP_ATTR, None) or {})
    mapping = dict(tie_map) if tie_map is not None else recorded
    missing = sorted({n for pair in mapping.items() for n in pair if not has_param(model, n)
                      and shared_at(model, n) is None})
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise TieError(f"the tie map names parameter(s) {type(model).__name__} lacks: "
                       f"{', '.join(missing[:3])}{more}; load into the model the ties were made on")
    roots = {alias: _root(mapping, alias) for alias in mapping}
    for alias, root in roots.items():
        a_shape, s_shape = dense_shape(model, alias), dense_shape(model, root)
        if a_shape != s_shape:
            raise TieError(f"cannot retie {alias} {a_shape} to {root} {s_shape}: "
                           "shapes differ; the tie map does not fit this model")
        a, s = get_param(model, alias), get_param(model, root)
        if shared_at(model, root) is None and (a.dtype != s.dtype or a.device != s.device):
            raise TieError(f"cannot retie {alias} ({a.dtype}, {a.device}) to {root} ({s.dtype}, "
                           f"{s.device}): move the model with model.to(...) first")
    for alias, root in roots.items():
        shared = shared_at(model, root)
        if shared is not None:  # a whole shared weight: register the same one again
            owner, _, attr = alias.rpartition(".")
            share(model.get_submodule(owner) if owner else model, attr, shared[0], shared[1])
        else:
            set_param(model, alias, get_param(model, root))
    tie_weights = getattr(model, "tie_weights", None)
    if callable(tie_weights) and wants_tied_embeddings(model):
        tie_weights()
    if tie_map is not None:
        set_tie_map(model, {**recorded, **mapping})
    record_ties(model)
    return model


def _root(mapping: dict[str, str], alias: str) -> str:
    seen = {alias}
    name = mapping[alias]
    while name in mapping:
        name = mapping[name]
        if name in seen:
            raise TieError(f"the tie map has a cycle through {alias!r}; each alias must lead to "
                           "one source")
        seen.add(name)
    return name
