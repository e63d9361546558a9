"""The one pattern language, and which weights a config applies to.

**A pattern is a Python regular expression searched** (``re.search``) **in a name**:
``attention`` matches every name containing it, ``^encoder\\.layer\\.0\\.`` only names
that start so, ``query$`` names that end so. Everywhere in weightshare:

* ``include`` / ``exclude`` (every method, ``--include`` / ``--exclude``) and tie
  ``groups`` search the fully qualified **module** name, e.g.
  ``encoder.layer.0.attention.self.query``; exclude wins over include;
* a tie ``scope`` (``--scope``) searches the **block-relative parameter** name, e.g.
  ``attention.self.query.weight`` inside ``encoder.layer.0``;
* a list of names (instead of one pattern) means exactly those names.

A weight registered in several modules (a tie) is one tensor: it is selected when
any of its modules is included and none is excluded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from torch import nn

from ..errors import ConfigError, SelectionError
from .protocol import dense_weight, shared_of

# nn.Linear, nn.ConvNd, nn.Embedding: output channels along dim 0.
# transformers' Conv1D (GPT-2) stores its weight as (in, out): output channels along dim 1.
_AXIS0 = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


def compile_pattern(pattern: str, what: str = "pattern") -> re.Pattern[str]:
    """``re.compile`` with a one-line ConfigError for a bad expression."""
    if not isinstance(pattern, str):
        raise ConfigError(f"{what} must be a regular expression string, got {pattern!r}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{what} {pattern!r} is not a valid regular expression ({exc}); "
                          "fix the pattern (escape special characters with \\)") from None


def compile_patterns(patterns: Iterable[str], what: str) -> list[re.Pattern[str]]:
    return [compile_pattern(p, f"{what} pattern") for p in patterns]


def matches(pattern: str | re.Pattern[str], name: str) -> bool:
    """Whether ``pattern`` is found in ``name`` (the one meaning of a pattern).

    Example:
        >>> matches("attention", "encoder.layer.0.attention.self.query")
        True
        >>> matches("^attention", "encoder.layer.0.attention.self.query")
        False
    """
    return re.search(pattern, name) is not None


def channel_axis(module: nn.Module) -> int | None:
    """The output-channel axis of a supported module's weight, or None if unsupported."""
    if isinstance(module, _AXIS0):
        return 0
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return 1
    return None


@dataclass(frozen=True)
class Target:
    """One weight selected for sharing: ``module.weight`` (also held by ``aliases``)."""

    name: str  # module fqn
    module: nn.Module
    axis: int  # output-channel axis of module.weight
    aliases: tuple[tuple[str, nn.Module], ...] = field(default=())  # other modules, same tensor

    @property
    def fqn(self) -> str:
        return f"{self.name}.weight" if self.name else "weight"


def _weight_key(module: nn.Module) -> int:
    """Identity of a module's weight: the original of a shared weight, else the Parameter."""
    found = shared_of(module, "weight")
    return id(found[1]) if found is not None else id(dense_weight(module))


def select_targets(model: nn.Module, include: Sequence[str] = (), exclude: Sequence[str] = (),
                   min_size: int = 0, what: str = "share") -> list[Target]:
    """Weights of Linear, Conv, Embedding and transformers Conv1D modules whose module name
    matches ``include`` (all if empty) and not ``exclude``, with at least ``min_size``
    values. A weight held by several modules (a tie) is one target with ``aliases``.

    Raises SelectionError when an include pattern matches no supported module, or when
    nothing at all is selected.

    Example:
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
        >>> [t.name for t in select_targets(m, min_size=1000)]
        ['0']
    """
    inc = compile_patterns(include, "include")
    exc = compile_patterns(exclude, "exclude")
    by_weight: dict[int, list[tuple[str, nn.Module, int]]] = {}
    seen: set[int] = set()
    for name, module in model.named_modules(remove_duplicate=False):
        axis = channel_axis(module)
        if axis is None or not _has_weight(module):
            continue
        if id(module) in seen:  # one module under two names: the first one names it
            continue
        seen.add(id(module))
        by_weight.setdefault(_weight_key(module), []).append((name, module, axis))
    if not by_weight:
        raise SelectionError(f"the model has no Linear, Conv or Embedding weight to {what}; "
                             "weightshare works on nn.Linear/ConvNd/Embedding and "
                             "transformers Conv1D weights")
    names = [n for group in by_weight.values() for n, _, _ in group]
    for pat in inc:
        if not any(pat.search(n) for n in names):
            raise SelectionError(f"include pattern {pat.pattern!r} matches no module with a "
                                 f"weight to {what} (examples of names: "
                                 f"{', '.join(names[:3])}); patterns are searched in module "
                                 "names, fix the pattern")
    chosen = []
    for group in by_weight.values():
        group_names = [n for n, _, _ in group]
        included = not inc or any(p.search(n) for p in inc for n in group_names)
        excluded = any(p.search(n) for p in exc for n in group_names)
        (name, module, axis), rest = group[0], group[1:]
        if included and not excluded and dense_weight(module).numel() >= min_size:
            chosen.append(Target(name, module, axis, tuple((n, m) for n, m, _ in rest)))
    if not chosen:
        raise SelectionError(f"no weight left to {what} after include={list(include)}, "
                             f"exclude={list(exclude)}, min_size={min_size}; loosen them")
    return chosen


def _has_weight(module: nn.Module) -> bool:
    w = getattr(module, "weight", None)
    return w is not None and getattr(w, "ndim", 0) >= 2
