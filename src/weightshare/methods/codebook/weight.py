"""The codebook weight: K = 2**bits shared values per group of rows, one code per weight.

The training form is a ``torch.nn.utils.parametrize`` parametrization whose original
is the codebook (a trainable ``Parameter``, shape (groups, 2**bits)) and whose own
part is the codes (an integer buffer of the weight's shape). ``forward`` expands them
to the dense weight. Gradients reach the codebook through a gather, whose backward is
a scatter-add: each centroid's gradient is the sum over its members (Deep
Compression's gradient aggregation) with no extra code. No dense copy is kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ...core.protocol import (
    FLOAT_DTYPES,
    MAX_CODE_BITS,
    PartSpec,
    SharedWeight,
    attach,
    dense_weight,
    dtype_name,
    iter_shared,
    shared_of,
)
from ...errors import FormatError
from .config import GRANULARITIES, group_size_for
from .extras import (
    EXTRA_KEYS,
    ScalesAndOutliers,
    check_extras,
    check_outlier_positions,
    extras_describe,
    extras_from_parts,
    extras_specs,
)


def codes_dtype(bits: int) -> torch.dtype:
    """The integer dtype codes of ``bits`` bits are held in."""
    return torch.uint8 if bits <= 8 else torch.int32


class CodebookWeight(SharedWeight, ScalesAndOutliers):
    """weight[r, ...] = codebook[r // group_size, codes[r, ...]] along the channel ``axis``.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(4, 2)
        >>> codes = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.uint8)
        >>> _ = attach_codebook(lin, torch.tensor([[-1.0, 1.0]]), codes, bits=1)
        >>> lin.weight.tolist()
        [[-1.0, 1.0, 1.0, -1.0], [1.0, 1.0, -1.0, -1.0]]
    """

    kind = "codebook"
    version = 1
    original_part = "codebook"
    codes: torch.Tensor  # (shape of the weight) integer codes, a buffer

    def __init__(self, codes: torch.Tensor, bits: int, granularity: str = "per_tensor",
                 group_size: int = 1, axis: int = 0, dense_dtype: torch.dtype | None = None,
                 *, scales: torch.Tensor | None = None,
                 outliers: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
                 ) -> None:
        super().__init__()
        # the dtype the layer computes in, when the codebook is stored wider (float32
        # codebooks of a bf16 model); None: the codebook's own dtype
        self.dense_dtype = dense_dtype
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise TypeError(f"codes must be integers, got {codes.dtype}")
        self.bits = int(bits)
        self.granularity = granularity
        self.axis = int(axis) % codes.dim()
        rows = codes.shape[self.axis]
        self.group_size = group_size_for(granularity, rows, group_size)
        self.num_groups = rows // self.group_size
        self.register_buffer("codes", codes.to(codes_dtype(self.bits)))
        self._init_extras(scales, outliers)

    @property
    def levels(self) -> int:
        return 1 << self.bits

    def _row_codes(self) -> torch.Tensor:
        # (rows, values per row), rows along the channel axis
        c = self.codes.movedim(self.axis, 0)
        return c.reshape(c.shape[0], -1)

    def _unrow(self, rows: torch.Tensor) -> torch.Tensor:
        moved = list(self.codes.movedim(self.axis, 0).shape)
        return rows.reshape(moved).movedim(0, self.axis)

    def _flat_index(self) -> torch.Tensor:
        # (rows, values per row) index into codebook.reshape(-1)
        rc = self._row_codes().long()
        group = torch.arange(rc.shape[0], device=rc.device) // self.group_size
        return (group * self.levels).unsqueeze(1) + rc

    def forward(self, codebook: torch.Tensor) -> torch.Tensor:
        # codebook: (groups, levels) -> dense weight, shape of codes
        if self.scales is None and self.outlier_values is None:
            if self.num_groups == 1:
                dense = codebook[0][self.codes.long()]
            else:
                dense = self._unrow(codebook.reshape(-1)[self._flat_index()])
        else:
            dense = self._unrow(self._apply_extras(codebook.reshape(-1)[self._flat_index()]))
        return dense if self.dense_dtype is None else dense.to(self.dense_dtype)

    @torch.no_grad()
    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        """Assigning a dense weight refits the codebook for the current codes: each entry
        becomes the mean of its members (least squares). Registration hands its
        codebook over unchanged (see ``core.protocol.attach``)."""
        pending = self.take_pending()
        if pending is not None:
            return pending
        w = weight.movedim(self.axis, 0).reshape(self.codes.shape[self.axis], -1).double()
        flat = self._flat_index()
        size = self.num_groups * self.levels
        # least squares: entry = sum(s * w) / sum(s^2) over its members (s = 1 unscaled);
        # outlier positions are not members, their exact values are set from the weight
        s = torch.ones_like(w) if self.scales is None else \
            self.scales.detach().double().unsqueeze(1).expand_as(w)
        member = torch.ones_like(w)
        if self.outlier_values is not None:
            assert self.outlier_rows is not None and self.outlier_cols is not None
            at = (self.outlier_rows.long(), self.outlier_cols.long())
            member[at] = 0
            self.outlier_values.copy_(w[at].to(self.outlier_values.dtype))
        num = torch.zeros(size, dtype=torch.float64, device=w.device).index_add_(
            0, flat.reshape(-1), (member * s * w).reshape(-1))
        den = torch.zeros(size, dtype=torch.float64, device=w.device).index_add_(
            0, flat.reshape(-1), (member * s * s).reshape(-1))
        means = torch.where(den > 0, num / den.clamp(min=1e-300), torch.zeros_like(num))
        dtype = weight.dtype if self.dense_dtype is None else torch.float32
        return means.to(dtype).reshape(self.num_groups, self.levels)

    # -- the shared-weight protocol ----------------------------------------------------

    def scheme(self, original: torch.Tensor) -> dict[str, Any]:
        """The JSON description of this weight (docs/format.md, section 3)."""
        scheme = {"kind": self.kind, "bits": self.bits, "granularity": self.granularity,
                  "group_size": self.group_size, "axis": self.axis,
                  "shape": list(self.codes.shape), "dtype": dtype_name(original.dtype),
                  **self._extras_scheme()}
        if self.dense_dtype is not None and self.dense_dtype != original.dtype:
            scheme["dense_dtype"] = dtype_name(self.dense_dtype)  # optional: wider codebooks
        return scheme

    @classmethod
    def check_scheme(cls, s: dict[str, Any]) -> None:
        keys = {"kind", "bits", "granularity", "group_size", "axis", "shape", "dtype"}
        optional = EXTRA_KEYS | {"dense_dtype"}
        if not keys <= set(s) <= keys | optional:
            raise FormatError(f"has keys {sorted(s)[:10]}, expected {sorted(keys)} (and "
                              f"optionally {sorted(optional)})")
        if "dense_dtype" in s and s["dense_dtype"] not in FLOAT_DTYPES:
            raise FormatError(f"dense_dtype {str(s['dense_dtype'])[:40]!r} is not one of "
                              f"{list(FLOAT_DTYPES)}")
        rows = check_grouped_scheme(s)
        check_extras(s, rows, math.prod(s["shape"]) // rows)

    @classmethod
    def part_specs(cls, s: dict[str, Any]) -> dict[str, PartSpec]:
        shape = tuple(s["shape"])
        rows = shape[s["axis"]]
        groups = rows // s["group_size"]
        return {"codebook": PartSpec(s["dtype"], (groups, 1 << s["bits"])),
                "codes": PartSpec(dtype_name(codes_dtype(s["bits"])), shape, bits=s["bits"]),
                **extras_specs(s, rows, math.prod(shape) // rows)}

    def parts(self) -> dict[str, torch.Tensor]:
        return {"codes": self.codes, **self._extras_parts()}

    @classmethod
    def dense_dtype_name(cls, s: dict[str, Any]) -> str:
        return s.get("dense_dtype", s["dtype"])

    @classmethod
    def from_scheme(cls, s: dict[str, Any], parts: dict[str, torch.Tensor]) -> CodebookWeight:
        shape = tuple(s["shape"])
        codes = parts["codes"].reshape(shape)
        scales, outliers = extras_from_parts(parts)
        if outliers is not None:
            rows = shape[s["axis"]]
            check_outlier_positions(outliers[0], outliers[1], (rows, math.prod(shape) // rows))
        dense = getattr(torch, s["dense_dtype"]) if "dense_dtype" in s else None
        return cls(codes, s["bits"], s["granularity"], s["group_size"], s["axis"], dense,
                   scales=scales, outliers=outliers)

    def describe(self, original: torch.Tensor) -> str:
        extras = extras_describe(self)
        return f"{self.granularity}, {self.num_groups} codebook(s)" + (
            f", {extras}" if extras else "")

    def code_bits(self) -> int:
        return self.bits

    @torch.no_grad()
    def distinct_values(self, original: torch.Tensor) -> int:
        used = torch.zeros(original.numel(), dtype=torch.bool, device=original.device)
        used[self._flat_index().reshape(-1)] = True
        return int(original.reshape(-1)[used].unique().numel())

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, granularity={self.granularity}, "
                f"groups={self.num_groups}, shape={tuple(self.codes.shape)}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_grouped_scheme(s: dict[str, Any]) -> int:
    """Check the fields every codebook-like kind shares (``bits``, ``granularity``,
    ``axis`` of ``shape``, ``group_size``, ``dtype``); FormatError naming the first bad
    one. Returns the number of rows along ``axis``."""
    bits, shape, axis, gs = s["bits"], s["shape"], s["axis"], s["group_size"]
    if not _is_int(bits) or not 1 <= bits <= MAX_CODE_BITS:
        raise FormatError(f"bits is {str(bits)[:40]}, must be an integer 1..{MAX_CODE_BITS}")
    if s["granularity"] not in GRANULARITIES:
        raise FormatError(f"granularity {str(s['granularity'])[:40]!r} is not one of "
                          f"{list(GRANULARITIES)}")
    if not _is_int(axis) or not 0 <= axis < len(shape):
        raise FormatError(f"axis {str(axis)[:40]} is not a dimension of shape {shape}")
    rows = shape[axis]
    if not _is_int(gs) or gs < 1 or rows % gs or gs != group_size_for(
            s["granularity"], rows, gs):
        raise FormatError(f"group_size {str(gs)[:40]} does not fit {rows} rows with "
                          f"granularity {s['granularity']}")
    if s["dtype"] not in FLOAT_DTYPES:
        raise FormatError(f"dtype {str(s['dtype'])[:40]!r} is not one of {list(FLOAT_DTYPES)}")
    return int(rows)


def attach_codebook(module: nn.Module, codebook: torch.Tensor, codes: torch.Tensor, bits: int,
                    granularity: str = "per_tensor", group_size: int = 1, axis: int = 0,
                    name: str = "weight", *, scales: torch.Tensor | None = None,
                    outliers: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
                    ) -> CodebookWeight:
    """Turn ``module.<name>`` into a codebook weight with the given codebook and codes.

    ``codebook`` is (groups, k) with k <= 2**bits (padded to 2**bits here); ``codes``
    has the weight's shape. The dense weight is dropped: only codebook and codes remain;
    the codebook takes the dtype, device and ``requires_grad`` of the current weight.
    """
    levels = 1 << bits
    cb = codebook.detach().reshape(codebook.shape[0], -1)
    if cb.shape[1] < levels:  # fewer distinct values than levels: pad with the last entry
        cb = torch.cat([cb, cb[:, -1:].expand(-1, levels - cb.shape[1])], dim=1)
    found = shared_of(module, name)
    current = found[1] if found is not None else dense_weight(module, name)
    weight = CodebookWeight(codes.to(current.device), bits, granularity, group_size, axis,
                            scales=scales, outliers=outliers).to(current.device)
    original = nn.Parameter(cb.to(device=current.device, dtype=current.dtype).contiguous(),
                            requires_grad=current.requires_grad)
    attach(module, name, weight, original)
    return weight


def codebook_of(module: nn.Module,
                name: str = "weight") -> tuple[CodebookWeight, nn.Parameter] | None:
    """(parametrization, codebook parameter) of a codebook weight, or None."""
    found = shared_of(module, name)
    if found is None or not isinstance(found[0], CodebookWeight):
        return None
    return found[0], found[1]


def iter_codebooks(
        model: nn.Module) -> Iterator[tuple[str, nn.Module, CodebookWeight, nn.Parameter]]:
    """Yield (weight fqn, module, parametrization, codebook) for every codebook weight.

    A module registered in several places (a tie) is yielded once, under its first name.
    """
    for fqn, module, _attr, weight, original in iter_shared(model):
        if isinstance(weight, CodebookWeight):
            yield fqn, module, weight, original
