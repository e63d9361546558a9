"""HashConfig: every setting of hashing (HashedNets), validated once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...core.registry import config_from_dict
from ...errors import ConfigError
from ..codebook.config import check_choice

INITS = ("project", "sample")


@dataclass(frozen=True)
class HashConfig:
    """Settings of hashed weights: each selected weight keeps ``ratio`` of its values.

    Example:
        >>> HashConfig(ratio=1/64, include=("fc",)).ratio
        0.015625
    """

    ratio: float = field(default=1 / 8, metadata={
        "help": "real weights per virtual weight: each hashed layer keeps round(ratio x "
                "weights) buckets (e.g. 0.125 = 1/8)"})
    seed: int = field(default=0, metadata={
        "help": "seed of the hash; the k-th hashed layer uses seed + k"})
    sign: bool = field(default=True, metadata={
        "help": "a second hash gives each position a sign (keeps inner products unbiased)"})
    init: str = field(default="project", metadata={
        "help": "bucket values: project (least squares from the current weights, for a "
                "trained layer) or sample (random current weights, keeps an untrained "
                "layer's scale)"})
    cache: bool = field(default=True, metadata={
        "help": "keep the hash as an int32 index in memory (4 bytes per virtual weight) "
                "instead of recomputing it every forward"})
    include: tuple[str, ...] = field(default=(), metadata={
        "help": "regular expressions searched in module names; only matching modules are "
                "hashed (default: all)"})
    exclude: tuple[str, ...] = field(default=(), metadata={
        "help": "regular expressions searched in module names; matching modules stay dense"})
    min_size: int = field(default=0, metadata={
        "help": "weights with fewer values than this stay dense"})

    def __post_init__(self) -> None:
        r = self.ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1:
            raise ConfigError(f"ratio must be a fraction in (0, 1], got {r!r}; e.g. 1/8")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        check_choice("init", self.init, INITS)
        if not isinstance(self.min_size, int) or self.min_size < 0:
            raise ConfigError(f"min_size must be a non-negative integer, got {self.min_size!r}")
        for key in ("include", "exclude"):
            value = getattr(self, key)
            object.__setattr__(self, key, (value,) if isinstance(value, str) else tuple(value))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HashConfig:
        """Build from a dict, rejecting unknown keys with the list of valid ones."""
        return config_from_dict(cls, data)
