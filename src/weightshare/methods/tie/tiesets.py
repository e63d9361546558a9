"""From a ``TieConfig`` to *tie sets*: lists of parameter fqns that become one tensor.

Everything here only reads the model: every check (names, shapes, dtypes, devices,
ranks) runs before ``apply.tie_`` changes anything, so a bad config leaves the
model as it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from ...core.names import get_param, has_param, is_parametrized_name, resolve, user_name
from ...core.select import compile_pattern, matches
from ...errors import SelectionError, TieError
from .blocks import Block, select_stack
from .config import TieConfig, TieGroup
from .embeddings import find_embedding_pair
from .relaxed import max_rank
from .strategies import assign, default_unique, normalize, slots, stepwise_sources


@dataclass
class TieSet:
    """Parameters that become one tensor: ``fqns[0]`` is the source."""

    fqns: list[str]
    init: str  # first | mean | stepwise
    rank: int | str  # relaxed delta rank per member; 0 = plain tie
    label: str
    value_from: str | None = None  # stepwise: the parameter whose value the set starts from
    value: torch.Tensor | None = None  # initial shared value; None keeps the source's


def scope_matches(scope: str | None, relative: str) -> bool:
    """Whether a block-relative parameter name is in ``scope`` (``None``: the whole block).

    A scope is a pattern like every other (``core.select``): searched in the name, so
    ``attention`` takes every attention parameter and ``^output\\.`` only the block's own
    ``output.*`` (not ``attention.output.*``).

    Example:
        >>> scope_matches(r"^output\\.", "attention.output.dense.weight")
        False
    """
    return scope is None or matches(scope, relative)


def child_scope(child: str) -> str:
    """The scope pattern of one direct child of a block: ``^<child>\\.``."""
    return f"^{re.escape(child)}\\."


def build_tie_sets(model: nn.Module, config: TieConfig) -> list[TieSet]:
    """The tie sets ``config`` asks of ``model``, fully checked; the model is not changed."""
    sets: list[TieSet] = []
    if config.strategy is not None or config.assignment is not None:
        sets.extend(_cross_layer_sets(model, config))
    for group in config.groups:
        sets.extend(_group_sets(model, group, config))
    if config.embeddings:
        sets.extend(_embedding_sets(model))
    for ts in sets:
        for fqn in ts.fqns:
            if resolve(model, fqn)[1] == "original" or is_parametrized_name(fqn):
                raise TieError(f"cannot tie {user_name(fqn)}: it is already a shared weight "
                               "(codebook or relaxed); tie before clustering, or merge_ first")
    sets = [s for s in (_dedupe(model, s) for s in sets) if len(s.fqns) >= 2]
    seen: dict[int, str] = {}
    for ts in sets:
        for fqn in ts.fqns:
            pid = id(get_param(model, fqn))
            if pid in seen:
                raise TieError(f"parameter {fqn} would be tied twice ({seen[pid]} and {ts.label}); "
                               "make the strategy, groups and embeddings ties disjoint")
            seen[pid] = ts.label
        _check_set(model, ts)
    for ts in sets:
        ts.value = _init_value(model, ts.fqns, ts.init, ts.value_from)
    return sets


def _cross_layer_sets(model: nn.Module, config: TieConfig) -> list[TieSet]:
    stack = select_stack(model, config.stack)
    blocks: list[Block] = list(stack.blocks)
    if config.layers is not None:
        by_index = {b.index: b for b in blocks}
        absent = [i for i in config.layers if int(i) not in by_index]
        if absent:
            raise TieError(f"layers {absent} are not blocks of stack {stack.name!r} (its blocks "
                           f"are {stack.indices[0]}..{stack.indices[-1]}); pick layers inside it")
        blocks = [by_index[int(i)] for i in config.layers]
    n = len(blocks)
    if config.assignment is not None:
        if len(config.assignment) != n:
            raise TieError(f"assignment {list(config.assignment)} has {len(config.assignment)} "
                           f"slots but {n} blocks take part; give one slot per block")
        assignment = normalize(config.assignment)
    else:
        strategy = config.strategy or "all"
        unique = config.unique if config.unique is not None else default_unique(strategy, n)
        if unique > n:
            raise TieError(f"unique={unique} is larger than stack {stack.name!r} ({n} blocks "
                           f"taking part); use unique <= {n}")
        assignment = assign(strategy, n, unique)
    relatives = [r for r in blocks[0].relative_names if scope_matches(config.scope, r)]
    if not relatives:
        sample = ", ".join(blocks[0].relative_names[:4])
        raise SelectionError(f"scope {config.scope!r} matches no parameter of {blocks[0].name} "
                             f"(its names start: {sample}); the scope is matched at the start "
                             "of the block-relative name")
    if config.rank != 0 and stack.kind == "rnn":
        raise TieError(f"relaxed sharing (rank={config.rank}) is not supported on recurrent "
                       f"stack {stack.name!r}: nn.RNN/LSTM/GRU read their weights directly, not "
                       "through parametrizations; use rank=0")
    steps = stepwise_sources(n, max(assignment) + 1)
    sets: list[TieSet] = []
    for slot, positions in enumerate(slots(assignment)):
        if len(positions) < 2:
            continue  # a slot used once shares nothing: leave that block as it is
        for rel in relatives:
            fqns = [blocks[p].fqn(rel) for p in positions]
            value_from = blocks[steps[slot]].fqn(rel) if config.init == "stepwise" else None
            label = f"slot {slot} of {stack.name or '<root>'} (blocks " \
                    f"{', '.join(str(blocks[p].index) for p in positions)})"
            sets.append(TieSet(fqns, str(config.init), config.rank, label, value_from))
    return sets


def _init_value(model: nn.Module, fqns: list[str], init: str,
                stepwise_fqn: str | None) -> torch.Tensor | None:
    if init == "mean":
        members = [get_param(model, f).detach() for f in fqns]
        if members[0].dtype.is_floating_point:
            mean = torch.stack([m.float() for m in members]).mean(0)
            return mean.to(members[0].dtype)
        return None
    if init == "stepwise" and stepwise_fqn is not None and stepwise_fqn != fqns[0]:
        return get_param(model, stepwise_fqn).detach().clone()
    return None


def _group_sets(model: nn.Module, group: TieGroup, config: TieConfig) -> list[TieSet]:
    members, kind = _group_members(model, group)
    label = f"group {group.members!r}"
    if kind == "module":
        first = model.get_submodule(members[0])
        first_params = {n: p for n, p in first.named_parameters(remove_duplicate=False)}
        for other_name in members[1:]:
            other = model.get_submodule(other_name)
            if type(other) is not type(first):
                raise TieError(f"cannot tie modules {members[0]} ({type(first).__name__}) and "
                               f"{other_name} ({type(other).__name__}): types differ; tie modules "
                               "of one class, or name their parameters instead")
            other_params = {n: p for n, p in other.named_parameters(remove_duplicate=False)}
            if set(other_params) != set(first_params):
                diff = sorted(set(other_params) ^ set(first_params))[0]
                raise TieError(f"cannot tie modules {members[0]} and {other_name}: parameter "
                               f"{diff!r} is in one and not the other; tie matching modules only")
            for rel, p in first_params.items():
                if p.shape != other_params[rel].shape:
                    raise TieError(f"cannot tie {members[0]}.{rel} {tuple(p.shape)} and "
                                   f"{other_name}.{rel} {tuple(other_params[rel].shape)}: shapes "
                                   "differ; tie only modules of the same size")
        fqn_lists = [[f"{m}.{rel}" for m in members] for rel in first_params]
    else:
        fqn_lists = [members]
    init = "first" if config.init == "stepwise" else str(config.init)
    return [TieSet(f, init, config.rank, label) for f in fqn_lists]


def _group_members(model: nn.Module, group: TieGroup) -> tuple[list[str], str]:
    modules = {n: m for n, m in model.named_modules(remove_duplicate=False) if n}
    params = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    if isinstance(group.members, str):
        # the one pattern language: searched in module names (the outermost matching
        # modules are tied, parameter by parameter); when no module matches, in
        # parameter names
        pat = compile_pattern(group.members, "tie group pattern")
        mods = [n for n in modules if pat.search(n)]
        mods = [n for n in mods if not any(n.startswith(o + ".") for o in mods)]
        prms = [] if mods else [user_name(n) for n in params
                                if pat.search(n) or pat.search(user_name(n))]
    else:
        mods, prms = [], []
        for name in group.members:
            if name in modules:
                mods.append(name)
            elif has_param(model, name):
                prms.append(name)
            else:
                raise SelectionError(f"tie group names {name!r}, which is neither a module nor a "
                                     "parameter of the model; check model.named_modules()")
    if mods and prms:
        raise SelectionError(f"tie group {group.members!r} matches modules ({mods[0]}) and "
                             f"parameters ({prms[0]}); make it match one kind")
    members, kind = (mods, "module") if mods else (prms, "param")
    if len(members) < 2:
        raise SelectionError(f"tie group {group.members!r} matches {len(members)} member(s) "
                             f"{members}; a tie needs at least 2")
    if group.source is not None:
        if group.source not in members:
            raise SelectionError(f"tie group source {group.source!r} is not one of its members "
                                 f"{members}; name one of them")
        members.remove(group.source)
        members.insert(0, group.source)
    return members, kind


def _embedding_sets(model: nn.Module) -> list[TieSet]:
    pair = find_embedding_pair(model)
    if pair is None:
        raise TieError(f"{type(model).__name__} has no input embedding / output projection pair "
                       "(an nn.Embedding and an nn.Linear with the same weight shape); tie named "
                       "parameters with groups=[...] instead")
    return [TieSet(list(pair), "first", 0, "embeddings")]


def _dedupe(model: nn.Module, ts: TieSet) -> TieSet:
    seen: set[int] = set()
    fqns = []
    for f in ts.fqns:
        pid = id(get_param(model, f))
        if pid not in seen:
            seen.add(pid)
            fqns.append(f)
    ts.fqns = fqns
    return ts


def _check_set(model: nn.Module, ts: TieSet) -> None:
    src_name = ts.fqns[0]
    src = get_param(model, src_name)
    for fqn in ts.fqns:
        owner, _ = resolve(model, fqn)
        p = get_param(model, fqn)
        if p.shape != src.shape:
            raise TieError(f"cannot tie {src_name} {tuple(src.shape)} and {fqn} "
                           f"{tuple(p.shape)}: shapes differ; tie only parameters of one shape")
        if p.dtype != src.dtype or p.device != src.device:
            raise TieError(f"cannot tie {src_name} ({src.dtype}, {src.device}) and {fqn} "
                           f"({p.dtype}, {p.device}): one tensor cannot have two dtypes or "
                           "devices; move the model with model.to(...) first")
        if ts.rank == 0:
            continue
        if isinstance(owner, nn.RNNBase):
            raise TieError(f"relaxed sharing is not supported on {fqn}: recurrent layers read "
                           "their weights directly, not through parametrizations; use rank=0")
        limit = max_rank(tuple(p.shape))
        if ts.rank != "full" and p.dim() >= 2 and int(ts.rank) > limit:
            raise TieError(f"rank {ts.rank} is larger than {fqn} {tuple(p.shape)} allows (at most "
                           f"{limit}); lower rank or use rank='full'")
