"""The zero-sharing codebook: K = 2**bits shared values, one of them pinned at exactly 0.

Deep Compression's storage after pruning and trained quantization, and what soft weight
sharing ends in. Code 0 means zero; the codebook holds the K - 1 other values (the
trainable original, shape (groups, K - 1)); ``forward`` puts the zero in front, so it
has no parameter and stays exactly zero through any training. Two layouts, chosen per
tensor by size:

* ``dense``: a code for every weight (zeros as code 0), ``bits`` bits each;
* ``sparse``: only the nonzeros: their positions as fixed-width gaps
  (``positions.py``) plus their codes (1..K-1).

Groups of rows (``granularity``, ``group_size``, ``axis``) work as for ``CodebookWeight``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ...core.protocol import MAX_CODE_BITS, PartSpec, SharedWeight, dtype_name
from ...errors import ConfigError, FormatError
from ..codebook.config import group_size_for
from ..codebook.weight import check_grouped_scheme
from .positions import best_gap_bits, decode_gaps, encode_gaps, entries_for, raw_gaps
from .sparse import check_counts

LAYOUTS = ("dense", "sparse")


class ZeroCodebookWeight(SharedWeight):
    """weight[r, ...] = [0, *codebook[r // group_size]][codes[r, ...]], rows along ``axis``.

    ``codes`` has the weight's shape (0 = zero). ``layout=None`` picks the smaller one.

    Example:
        >>> import torch
        >>> from weightshare.core.protocol import attach
        >>> lin = torch.nn.Linear(4, 2, bias=False)
        >>> codes = torch.tensor([[0, 1, 0, 0], [0, 0, 0, 3]])
        >>> zw = ZeroCodebookWeight(codes, bits=2)
        >>> attach(lin, "weight", zw, torch.nn.Parameter(torch.tensor([[-1.0, 0.5, 2.0]])))
        >>> lin.weight.tolist(), zw.layout
        ([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]], 'sparse')
    """

    kind = "zero-codebook"
    version = 1
    original_part = "codebook"
    index: torch.Tensor  # into the flattened (groups, K) table: every weight, or the nonzeros
    positions: torch.Tensor | None  # sparse layout: flat positions of the nonzeros

    def __init__(self, codes: torch.Tensor, bits: int, granularity: str = "per_tensor",
                 group_size: int = 1, axis: int = 0, layout: str | None = None,
                 gap_bits: int | None = None) -> None:
        super().__init__()
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise ConfigError(f"codes must be integers, got {codes.dtype}")
        if not 1 <= bits <= MAX_CODE_BITS:
            raise ConfigError(f"bits must be 1..{MAX_CODE_BITS}, got {bits}")
        self.bits, self.granularity = int(bits), granularity
        self.axis = int(axis) % codes.dim()
        self.shape = tuple(codes.shape)
        moved = codes.movedim(self.axis, 0)
        self.moved_shape = tuple(moved.shape)
        rows = moved.shape[0]
        self.group_size = group_size_for(granularity, rows, group_size)
        self.num_groups = rows // self.group_size
        flat = moved.reshape(-1).long()  # codes in the row-major order of the moved tensor
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.levels):
            raise ConfigError(f"codes must be in 0..{self.levels - 1} for bits={bits}")
        positions = torch.nonzero(flat).reshape(-1)
        self.nnz = positions.numel()
        self.gap_bits = (best_gap_bits(positions, self.bits) if gap_bits is None
                         else int(gap_bits)) if self.nnz else 1
        sparse_bits = entries_for(raw_gaps(positions), self.gap_bits) * self.gap_bits \
            + self.nnz * self.bits
        if layout is None:
            layout = "sparse" if self.nnz and sparse_bits < flat.numel() * self.bits else "dense"
        if layout not in LAYOUTS or (layout == "sparse" and not self.nnz):
            raise ConfigError(f"layout must be dense or sparse (sparse needs a nonzero), got "
                              f"{layout!r}")
        self.layout = layout
        row_len = flat.numel() // rows
        where = positions if layout == "sparse" else torch.arange(flat.numel())
        group = where // row_len // self.group_size
        # index into the (groups, K) table of values, zero first: computed once, not stored
        self.register_buffer("index", group * self.levels + flat[where], persistent=False)
        self.register_buffer("positions", positions if layout == "sparse" else None,
                             persistent=False)

    @property
    def levels(self) -> int:
        return 1 << self.bits

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def table(self, codebook: torch.Tensor) -> torch.Tensor:
        """(groups, K - 1) nonzero values -> (groups, K) with the pinned zero as entry 0."""
        return F.pad(codebook, (1, 0))

    def codes(self) -> torch.Tensor:
        """The code of every weight (0 = zero), in the weight's shape (int64)."""
        index = self.index % self.levels
        if self.layout == "sparse":
            assert self.positions is not None
            index = torch.zeros(self.numel, dtype=torch.int64, device=index.device).index_put(
                (self.positions,), index)
        return index.reshape(self.moved_shape).movedim(0, self.axis)

    def forward(self, codebook: torch.Tensor) -> torch.Tensor:
        values = self.table(codebook).reshape(-1)[self.index]
        if self.layout == "sparse":
            values = values.new_zeros(self.numel).index_put((self.positions,), values)
        return values.reshape(self.moved_shape).movedim(0, self.axis)

    # -- the shared-weight protocol ----------------------------------------------------

    def scheme(self, original: torch.Tensor) -> dict[str, Any]:
        s = {"kind": self.kind, "bits": self.bits, "granularity": self.granularity,
             "group_size": self.group_size, "axis": self.axis, "shape": list(self.shape),
             "dtype": dtype_name(original.dtype), "layout": self.layout}
        if self.layout == "sparse":
            assert self.positions is not None
            s.update(nnz=self.nnz, gap_bits=self.gap_bits,
                     entries=entries_for(raw_gaps(self.positions), self.gap_bits))
        return s

    @classmethod
    def check_scheme(cls, s: dict[str, Any]) -> None:
        base = {"kind", "bits", "granularity", "group_size", "axis", "shape", "dtype", "layout"}
        layout = s.get("layout")
        keys = base | ({"nnz", "gap_bits", "entries"} if layout == "sparse" else set())
        if layout not in LAYOUTS or set(s) != keys:
            raise FormatError(f"has keys {sorted(s)[:12]} and layout {str(layout)[:20]!r}, "
                              f"expected {sorted(keys)} with layout dense or sparse")
        check_grouped_scheme(s)
        if layout == "sparse":
            check_counts(s, math.prod(s["shape"]))

    @classmethod
    def part_specs(cls, s: dict[str, Any]) -> dict[str, PartSpec]:
        shape = tuple(s["shape"])
        groups = shape[s["axis"]] // s["group_size"]
        codes_dtype = "uint8" if s["bits"] <= 8 else "int32"
        specs = {"codebook": PartSpec(s["dtype"], (groups, (1 << s["bits"]) - 1))}
        if s["layout"] == "dense":
            specs["codes"] = PartSpec(codes_dtype, shape, bits=s["bits"])
        else:
            specs["gaps"] = PartSpec("int32", (s["entries"],), bits=s["gap_bits"])
            specs["codes"] = PartSpec(codes_dtype, (s["nnz"],), bits=s["bits"])
        return specs

    def parts(self) -> dict[str, torch.Tensor]:
        codes = (self.index % self.levels).cpu()
        if self.layout == "dense":
            return {"codes": codes.reshape(self.moved_shape).movedim(0, self.axis).contiguous()}
        assert self.positions is not None
        return {"gaps": encode_gaps(self.positions.cpu(), self.gap_bits), "codes": codes}

    @classmethod
    def from_scheme(cls, s: dict[str, Any], parts: dict[str, torch.Tensor]
                    ) -> ZeroCodebookWeight:
        shape, axis = tuple(s["shape"]), s["axis"]
        if s["layout"] == "dense":
            codes = parts["codes"].reshape(shape).long()
        else:
            positions = decode_gaps(parts["gaps"], s["gap_bits"], math.prod(shape), s["nnz"])
            entry_codes = parts["codes"].long()
            if bool((entry_codes == 0).any()):
                raise FormatError("a stored nonzero has code 0 (zero)")
            moved = list(shape)
            moved.insert(0, moved.pop(axis))
            flat = torch.zeros(math.prod(shape), dtype=torch.int64)
            flat[positions] = entry_codes
            codes = flat.reshape(moved).movedim(0, axis)
        return cls(codes, s["bits"], s["granularity"], s["group_size"], axis, s["layout"],
                   s.get("gap_bits"))

    def describe(self, original: torch.Tensor) -> str:
        kept = f"{100 * self.nnz / self.numel:.2f}% nonzero"
        where = f", gaps {self.gap_bits} bits" if self.layout == "sparse" else ""
        return f"{self.layout}: {kept}, {self.levels - 1} values + 0{where}"

    def code_bits(self) -> int:
        return self.bits

    @torch.no_grad()
    def distinct_values(self, original: torch.Tensor) -> int:
        used = self.table(original).reshape(-1)[self.index].unique()
        zero = self.nnz < self.numel and not bool((used == 0).any())
        return int(used.numel()) + int(zero)

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, layout={self.layout}, nnz={self.nnz}, "
                f"shape={self.shape}, groups={self.num_groups}")
