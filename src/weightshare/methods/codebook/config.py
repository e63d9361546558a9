"""ClusterConfig: every setting of value sharing, validated once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError

GRANULARITIES = ("per_tensor", "per_channel", "per_group")
METHODS = ("exact", "fast")
INITS = ("linear", "density", "random", "kmeans++")


def group_size_for(granularity: str, rows: int, group_size: int) -> int:
    """Rows per codebook: all of them (per_tensor), one (per_channel), or ``group_size``.

    Example:
        >>> group_size_for("per_tensor", 64, 16), group_size_for("per_group", 64, 16)
        (64, 16)
    """
    return {"per_tensor": rows, "per_channel": 1}.get(granularity, group_size)


@dataclass(frozen=True)
class ClusterConfig:
    """Settings of codebook clustering (value sharing).

    Example:
        >>> ClusterConfig(bits=3, granularity="per_group", group_size=16).levels
        8
    """

    bits: int = field(default=4, metadata={
        "help": "bits per code: K = 2**bits shared values (1..8)"})
    granularity: str = field(default="per_tensor", metadata={
        "help": "one codebook per tensor, per output channel, or per group of output channels"})
    group_size: int = field(default=16, metadata={
        "help": "output channels per codebook for per_group (a tensor it does not divide "
                "gets the nearest divisor, see strict)"})
    method: str = field(default="exact", metadata={
        "help": "exact: optimal k-means (dynamic programming); fast: Lloyd iterations"})
    init: str = field(default="linear", metadata={
        "help": "initialisation of the fast method: linear, density, random, kmeans++"})
    include: tuple[str, ...] = field(default=(), metadata={
        "help": "regular expressions searched in module names; only matching modules are "
                "clustered (default: all)"})
    exclude: tuple[str, ...] = field(default=(), metadata={
        "help": "regular expressions searched in module names; matching modules stay dense"})
    min_size: int = field(default=1024, metadata={
        "help": "weights with fewer values than this stay dense"})
    seed: int = field(default=0, metadata={"help": "seed of random initialisations"})
    codebook_dtype: str | None = field(default=None, metadata={
        "help": "dtype of the stored codebooks: the weight's own (default) or float32 (exact "
                "centroids and fp32 fine-tuning for fp16/bf16 models; the layer still "
                "computes in its dtype)"})
    strict: bool = field(default=False, metadata={
        "help": "per_group: refuse a tensor the group size does not divide, instead of "
                "using the nearest divisor of its rows (reported)"})
    zero: bool = field(default=False, metadata={
        "help": "pin one of the 2**bits values at exactly zero (zero-sharing: pruned weights "
                "stay zero, sparse weights store only their nonzeros)"})

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= 8:
            raise ConfigError(f"bits must be an integer from 1 to 8, got {self.bits!r}; "
                              "choose e.g. bits=4 (16 shared values)")
        check_choice("granularity", self.granularity, GRANULARITIES)
        check_choice("method", self.method, METHODS)
        check_choice("init", self.init, INITS)
        if not isinstance(self.zero, bool):
            raise ConfigError(f"zero must be True or False, got {self.zero!r}")
        if not isinstance(self.group_size, int) or self.group_size < 1:
            raise ConfigError(f"group_size must be a positive integer, got {self.group_size!r}")
        if not isinstance(self.min_size, int) or self.min_size < 0:
            raise ConfigError(f"min_size must be a non-negative integer, got {self.min_size!r}")
        if self.codebook_dtype not in (None, "float32"):
            raise ConfigError(f"codebook_dtype must be None (the weight's dtype) or 'float32', "
                              f"got {self.codebook_dtype!r}")
        for key in ("include", "exclude"):
            value = getattr(self, key)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, key, tuple(value))

    @property
    def levels(self) -> int:
        return 1 << self.bits

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterConfig:
        """Build from a dict, rejecting unknown keys with the list of valid ones."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ConfigError(f"unknown ClusterConfig key(s) {unknown}; valid keys: {valid}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["include"], d["exclude"] = list(self.include), list(self.exclude)
        return d


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
