"""Which modules a config applies to.

Patterns are regular expressions searched in the module's fully qualified
name (``re.search``): ``attention`` matches every attention projection,
``^encoder\\.layer\\.0\\.`` only the first layer. Exclude wins over include.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from .errors import ConfigError, SelectionError

# nn.Linear, nn.ConvNd, nn.Embedding: output channels along dim 0.
# transformers' Conv1D (GPT-2) stores its weight as (in, out): output channels along dim 1.
_AXIS0 = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


def channel_axis(module: nn.Module) -> int | None:
    """The output-channel axis of a supported module's weight, or None if unsupported."""
    if isinstance(module, _AXIS0):
        return 0
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return 1
    return None


@dataclass(frozen=True)
class Target:
    """One weight selected for sharing."""

    name: str  # module fqn
    module: nn.Module
    axis: int  # output-channel axis of module.weight

    @property
    def fqn(self) -> str:
        return f"{self.name}.weight" if self.name else "weight"


def compile_patterns(patterns: Sequence[str], what: str) -> list[re.Pattern[str]]:
    compiled = []
    for pat in patterns:
        try:
            compiled.append(re.compile(pat))
        except re.error as exc:
            raise ConfigError(f"{what} pattern {pat!r} is not a valid regular expression "
                              f"({exc}); fix the pattern") from None
    return compiled


def select_targets(model: nn.Module, include: Sequence[str] = (), exclude: Sequence[str] = (),
                   min_size: int = 0) -> list[Target]:
    """Supported weights whose module name matches ``include`` (all if empty) and not ``exclude``,
    with at least ``min_size`` values. A module reachable under several names (a tie) is
    returned once, under its first name.

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
    candidates: list[Target] = []
    seen: set[int] = set()
    for name, module in model.named_modules():
        axis = channel_axis(module)
        if axis is None or id(module) in seen or not _has_weight(module):
            continue
        seen.add(id(module))
        candidates.append(Target(name, module, axis))
    if not candidates:
        raise SelectionError("the model has no Linear, Conv or Embedding weight to share; "
                             "weightshare clusters nn.Linear/ConvNd/Embedding and "
                             "transformers Conv1D")
    for pat in inc:
        if not any(pat.search(t.name) for t in candidates):
            examples = ", ".join(t.name for t in candidates[:3])
            raise SelectionError(f"include pattern {pat.pattern!r} matches no shareable module "
                                 f"(examples of names: {examples}); fix the pattern")
    chosen = [t for t in candidates
              if (not inc or any(p.search(t.name) for p in inc))
              and not any(p.search(t.name) for p in exc)
              and t.module.weight.numel() >= min_size]
    if not chosen:
        raise SelectionError(f"no weight left to share after include={list(include)}, "
                             f"exclude={list(exclude)}, min_size={min_size}; loosen them")
    return chosen


def _has_weight(module: nn.Module) -> bool:
    w = getattr(module, "weight", None)
    return w is not None and getattr(w, "ndim", 0) >= 2
