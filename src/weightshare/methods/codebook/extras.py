"""What a codebook weight may store besides codes and codebook: per-channel scales and
exact outliers. Both scalar (``CodebookWeight``) and vector (``VectorCodebookWeight``)
codebook weights use them, through :class:`ScalesAndOutliers`.

* **scales** (``scales="per_channel"``): weight[r, :] = scales[r] * codebook value, so
  channels of different magnitudes share one codebook (coremltools' per-channel scale).
  Part ``scales``: (rows,) in the weight's dtype, trainable.
* **outliers** (``outliers=fraction``): a few weights kept exact in a sparse side tensor
  (SqueezeLLM's dense-and-sparse): parts ``outlier_rows`` and ``outlier_cols`` (positions
  in the (rows, values per row) view, bit-packed at the width of the dimension, or int32
  above 16 bits) and ``outlier_values`` (weight dtype, trainable).

Both are declared parts (``part_specs``), so the file stores them and ``inspect`` counts
them; the scheme names them (``"scales": "per_channel"``, ``"outliers": n``) only when
present, so a plain codebook's scheme is unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ...core.protocol import PartSpec, dtype_name
from ...errors import FormatError

SCALE_KINDS = ("per_channel",)


def index_spec(size: int, count: int) -> PartSpec:
    """How positions along a dimension of ``size`` are stored: packed at its bit width
    (1..16), or plain int32 for dimensions past 65,536."""
    width = max(1, (size - 1).bit_length())
    if width <= 16:
        return PartSpec("int32", (count,), bits=width)
    return PartSpec("int32", (count,))


class ScalesAndOutliers(nn.Module):
    """Mixin of the optional parts; the weight calls :meth:`_apply_extras` on its dense
    value in the (rows, values per row) layout."""

    scales: nn.Parameter | None
    outlier_values: nn.Parameter | None
    outlier_rows: torch.Tensor | None
    outlier_cols: torch.Tensor | None

    def _init_extras(self, scales: torch.Tensor | None,
                     outliers: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None) -> None:
        self.register_parameter("scales", None if scales is None else nn.Parameter(
            scales.detach().reshape(-1).clone()))
        if outliers is None or outliers[0].numel() == 0:
            self.register_parameter("outlier_values", None)
            self.register_buffer("outlier_rows", None)
            self.register_buffer("outlier_cols", None)
            return
        rows, cols, values = outliers
        self.register_buffer("outlier_rows", rows.reshape(-1).to(torch.int32))
        self.register_buffer("outlier_cols", cols.reshape(-1).to(torch.int32))
        self.outlier_values = nn.Parameter(values.detach().reshape(-1).clone())

    @property
    def num_outliers(self) -> int:
        return 0 if self.outlier_values is None else int(self.outlier_values.numel())

    def _apply_extras(self, rows: torch.Tensor) -> torch.Tensor:
        """(rows, values per row) codebook values -> with scales and outliers applied."""
        if self.scales is not None:
            rows = rows * self.scales.to(rows.dtype).unsqueeze(1)
        if self.outlier_values is not None:
            assert self.outlier_rows is not None and self.outlier_cols is not None
            rows = rows.index_put((self.outlier_rows.long(), self.outlier_cols.long()),
                                  self.outlier_values.to(rows.dtype))
        return rows

    # -- protocol helpers ------------------------------------------------------------

    def _extras_scheme(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.scales is not None:
            out["scales"] = "per_channel"
        if self.outlier_values is not None:
            out["outliers"] = self.num_outliers
        return out

    def _extras_parts(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.scales is not None:
            out["scales"] = self.scales
        if self.outlier_values is not None:
            assert self.outlier_rows is not None and self.outlier_cols is not None
            out.update(outlier_rows=self.outlier_rows, outlier_cols=self.outlier_cols,
                       outlier_values=self.outlier_values)
        return out


EXTRA_KEYS = frozenset({"scales", "outliers"})


def check_extras(s: dict[str, Any], rows: int, per_row: int) -> None:
    """FormatError for invalid optional keys of a codebook scheme."""
    if "scales" in s and s["scales"] not in SCALE_KINDS:
        raise FormatError(f"scales {str(s['scales'])[:40]!r} is not one of {list(SCALE_KINDS)}")
    if "outliers" in s:
        n = s["outliers"]
        if not (isinstance(n, int) and not isinstance(n, bool)) or not 1 <= n <= rows * per_row:
            raise FormatError(f"outliers {str(n)[:40]} is not a count in 1..{rows * per_row}")


def extras_specs(s: dict[str, Any], rows: int, per_row: int) -> dict[str, PartSpec]:
    """The optional parts a scheme declares."""
    specs: dict[str, PartSpec] = {}
    if "scales" in s:
        specs["scales"] = PartSpec(s["dtype"], (rows,))
    if "outliers" in s:
        n = int(s["outliers"])
        specs["outlier_rows"] = index_spec(rows, n)
        specs["outlier_cols"] = index_spec(per_row, n)
        specs["outlier_values"] = PartSpec(s["dtype"], (n,))
    return specs


def extras_from_parts(parts: dict[str, torch.Tensor]) -> tuple[
        torch.Tensor | None, tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None]:
    """(scales, outliers) arguments of a weight's constructor from its stored parts."""
    scales = parts.get("scales")
    outliers = None
    if "outlier_values" in parts:
        outliers = (parts["outlier_rows"], parts["outlier_cols"], parts["outlier_values"])
    return scales, outliers


def check_outlier_positions(rows: torch.Tensor, cols: torch.Tensor, shape: tuple[int, int]
                            ) -> None:
    """FormatError when stored outlier positions fall outside the weight (corrupt file)."""
    if rows.numel() and (int(rows.max()) >= shape[0] or int(cols.max()) >= shape[1]
                         or int(rows.min()) < 0 or int(cols.min()) < 0):
        raise FormatError(f"outlier positions fall outside the {shape[0]} x {shape[1]} weight")


def extras_describe(weight: ScalesAndOutliers) -> str:
    bits = []
    if weight.scales is not None:
        bits.append("per-channel scales")
    if weight.outlier_values is not None:
        bits.append(f"{weight.num_outliers} outliers")
    return ", ".join(bits)


def dtype_of(t: torch.Tensor) -> str:
    return dtype_name(t.dtype)


def prod(shape: tuple[int, ...] | list[int]) -> int:
    return math.prod(shape)
