"""The same kernels in plain torch: the packed runtime without numba (slower, same
results; decoding is table lookup, so decoded values are identical)."""

from __future__ import annotations

import torch

from ...io.bitpack import unpack_codes


def _codes(flat: torch.Tensor, row_bytes: int, bits: int, cols: int, r0: int,
           r1: int) -> torch.Tensor:
    """(r1 - r0, cols) int64 codes of rows r0..r1."""
    block = flat[r0 * row_bytes: r1 * row_bytes]
    per_row = row_bytes * 8 // bits  # codes per row including padding codes
    codes = unpack_codes(block, bits, (r1 - r0) * per_row, torch.int32)
    return codes.reshape(r1 - r0, per_row)[:, :cols].long()


def decode_rows(flat: torch.Tensor, row_bytes: int, cb: torch.Tensor, group_size: int,
                bits: int, r0: int, out: torch.Tensor) -> None:
    n, cols = out.shape
    codes = _codes(flat, row_bytes, bits, cols, r0, r0 + n)
    groups = torch.arange(r0, r0 + n) // group_size
    out.copy_(cb[groups.unsqueeze(1), codes])


def gather_rows(flat: torch.Tensor, row_bytes: int, cb: torch.Tensor, group_size: int,
                bits: int, ids: torch.Tensor, out: torch.Tensor, rows_total: int) -> None:
    cols = out.shape[1]
    rows = flat[: rows_total * row_bytes].reshape(rows_total, row_bytes)[ids]
    per_row = row_bytes * 8 // bits
    codes = unpack_codes(rows.reshape(-1), bits, ids.numel() * per_row, torch.int32)
    codes = codes.reshape(ids.numel(), per_row)[:, :cols].long()
    out.copy_(cb[(ids // group_size).unsqueeze(1), codes])


def histogram(flat: torch.Tensor, row_bytes: int, bits: int, r0: int, r1: int, cols: int,
              counts: torch.Tensor, chunk_rows: int = 4096) -> None:
    for a in range(r0, r1, chunk_rows):
        b = min(r1, a + chunk_rows)
        codes = _codes(flat, row_bytes, bits, cols, a, b).reshape(-1)
        counts += torch.bincount(codes, minlength=counts.numel())
