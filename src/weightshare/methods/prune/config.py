"""PruneConfig: every setting of magnitude pruning, validated once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...core.registry import config_from_dict
from ...core.select import compile_pattern
from ...errors import ConfigError
from ..codebook.config import check_choice

SCOPES = ("layer", "global")


@dataclass(frozen=True)
class PruneConfig:
    """Settings of magnitude pruning (zero shared by the smallest weights).

    ``sparsity`` is one fraction for every selected weight, or per-layer fractions as
    ``{pattern: fraction}`` (patterns searched in module names; the first that matches a
    module gives its fraction; modules no pattern matches are not pruned).

    Example:
        >>> PruneConfig(sparsity={"fc1": 0.92, "fc": 0.9}).rate("fc2")
        0.9
    """

    sparsity: float | tuple[tuple[str, float], ...] = field(default=0.9, metadata={
        "help": "fraction of the weights set to zero (0 <= sparsity < 1), one for all or "
                "per layer"})
    scope: str = field(default="layer", metadata={
        "help": "layer: each weight loses that fraction of its smallest values; global: one "
                "magnitude threshold over all selected weights"})
    include: tuple[str, ...] = field(default=(), metadata={
        "help": "regular expressions searched in module names; only matching modules are "
                "pruned (default: all)"})
    exclude: tuple[str, ...] = field(default=(), metadata={
        "help": "regular expressions searched in module names; matching modules stay dense"})
    min_size: int = field(default=0, metadata={
        "help": "weights with fewer values than this stay dense"})

    def __post_init__(self) -> None:
        rates = self.sparsity
        if isinstance(rates, Mapping):
            rates = tuple(rates.items())
        if isinstance(rates, tuple):
            for pattern, rate in rates:
                compile_pattern(pattern, "sparsity pattern")
                _check_rate(rate)
            if self.scope == "global":
                raise ConfigError("scope='global' takes one sparsity for all weights; give a "
                                  "number, or use scope='layer' with per-layer fractions")
        else:
            _check_rate(rates)
        object.__setattr__(self, "sparsity", rates)
        check_choice("scope", self.scope, SCOPES)
        if not isinstance(self.min_size, int) or self.min_size < 0:
            raise ConfigError(f"min_size must be a non-negative integer, got {self.min_size!r}")
        for key in ("include", "exclude"):
            value = getattr(self, key)
            object.__setattr__(self, key, (value,) if isinstance(value, str) else tuple(value))

    def rate(self, module_name: str) -> float | None:
        """The sparsity of a module (None: not pruned)."""
        if not isinstance(self.sparsity, tuple):
            return float(self.sparsity)
        return next((float(r) for p, r in self.sparsity if compile_pattern(p).search(module_name)),
                    None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruneConfig:
        """Build from a dict, rejecting unknown keys with the list of valid ones."""
        return config_from_dict(cls, data)


def _check_rate(rate: Any) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ConfigError(f"sparsity must be a fraction 0 <= s < 1, got {rate!r}; e.g. 0.9 "
                          "prunes 90% of the weights")
