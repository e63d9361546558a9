"""Kernels over bit-packed codes: compiled with numba when it is installed (the
``kernels`` extra), plain torch otherwise. Both give the same decoded values.

``WEIGHTSHARE_KERNELS=torch`` (or :func:`use`) forces the torch kernels, e.g. to compare.
numba runs with as many threads as torch (``torch.get_num_threads()``).

Example:
    >>> import torch
    >>> from weightshare.io.bitpack import pack_codes
    >>> codes = torch.tensor([[1, 0, 2, 3], [3, 2, 1, 0]])
    >>> rows = PackedRows.from_stream(pack_codes(codes, 2), 2, 4, 2)
    >>> out = torch.empty(2, 4)
    >>> decode_rows(rows, torch.tensor([[0.0, 10.0, 20.0, 30.0]]), 2, 0, out)
    >>> out.tolist()
    [[10.0, 0.0, 20.0, 30.0], [30.0, 20.0, 10.0, 0.0]]
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from . import torch_kernels

_PARALLEL_MIN = 1 << 18  # codes below which one thread decodes (waking threads costs more)
_forced: str | None = None
_numba: Any = None


def backend() -> str:
    """``"numba"`` or ``"torch"``: which kernels run."""
    want = _forced or os.environ.get("WEIGHTSHARE_KERNELS", "").strip().lower() or "numba"
    if want == "numba" and _load_numba() is not None:
        return "numba"
    return "torch"


@contextlib.contextmanager
def use(name: str) -> Iterator[None]:
    """Run the kernels of ``name`` (``"numba"`` or ``"torch"``) inside the block."""
    global _forced
    if name not in ("numba", "torch"):
        raise ValueError(f"kernels are 'numba' or 'torch', got {name!r}")
    before, _forced = _forced, name
    try:
        yield
    finally:
        _forced = before


def _load_numba() -> Any:
    global _numba
    if _numba is None:
        if importlib.util.find_spec("numba") is None:
            _numba = False
        else:
            from . import numba_kernels

            _numba = numba_kernels
    return _numba or None


def _threads(n_codes: int) -> bool:
    """Set numba's thread count to torch's; True when it is worth running in parallel."""
    import numba

    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    if numba.get_num_threads() != threads:
        numba.set_num_threads(threads)
    return threads > 1 and n_codes >= _PARALLEL_MIN


@dataclass(frozen=True)
class PackedRows:
    """Codes as ``rows`` rows of ``cols`` codes of ``bits`` bits; row ``i`` starts at byte
    ``i * row_bytes`` of ``flat`` (uint8, ``rows * row_bytes`` bytes)."""

    flat: torch.Tensor
    rows: int
    cols: int
    bits: int
    row_bytes: int

    @staticmethod
    def row_bytes_for(cols: int, bits: int) -> int:
        return (cols * bits + 7) // 8

    @classmethod
    def from_stream(cls, stream: torch.Tensor, rows: int, cols: int, bits: int) -> PackedRows:
        """Over a stream of whole-byte rows (``cols * bits % 8 == 0`` or one row): no copy."""
        row_bytes = cls.row_bytes_for(cols, bits)
        flat = stream.reshape(-1)
        if flat.numel() != rows * row_bytes or flat.dtype != torch.uint8:
            raise ValueError(f"{flat.numel()} bytes of {flat.dtype} for {rows} rows of "
                             f"{row_bytes} bytes")
        return cls(flat.contiguous(), rows, cols, bits, row_bytes)

    @property
    def nbytes(self) -> int:
        return self.flat.numel()

    def np(self) -> Any:
        return self.flat.numpy()


def decode_rows(p: PackedRows, cb: torch.Tensor, group_size: int, r0: int,
                out: torch.Tensor) -> None:
    """``out[k] = `` the dense row ``r0 + k`` (out: (n, cols) of the codebook's dtype,
    contiguous; compiled for float32 codebooks)."""
    if backend() == "numba" and cb.dtype == torch.float32:
        nk = _load_numba()
        fn = nk.decode_rows_par if _threads(out.numel()) else nk.decode_rows
        fn(p.np(), p.row_bytes, cb.numpy(), group_size, p.bits, r0, out.numpy())
    else:
        torch_kernels.decode_rows(p.flat, p.row_bytes, cb, group_size, p.bits, r0, out)


def gather_rows(p: PackedRows, cb: torch.Tensor, group_size: int, ids: torch.Tensor,
                out: torch.Tensor) -> None:
    """``out[k] = `` the dense row ``ids[k]`` (ids: 1-D int64, already range-checked)."""
    if backend() == "numba" and cb.dtype == torch.float32:
        _load_numba().gather_rows(p.np(), p.row_bytes, cb.numpy(), group_size, p.bits,
                                  ids.numpy(), out.numpy())
    else:
        torch_kernels.gather_rows(p.flat, p.row_bytes, cb, group_size, p.bits, ids, out, p.rows)


def matvec(p: PackedRows, cb: torch.Tensor, group_size: int, x: torch.Tensor) -> torch.Tensor:
    """``x @ W.T`` for a few rows of x (numba only), codes decoded one row at a time."""
    y = torch.empty(x.shape[0], p.rows, dtype=torch.float32)
    nk = _load_numba()
    fn = nk.matvec_par if _threads(p.rows * p.cols) else nk.matvec
    fn(p.np(), p.row_bytes, cb.numpy(), group_size, p.bits, x.numpy(), y.numpy())
    return y


def histogram(p: PackedRows, r0: int = 0, r1: int | None = None) -> torch.Tensor:
    """Counts of each code value over rows r0..r1 (default all; int64, ``2**bits``)."""
    r1 = p.rows if r1 is None else r1
    counts = torch.zeros(1 << p.bits, dtype=torch.int64)
    if backend() == "numba":
        _load_numba().histogram(p.np(), p.row_bytes, p.bits, r0, r1, p.cols, counts.numpy())
    else:
        torch_kernels.histogram(p.flat, p.row_bytes, p.bits, r0, r1, p.cols, counts)
    return counts
