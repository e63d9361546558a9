"""The vector codebook weight: d consecutive weights of a row share one code.

Scalar codebooks give each weight its own code; at 2 bits that leaves 4 levels. A vector
codebook (AQLM, GPTVQ, VPTQ; coremltools' ``cluster_dim``) codes groups of d weights at
once: 2 bits per weight become one 8-bit code per 4 weights into 256 entries of
4-vectors, which follow the joint distribution of neighbouring weights instead of a grid.

Layout: the weight is viewed as (rows, values per row) with rows along the channel
``axis``; each row is cut into ``values per row / d`` vectors of d consecutive values.
Parts: ``codebook`` (groups, 2**bits, d), the original (trainable, shareable across
layers); ``codes`` (rows, values per row / d), bit-packed at ``bits`` (1..16); and the
optional ``scales`` / outliers of ``extras``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ...core.protocol import PartSpec, SharedWeight, dtype_name
from ...errors import FormatError
from .config import VECTOR_DIMS, group_size_for
from .extras import (
    EXTRA_KEYS,
    ScalesAndOutliers,
    check_extras,
    check_outlier_positions,
    extras_describe,
    extras_from_parts,
    extras_specs,
)
from .weight import _is_int, check_grouped_scheme, codes_dtype


class VectorCodebookWeight(SharedWeight, ScalesAndOutliers):
    """row[r][j*d:(j+1)*d] = codebook[r // group_size, codes[r, j]] (times scales[r]).

    Example:
        >>> import torch
        >>> from weightshare.core.protocol import attach
        >>> lin = torch.nn.Linear(4, 1, bias=False)
        >>> w = VectorCodebookWeight(torch.tensor([[1, 0]]), bits=1, vector_dim=2,
        ...                          shape=(1, 4))
        >>> attach(lin, "weight", w, torch.nn.Parameter(torch.tensor([[[0., 1.], [2., 3.]]])))
        >>> lin.weight.tolist()
        [[2.0, 3.0, 0.0, 1.0]]
    """

    kind = "vector_codebook"
    version = 1
    original_part = "codebook"
    codes: torch.Tensor  # (rows, values per row / vector_dim) integer codes, a buffer

    def __init__(self, codes: torch.Tensor, bits: int, vector_dim: int,
                 shape: tuple[int, ...], granularity: str = "per_tensor", group_size: int = 1,
                 axis: int = 0, *, scales: torch.Tensor | None = None,
                 outliers: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
                 ) -> None:
        super().__init__()
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise TypeError(f"codes must be integers, got {codes.dtype}")
        self.bits = int(bits)
        self.vector_dim = int(vector_dim)
        self.shape = tuple(int(d) for d in shape)
        self.axis = int(axis) % len(self.shape)
        self.granularity = granularity
        rows = self.shape[self.axis]
        self.per_row = math.prod(self.shape) // rows
        self.group_size = group_size_for(granularity, rows, group_size)
        self.num_groups = rows // self.group_size
        self.register_buffer("codes", codes.reshape(rows, self.per_row // self.vector_dim)
                             .to(codes_dtype(self.bits)))
        self._init_extras(scales, outliers)

    @property
    def levels(self) -> int:
        return 1 << self.bits

    def _flat_index(self) -> torch.Tensor:
        # (rows, vectors per row) index into codebook.reshape(-1, d)
        group = torch.arange(self.codes.shape[0], device=self.codes.device) // self.group_size
        return (group * self.levels).unsqueeze(1) + self.codes.long()

    def _moved_shape(self) -> list[int]:
        moved = list(self.shape)
        moved.insert(0, moved.pop(self.axis))
        return moved

    def forward(self, codebook: torch.Tensor) -> torch.Tensor:
        # codebook: (groups, levels, d) -> dense weight of ``shape``
        rows = codebook.reshape(-1, self.vector_dim)[self._flat_index()]  # (rows, n/d, d)
        rows = self._apply_extras(rows.reshape(self.codes.shape[0], self.per_row))
        return rows.reshape(self._moved_shape()).movedim(0, self.axis)

    @torch.no_grad()
    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        """Assigning a dense weight refits every entry to the least-squares fit of its
        member vectors (scales and codes kept; outlier values taken from the weight)."""
        pending = self.take_pending()
        if pending is not None:
            return pending
        d, rows = self.vector_dim, self.codes.shape[0]
        w = weight.movedim(self.axis, 0).reshape(rows, self.per_row).double()
        s = torch.ones(rows, 1, dtype=w.dtype, device=w.device) if self.scales is None \
            else self.scales.detach().double().unsqueeze(1)
        member = torch.ones_like(w)
        if self.outlier_values is not None:
            assert self.outlier_rows is not None and self.outlier_cols is not None
            at = (self.outlier_rows.long(), self.outlier_cols.long())
            member[at] = 0
            self.outlier_values.copy_(w[at].to(self.outlier_values.dtype))
        flat = self._flat_index().reshape(-1)
        size = self.num_groups * self.levels
        num = torch.zeros(size, d, dtype=w.dtype, device=w.device).index_add_(
            0, flat, (member * s * w).reshape(-1, d))
        den = torch.zeros(size, d, dtype=w.dtype, device=w.device).index_add_(
            0, flat, (member * s * s).reshape(-1, d))
        means = torch.where(den > 0, num / den.clamp(min=1e-300), torch.zeros_like(num))
        return means.to(weight.dtype).reshape(self.num_groups, self.levels, d)

    # -- the shared-weight protocol ----------------------------------------------------

    def scheme(self, original: torch.Tensor) -> dict[str, Any]:
        return {"kind": self.kind, "bits": self.bits, "vector_dim": self.vector_dim,
                "granularity": self.granularity, "group_size": self.group_size,
                "axis": self.axis, "shape": list(self.shape), "dtype": dtype_name(original.dtype),
                **self._extras_scheme()}

    @classmethod
    def check_scheme(cls, s: dict[str, Any]) -> None:
        keys = {"kind", "bits", "vector_dim", "granularity", "group_size", "axis", "shape",
                "dtype"}
        if not keys <= set(s) <= keys | EXTRA_KEYS:
            raise FormatError(f"has keys {sorted(s)[:10]}, expected {sorted(keys)} (and "
                              f"optionally {sorted(EXTRA_KEYS)})")
        d = s["vector_dim"]
        if not _is_int(d) or d not in VECTOR_DIMS:
            raise FormatError(f"vector_dim {str(d)[:40]} is not one of {list(VECTOR_DIMS)}")
        rows = check_grouped_scheme(s)
        per_row = math.prod(s["shape"]) // rows
        if per_row % d:
            raise FormatError(f"vector_dim {d} does not divide the {per_row} values per row")
        check_extras(s, rows, per_row)

    @classmethod
    def part_specs(cls, s: dict[str, Any]) -> dict[str, PartSpec]:
        shape, d = tuple(s["shape"]), s["vector_dim"]
        rows = shape[s["axis"]]
        per_row = math.prod(shape) // rows
        return {"codebook": PartSpec(s["dtype"], (rows // s["group_size"], 1 << s["bits"], d)),
                "codes": PartSpec(dtype_name(codes_dtype(s["bits"])), (rows, per_row // d),
                                  bits=s["bits"]),
                **extras_specs(s, rows, per_row)}

    def parts(self) -> dict[str, torch.Tensor]:
        return {"codes": self.codes, **self._extras_parts()}

    @classmethod
    def from_scheme(cls, s: dict[str, Any],
                    parts: dict[str, torch.Tensor]) -> VectorCodebookWeight:
        scales, outliers = extras_from_parts(parts)
        shape = tuple(s["shape"])
        if outliers is not None:
            rows = shape[s["axis"]]
            check_outlier_positions(outliers[0], outliers[1], (rows, math.prod(shape) // rows))
        return cls(parts["codes"], s["bits"], s["vector_dim"], shape, s["granularity"],
                   s["group_size"], s["axis"], scales=scales, outliers=outliers)

    def describe(self, original: torch.Tensor) -> str:
        extras = extras_describe(self)
        return (f"{self.granularity}, {self.num_groups} codebook(s) of {self.levels} "
                f"{self.vector_dim}-vectors" + (f", {extras}" if extras else ""))

    def code_bits(self) -> int:
        return self.bits

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, vector_dim={self.vector_dim}, granularity="
                f"{self.granularity}, groups={self.num_groups}, shape={self.shape}")


