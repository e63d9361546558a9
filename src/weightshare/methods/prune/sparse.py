"""The pruned weight: zero shared by every pruned position, one float per survivor.

Pruning is the simplest weight sharing: all pruned weights share the value zero, which
is never stored. The training form keeps only the surviving values (trainable, shape
(nnz,)) and their positions, so fine-tuning after pruning keeps the mask by
construction: a pruned weight has no parameter to move. Files store the values and the
positions as fixed-width gaps (``positions.py``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ...core.protocol import FLOAT_DTYPES, MAX_CODE_BITS, PartSpec, SharedWeight, dtype_name
from ...errors import ConfigError, FormatError
from .positions import best_gap_bits, decode_gaps, encode_gaps, entries_for, raw_gaps


class SparseWeight(SharedWeight):
    """weight.flatten()[positions] = values, every other entry exactly 0.

    Example:
        >>> import torch
        >>> from weightshare.core.protocol import attach
        >>> lin = torch.nn.Linear(3, 2, bias=False)
        >>> sw = SparseWeight((2, 3), torch.tensor([1, 5]))
        >>> attach(lin, "weight", sw, torch.nn.Parameter(torch.tensor([7.0, 9.0])))
        >>> lin.weight.tolist()
        [[0.0, 7.0, 0.0], [0.0, 0.0, 9.0]]
    """

    kind = "sparse"
    version = 1
    original_part = "values"
    positions: torch.Tensor

    def __init__(self, shape: tuple[int, ...], positions: torch.Tensor,
                 gap_bits: int | None = None) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)
        p = positions.long().reshape(-1)
        if p.numel() == 0:
            raise ConfigError("a pruned weight keeps at least one value; lower the sparsity")
        if bool((torch.diff(p) <= 0).any()) or int(p[0]) < 0 or int(p[-1]) >= self.numel:
            raise ConfigError("positions must be sorted, distinct and inside the weight")
        # sparse weights store one float per survivor: only the gaps' own bits matter
        self.gap_bits = best_gap_bits(p) if gap_bits is None else int(gap_bits)
        self.register_buffer("positions", p, persistent=False)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nnz(self) -> int:
        return self.positions.numel()

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        # values: (nnz,) -> dense weight, zeros elsewhere
        dense = values.new_zeros(self.numel).index_put((self.positions,), values)
        return dense.reshape(self.shape)

    def scheme(self, original: torch.Tensor) -> dict[str, Any]:
        return {"kind": self.kind, "shape": list(self.shape), "nnz": self.nnz,
                "entries": entries_for(raw_gaps(self.positions), self.gap_bits),
                "gap_bits": self.gap_bits, "dtype": dtype_name(original.dtype)}

    @classmethod
    def check_scheme(cls, s: dict[str, Any]) -> None:
        keys = {"kind", "shape", "nnz", "entries", "gap_bits", "dtype"}
        if set(s) != keys:
            raise FormatError(f"has keys {sorted(s)[:10]}, expected {sorted(keys)}")
        check_counts(s, math.prod(s["shape"]))
        if s["dtype"] not in FLOAT_DTYPES:
            raise FormatError(f"dtype {str(s['dtype'])[:40]!r} is not one of {list(FLOAT_DTYPES)}")

    @classmethod
    def part_specs(cls, s: dict[str, Any]) -> dict[str, PartSpec]:
        return {"values": PartSpec(s["dtype"], (s["nnz"],)),
                "gaps": PartSpec("int32", (s["entries"],), bits=s["gap_bits"])}

    def parts(self) -> dict[str, torch.Tensor]:
        return {"gaps": encode_gaps(self.positions.cpu(), self.gap_bits)}

    @classmethod
    def from_scheme(cls, s: dict[str, Any], parts: dict[str, torch.Tensor]) -> SparseWeight:
        positions = decode_gaps(parts["gaps"], s["gap_bits"], math.prod(s["shape"]), s["nnz"])
        return cls(tuple(s["shape"]), positions, s["gap_bits"])

    def describe(self, original: torch.Tensor) -> str:
        return (f"{self.nnz:,} of {self.numel:,} kept ({100 * self.nnz / self.numel:.2f}%), "
                f"gaps {self.gap_bits} bits")

    def extra_repr(self) -> str:
        return f"shape={self.shape}, nnz={self.nnz}, gap_bits={self.gap_bits}"


def check_counts(s: dict[str, Any], numel: int) -> None:
    """FormatError unless a scheme's nnz, entries and gap_bits are consistent integers."""
    nnz, entries, gap_bits = s["nnz"], s["entries"], s["gap_bits"]
    if not _is_int(gap_bits) or not 1 <= gap_bits <= MAX_CODE_BITS:
        raise FormatError(f"gap_bits {str(gap_bits)[:20]} is not an integer 1..{MAX_CODE_BITS}")
    if not _is_int(nnz) or not 1 <= nnz <= numel:
        raise FormatError(f"nnz {str(nnz)[:20]} is not an integer in 1..{numel}")
    # every escape skips 2**gap_bits - 1 positions: no more of them than the tensor holds
    if not _is_int(entries) or not nnz <= entries <= nnz + numel // ((1 << gap_bits) - 1):
        raise FormatError(f"entries {str(entries)[:20]} does not fit nnz {nnz} in {numel} values")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
