"""The hashed weight (HashedNets, Chen et al. 2015): a virtual weight of the usual shape
whose entries come from ``budget`` real weights, the bucket, through a seeded hash.

``w[i] = sign(i) * bucket[h(i)]`` for every position ``i`` of the flattened weight
(``hashing.signed_index``); the sign hash keeps the inner products of the virtual
weight unbiased. Gradients reach the bucket through a gather (``index_select``), whose
backward sums the gradients of all positions sharing a bucket entry.

The map is the seed, never an index: files store the scheme (shape, budget, seed, sign)
and the bucket. In memory the hash is either

* **cached** (``cache=True``, the default): the signed index as an int32 buffer (not
  saved), computed once when the weight is built or loaded: 4 bytes per virtual weight
  (as much as the dense fp32 weight) and a plain gather per forward; or
* **computed on the fly** (``cache=False``): no memory beyond the bucket, the hash
  recomputed every forward (about 20 integer operations per virtual weight).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ...core.protocol import FLOAT_DTYPES, PartSpec, SharedWeight, dtype_name
from ...errors import ConfigError, FormatError
from .hashing import MAX_BUDGET, MAX_POSITIONS, signed_index


class HashedWeight(SharedWeight):
    """A virtual weight of ``shape`` drawn from a bucket of ``budget`` values by ``seed``.

    Example:
        >>> import torch
        >>> from weightshare.core.protocol import attach
        >>> lin = torch.nn.Linear(8, 4)
        >>> attach(lin, "weight", HashedWeight((4, 8), budget=4), torch.nn.Parameter(torch.ones(4)))
        >>> lin.weight.shape, sorted(lin.weight.unique().tolist())
        (torch.Size([4, 8]), [-1.0, 1.0])
    """

    kind = "hash"
    version = 1
    original_part = "bucket"
    index: torch.Tensor | None

    def __init__(self, shape: tuple[int, ...], budget: int, seed: int = 0, sign: bool = True,
                 cache: bool = True) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)
        numel = math.prod(self.shape)
        check_budget(budget, numel)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
            raise ConfigError(f"seed must be an integer in [0, 2**31), got {seed!r}")
        self.budget, self.seed, self.sign, self.cache = int(budget), seed, bool(sign), cache
        index = self.compute_index() if cache else None
        # not persistent: the file keeps the seed, never the index
        self.register_buffer("index", index, persistent=False)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def compute_index(self, device: torch.device | None = None) -> torch.Tensor:
        """The signed index (int32, flattened): position -> entry of ``cat([b, -b])``."""
        positions = torch.arange(self.numel, dtype=torch.int64, device=device)
        return signed_index(positions, self.budget, self.seed, self.sign).to(torch.int32)

    def forward(self, bucket: torch.Tensor) -> torch.Tensor:
        # bucket: (budget,) -> the virtual weight, self.shape
        table = torch.cat([bucket, -bucket]) if self.sign else bucket  # (2 * budget,)
        index = self.index if self.index is not None else self.compute_index(bucket.device)
        return table.index_select(0, index).reshape(self.shape)

    @torch.no_grad()
    def project(self, weight: torch.Tensor) -> torch.Tensor:
        """The bucket closest to ``weight`` in least squares: each entry the mean of
        ``sign * w`` over the positions hashed to it (0 for an entry no position uses)."""
        index = (self.index if self.index is not None else self.compute_index()).long()
        index = index.to(weight.device)
        w = weight.reshape(-1).double()
        entry = index % self.budget
        signs = torch.where(index >= self.budget, -1.0, 1.0).to(w)
        sums = torch.zeros(self.budget, dtype=torch.float64, device=w.device)
        sums.index_add_(0, entry, w * signs)
        counts = torch.bincount(entry, minlength=self.budget).double()
        return (sums / counts.clamp(min=1)).to(weight.dtype)

    # -- the shared-weight protocol ----------------------------------------------------

    def scheme(self, original: torch.Tensor) -> dict[str, Any]:
        return {"kind": self.kind, "shape": list(self.shape), "budget": self.budget,
                "seed": self.seed, "sign": self.sign, "dtype": dtype_name(original.dtype)}

    @classmethod
    def check_scheme(cls, s: dict[str, Any]) -> None:
        keys = {"kind", "shape", "budget", "seed", "sign", "dtype"}
        if set(s) != keys:
            raise FormatError(f"has keys {sorted(s)[:10]}, expected {sorted(keys)}")
        budget, seed = s["budget"], s["seed"]
        numel = math.prod(s["shape"])
        if not _is_int(budget) or not 1 <= budget <= min(numel, MAX_BUDGET - 1):
            raise FormatError(f"budget {str(budget)[:40]} is not an integer in 1..{numel}")
        if numel >= MAX_POSITIONS:
            raise FormatError(f"shape {s['shape']} has more than 2**32 positions")
        if not _is_int(seed) or not 0 <= seed < 2**31:
            raise FormatError(f"seed {str(seed)[:40]} is not an integer in [0, 2**31)")
        if not isinstance(s["sign"], bool):
            raise FormatError(f"sign {str(s['sign'])[:20]} is not true or false")
        if s["dtype"] not in FLOAT_DTYPES:
            raise FormatError(f"dtype {str(s['dtype'])[:40]!r} is not one of {list(FLOAT_DTYPES)}")

    @classmethod
    def part_specs(cls, s: dict[str, Any]) -> dict[str, PartSpec]:
        return {"bucket": PartSpec(s["dtype"], (s["budget"],))}

    @classmethod
    def from_scheme(cls, s: dict[str, Any], parts: dict[str, torch.Tensor]) -> HashedWeight:
        return cls(tuple(s["shape"]), s["budget"], s["seed"], s["sign"])

    def describe(self, original: torch.Tensor) -> str:
        return (f"{self.budget:,} buckets for {self.numel:,} weights "
                f"(1/{self.numel / self.budget:.3g}), seed {self.seed}")

    def extra_repr(self) -> str:
        return (f"shape={self.shape}, budget={self.budget}, seed={self.seed}, sign={self.sign}, "
                f"cache={self.cache}")


def check_budget(budget: Any, numel: int, where: str = "the weight") -> None:
    """ConfigError unless ``budget`` is an integer in 1..``numel`` (and ``numel`` < 2**32)."""
    if numel >= MAX_POSITIONS:
        raise ConfigError(f"{where} has {numel:,} values; hashing supports fewer than 2**32")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigError(f"the hash leaves {where} ({numel:,} weights) no bucket (budget "
                          f"{budget!r}); raise the ratio so that ratio x weights >= 1")
    if budget > numel:
        raise ConfigError(f"budget {budget:,} is more than the {numel:,} weights of {where}; "
                          "a hashed weight needs fewer real weights than virtual ones")


def budget_for(numel: int, ratio: float, where: str = "the weight") -> int:
    """Buckets for ``numel`` virtual weights at ``ratio`` (rounded; at least 1 or an error).

    Example:
        >>> budget_for(784 * 300, 1 / 64)
        3675
    """
    if not (isinstance(ratio, (int, float)) and not isinstance(ratio, bool)
            and 0 < ratio <= 1):
        raise ConfigError(f"ratio must be a fraction in (0, 1], got {ratio!r}; e.g. 1/8")
    budget = math.floor(numel * ratio + 0.5)
    check_budget(budget, numel, where)
    return budget


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
