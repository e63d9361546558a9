"""``TieConfig``: what to tie, and how.

Three kinds of tie share one config and one code path (``apply.py``):

* **cross-layer**: a ``strategy`` over a stack of repeated blocks (``blocks.py``)
  maps N blocks onto ``unique`` = M slots (``strategies.py``);
* **explicit groups**: name patterns picking parameters or whole modules;
* **embeddings**: the input embedding and the output projection of a language model.

Each of them reduces to *tie sets*: lists of parameter fqns that become one tensor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from ...core.registry import config_from_dict
from ...errors import ConfigError

STRATEGIES = ("all", "sequence", "cycle", "cycle_rev", "repeat")
INITS = ("first", "mean", "stepwise")


@dataclass(frozen=True)
class TieGroup:
    """One explicit tie: the members become one tensor, owned by ``source``.

    ``members`` is a pattern (a regular expression searched in module names, like every
    weightshare pattern; the outermost matching modules are tied parameter by parameter,
    same relative names and shapes required; when no module matches, it is searched in
    parameter names) or a tuple of exact module or parameter names (given order).
    ``source`` names the member that keeps its tensor (default: the first member).

    Example:
        >>> TieGroup(r"encoder\\.layer\\.[02]\\.attention").source is None
        True
    """

    members: str | tuple[str, ...]
    source: str | None = None

    def __post_init__(self) -> None:
        members = self.members
        if isinstance(members, str):
            try:
                re.compile(members)
            except re.error as e:
                raise ConfigError(f"tie group pattern {members!r} is not a regular expression "
                                  f"({e}); escape special characters or pass a list of names"
                                  ) from None
        elif isinstance(members, (list, tuple)) and all(isinstance(m, str) for m in members):
            object.__setattr__(self, "members", tuple(members))
            if len(members) < 2:
                raise ConfigError(f"tie group {list(members)} names {len(members)} member; "
                                  "a tie needs at least 2 names")
        else:
            raise ConfigError(f"tie group members must be a pattern or a list of names, got "
                              f"{members!r}; pass e.g. 'layer\\.[02]\\.attn' or ['a.weight', "
                              "'b.weight']")
        if self.source is not None and not isinstance(self.source, str):
            raise ConfigError(f"tie group source must be a name, got {self.source!r}")


def _help(text: str) -> Any:
    return {"help": text}


@dataclass(frozen=True)
class TieConfig:
    """Structural sharing settings for :func:`weightshare.tie_`.

    Example:
        >>> cfg = TieConfig(strategy="cycle", unique=3, scope="attention", init="mean")
        >>> cfg.rank
        0
        >>> TieConfig(groups=[["a.weight", "b.weight"]]).groups[0].members
        ('a.weight', 'b.weight')
    """

    strategy: str | None = field(default=None, metadata=_help(
        "cross-layer strategy over a stack of repeated blocks: all, sequence (0 0 1 1 2 2), "
        "cycle (0 1 2 0 1 2), cycle_rev (0 1 2 2 1 0), repeat (each unique block twice in a "
        "row, N = 2M)"))
    unique: int | None = field(default=None, metadata=_help(
        "number M of unique blocks kept (default: 1 for 'all', half the blocks otherwise)"))
    stack: str | None = field(default=None, metadata=_help(
        "which stack of repeated blocks, e.g. 'encoder.layer' (default: the largest stack)"))
    scope: str | None = field(default=None, metadata=_help(
        "tie only the parts of each block whose block-relative parameter name this regular "
        "expression is found in, e.g. 'attention' or '^(intermediate|output)\\.' "
        "(default: the whole block)"))
    layers: tuple[int, ...] | str | None = field(default=None, metadata=_help(
        "which blocks of the stack take part, by index in their list: '2..3' (inclusive), "
        "'1,2,4' (default: all)"))
    assignment: tuple[int, ...] | None = field(default=None, metadata=_help(
        "explicit slot of each taking-part block, e.g. (0, 1, 1, 0); overrides strategy"))
    init: str | None = field(default=None, metadata=_help(
        "value of each shared tensor: first (first member), mean (of the members), stepwise "
        "(evenly spaced blocks of the stack, as Relaxed Recursive Transformers); default: "
        "first for plain ties, mean for relaxed ones"))
    rank: int | str = field(default=0, metadata=_help(
        "relaxed sharing: rank of each member's low-rank delta (0: plain tie, 'full': exact)"))
    groups: tuple[TieGroup, ...] = field(default=(), metadata=_help(
        "explicit ties: patterns or name lists of parameters or modules to tie"))
    embeddings: bool = field(default=False, metadata=_help(
        "tie the input embedding and the output projection of a language model"))

    def __post_init__(self) -> None:
        if self.strategy is not None:
            strategy = str(self.strategy).lower().replace("-", "_")
            if strategy not in STRATEGIES:
                raise ConfigError(f"unknown tie strategy {self.strategy!r}; use one of "
                                  f"{', '.join(STRATEGIES)}")
            object.__setattr__(self, "strategy", strategy)
        if self.unique is not None:
            if isinstance(self.unique, bool) or not isinstance(self.unique, int) or self.unique < 1:
                raise ConfigError(f"unique must be a positive number of blocks, got "
                                  f"{self.unique!r}")
            if self.strategy == "all" and self.unique != 1:
                raise ConfigError(f"strategy 'all' keeps one unique block, got unique="
                                  f"{self.unique}; drop unique or use sequence/cycle/cycle_rev")
        object.__setattr__(self, "rank", _parse_rank(self.rank))
        # relaxed: mean is measured better. On MiniLM (sequence, 3 of 6 unique) rank-16
        # deltas on the mean reach cosine 0.38 vs 0.25 for the mean alone, but on the first
        # member they fall to 0.21 from 0.37: a partial low-rank correction of W_j - W_i
        # mixes two unrelated layers, while the members' mean is their common part.
        init = str(self.init).lower() if self.init is not None else (
            "first" if self.rank == 0 else "mean")
        if init not in INITS:
            raise ConfigError(f"unknown init {self.init!r}; use one of {', '.join(INITS)}")
        object.__setattr__(self, "init", init)
        object.__setattr__(self, "layers", parse_layers(self.layers))
        if self.assignment is not None:
            slots = tuple(self.assignment)
            if not slots or any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                                for s in slots):
                raise ConfigError(f"assignment must list one slot number >= 0 per block, got "
                                  f"{self.assignment!r}")
            object.__setattr__(self, "assignment", slots)
        if self.scope is not None:
            try:
                re.compile(self.scope)
            except re.error as e:
                raise ConfigError(f"scope {self.scope!r} is not a regular expression ({e})"
                                  ) from None
        object.__setattr__(self, "groups", tuple(_as_group(g) for g in self.groups))
        if not isinstance(self.embeddings, bool):
            raise ConfigError(f"embeddings must be true or false, got {self.embeddings!r}")
        cross_layer = self.strategy is not None or self.assignment is not None
        if not (cross_layer or self.groups or self.embeddings):
            raise ConfigError("nothing to tie: set strategy (e.g. 'cycle'), assignment, "
                              "groups or embeddings=True")
        if not cross_layer and (self.scope or self.layers or self.unique or self.stack):
            raise ConfigError("scope, layers, unique and stack apply to a cross-layer tie; "
                              "set strategy too (e.g. strategy='cycle')")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TieConfig:
        """Build from a plain dict (JSON, CLI), rejecting unknown keys.

        Example:
            >>> TieConfig.from_dict({"strategy": "all"}).unique is None
            True
        """
        return config_from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that :meth:`from_dict` reads back."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "groups":
                v = [{"members": g.members if isinstance(g.members, str) else list(g.members),
                      "source": g.source} for g in v]
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @staticmethod
    def help(name: str) -> str:
        """The one-line help text of a field (the CLI reuses it)."""
        for f in fields(TieConfig):
            if f.name == name:
                return str(f.metadata.get("help", ""))
        raise ConfigError(f"no TieConfig field {name!r}")


def _parse_rank(rank: Any) -> int | str:
    if isinstance(rank, str):
        if rank.lower() == "full":
            return "full"
        if rank.isdigit():
            return int(rank)
    elif isinstance(rank, int) and not isinstance(rank, bool) and rank >= 0:
        return rank
    raise ConfigError(f"rank must be an integer >= 0 or 'full', got {rank!r}")


def parse_layers(layers: Any) -> tuple[int, ...] | None:
    """'2..3' -> (2, 3); '1,4' -> (1, 4); [0, 2] -> (0, 2); None -> None.

    Example:
        >>> parse_layers("1..3"), parse_layers("0,5")
        ((1, 2, 3), (0, 5))
    """
    if layers is None:
        return None
    out: list[int] = []
    try:
        if isinstance(layers, str):
            for part in layers.replace(" ", "").split(","):
                if ".." in part:
                    lo, hi = part.split("..")
                    out.extend(range(int(lo), int(hi) + 1))
                elif part:
                    out.append(int(part))
        else:
            out = [int(x) for x in layers]
    except (TypeError, ValueError):
        raise ConfigError(f"layers must look like '2..3' or '1,2,4', got {layers!r}") from None
    if not out or any(x < 0 for x in out) or len(set(out)) != len(out):
        raise ConfigError(f"layers must name distinct block indices >= 0, got {layers!r}")
    return tuple(sorted(out))


def _as_group(group: Any) -> TieGroup:
    if isinstance(group, TieGroup):
        return group
    if isinstance(group, dict):
        unknown = set(group) - {"members", "source"}
        if unknown:
            raise ConfigError(f"unknown tie group key(s) {sorted(unknown)}; valid: members, source")
        members = group.get("members")
        members = tuple(members) if isinstance(members, list) else members
        return TieGroup(members, group.get("source"))  # type: ignore[arg-type]
    if isinstance(group, (str, list, tuple)):
        return TieGroup(group if isinstance(group, str) else tuple(group))
    raise ConfigError(f"a tie group is a pattern, a list of names or a TieGroup, got {group!r}")
