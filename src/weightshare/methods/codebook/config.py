"""ClusterConfig: every setting of value sharing, validated once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ...core.registry import config_from_dict
from ...errors import ConfigError

GRANULARITIES = ("per_tensor", "per_channel", "per_group")
METHODS = ("exact", "fast")
INITS = ("linear", "density", "random", "kmeans++")
SCALES = ("none", "per_channel")
WEIGHTINGS = ("activation", "fisher", "none")
VECTOR_DIMS = (1, 2, 4, 8)
MAX_SCALAR_BITS = 8
MAX_VECTOR_BITS = 16


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

    ``bits`` is the width of one code: a codebook holds K = 2**bits entries. With
    ``vector_dim=d`` each code stands for d consecutive weights of a row, so a weight
    costs ``bits / d`` bits (``bits_per_weight``), before codebooks, scales and outliers.
    ``ClusterConfig.recipe(name, bits=...)`` gives the measured good combinations.

    Example:
        >>> ClusterConfig(bits=3, granularity="per_group", group_size=16).levels
        8
        >>> ClusterConfig(bits=8, vector_dim=4).bits_per_weight
        2.0
    """

    bits: int = field(default=4, metadata={
        "help": "bits per code: K = 2**bits codebook entries (1..8; up to 16 with vector_dim "
                "> 1)"})
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
    vector_dim: int = field(default=1, metadata={
        "help": "weights per code (1, 2, 4, 8): d consecutive weights of a row share one "
                "code into a codebook of d-dimensional entries"})
    scales: str = field(default="none", metadata={
        "help": "none, or per_channel: one scale per output channel times a codebook shared "
                "by the channels (stored and counted)"})
    weighting: str = field(default="activation", metadata={
        "help": "how calibration data weights the codebook fit: activation (mean square of "
                "each weight's input), fisher (squared gradients), none"})
    error_feedback: bool = field(default=False, metadata={
        "help": "assign codes column by column, compensating each column's error on the "
                "columns not yet assigned (GPTQ's update; needs calibration data), then "
                "refit the codebook"})
    sequential: bool = field(default=False, metadata={
        "help": "with error_feedback: take each layer's calibration inputs from the layers "
                "before it, already clustered"})
    outliers: float = field(default=0.0, metadata={
        "help": "fraction of each weight's values (the most sensitive) kept exact in a sparse "
                "side tensor, e.g. 0.001"})
    budget: float | None = field(default=None, metadata={
        "help": "average bits per weight, everything stored counted: each layer's code "
                "width is chosen among bits-2..bits+2 where it costs least (Fisher "
                "estimate; needs calibration data)"})
    shared_codebooks: tuple[str, ...] = field(default=(), metadata={
        "help": "regular expressions searched in module names: the selected layers matching "
                "one expression share one codebook (per_tensor granularity)"})
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
        for key in ("include", "exclude", "shared_codebooks"):
            value = getattr(self, key)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, key, tuple(value))
        if not _is_int(self.vector_dim) or self.vector_dim not in VECTOR_DIMS:
            raise ConfigError(f"vector_dim must be one of {', '.join(map(str, VECTOR_DIMS))}, "
                              f"got {self.vector_dim!r}")
        top = MAX_SCALAR_BITS if self.vector_dim == 1 else MAX_VECTOR_BITS
        if not _is_int(self.bits) or not 1 <= self.bits <= top:
            hint = ("choose e.g. bits=4 (16 shared values)" if self.vector_dim == 1 else
                    f"choose e.g. bits={2 * self.vector_dim} ({2} bits per weight)")
            raise ConfigError(f"bits must be an integer from 1 to {top} with vector_dim="
                              f"{self.vector_dim}, got {self.bits!r}; {hint}")
        check_choice("granularity", self.granularity, GRANULARITIES)
        check_choice("method", self.method, METHODS)
        check_choice("init", self.init, INITS)
        check_choice("scales", self.scales, SCALES)
        check_choice("weighting", self.weighting, WEIGHTINGS)
        if not _is_int(self.group_size) or self.group_size < 1:
            raise ConfigError(f"group_size must be a positive integer, got {self.group_size!r}")
        if not _is_int(self.min_size) or self.min_size < 0:
            raise ConfigError(f"min_size must be a non-negative integer, got {self.min_size!r}")
        for key in ("error_feedback", "sequential"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{key} must be True or False, got {getattr(self, key)!r}")
        if self.sequential and not self.error_feedback:
            raise ConfigError("sequential=True takes each layer's inputs for error feedback; "
                              "set error_feedback=True too")
        if (isinstance(self.outliers, bool) or not isinstance(self.outliers, (int, float))
                or not 0.0 <= self.outliers < 0.5):
            raise ConfigError(f"outliers must be a fraction in [0, 0.5), got {self.outliers!r};"
                              " e.g. 0.001 keeps one weight in a thousand exact")
        if self.scales != "none" and self.granularity == "per_channel":
            raise ConfigError("scales='per_channel' with granularity='per_channel' gives each "
                              "channel its own codebook already; use granularity='per_tensor' "
                              "(one codebook shared by the scaled channels)")
        if self.budget is not None:
            if isinstance(self.budget, bool) or not isinstance(self.budget, (int, float)) \
                    or not 0 < self.budget <= 16:
                raise ConfigError(f"budget must be a number of bits per weight in (0, 16], "
                                  f"got {self.budget!r}")
            if self.vector_dim != 1:
                raise ConfigError("budget allocates scalar code widths; use vector_dim=1 "
                                  "with a budget, or a fixed bits with vectors")
        if self.codebook_dtype not in (None, "float32"):
            raise ConfigError(f"codebook_dtype must be None (the weight's dtype) or 'float32', "
                              f"got {self.codebook_dtype!r}")
        if self.codebook_dtype is not None and self.vector_dim != 1:
            raise ConfigError("codebook_dtype='float32' applies to scalar codebooks; vector "
                              "codebooks keep the weight's dtype: use vector_dim=1 or drop it")
        if not isinstance(self.zero, bool):
            raise ConfigError(f"zero must be True or False, got {self.zero!r}")
        if self.zero:  # zero-sharing codebooks are plain scalar ones (methods/prune)
            extras = [name for name, on in (
                ("vector_dim", self.vector_dim != 1), ("scales", self.scales != "none"),
                ("error_feedback", self.error_feedback), ("outliers", bool(self.outliers)),
                ("budget", self.budget is not None),
                ("shared_codebooks", bool(self.shared_codebooks))) if on]
            if extras:
                raise ConfigError(f"zero=True makes plain scalar codebooks with a pinned zero; "
                                  f"drop {', '.join(extras)} or zero")
        if self.shared_codebooks and self.granularity != "per_tensor":
            raise ConfigError(f"shared_codebooks needs granularity='per_tensor' (one codebook "
                              f"per layer to share), got {self.granularity!r}")

    @property
    def levels(self) -> int:
        """Codebook entries: 2**bits."""
        return 1 << self.bits

    @property
    def bits_per_weight(self) -> float:
        """Code bits per weight (codebooks, scales and outliers not counted)."""
        return self.bits / self.vector_dim

    @classmethod
    def recipe(cls, name: str, bits: float = 4, **overrides: Any) -> ClusterConfig:
        """A measured combination for ``bits`` per weight: ``fast``, ``balanced``, ``quality``
        (docs/codebooks.md gives their fidelity, size and time on all-MiniLM-L6-v2).

        ``bits`` is the budget per weight (2, 3, 4, ...); the recipe picks the code width,
        ``vector_dim`` and granularity. ``overrides`` replace any field (e.g. ``exclude=...``).

        Example:
            >>> cfg = ClusterConfig.recipe("balanced", bits=3)
            >>> cfg.bits_per_weight, cfg.error_feedback
            (3.0, True)
        """
        from .recipes import recipe_fields

        return cls(**{**recipe_fields(name, bits), **overrides})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterConfig:
        """Build from a dict, rejecting unknown keys with the list of valid ones."""
        return config_from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("include", "exclude", "shared_codebooks"):
            d[key] = list(getattr(self, key))
        return d


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
