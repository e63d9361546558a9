"""Kernels over bit-packed codes: compiled with numba when it is installed (the
``kernels`` extra; with AVX-512 lookups where the CPU has them), plain torch otherwise.
All give the same decoded values.

``WEIGHTSHARE_KERNELS=numba|torch`` (or :func:`use`) picks plainer kernels, e.g. to
compare. Large calls run on torch's own OpenMP threads (:mod:`.team`: no pool of
their own beside torch's); small ones on the caller's thread.

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

from . import team, torch_kernels

_forced: str | None = None
_numba: Any = None
_avx512: Any = None
_resolved: dict[str, str] = {}  # wanted -> what runs (layers ask on every call: kept)


def backend() -> str:
    """``"avx512"``, ``"numba"`` or ``"torch"``: the best kernels that run here (numba with
    AVX-512 lookups for 1- to 4-bit codes where the CPU has them)."""
    want = _forced or os.environ.get("WEIGHTSHARE_KERNELS", "").strip().lower() or "avx512"
    found = _resolved.get(want)
    if found is None:
        if want == "torch" or _load_numba() is None:
            found = "torch"
        elif want == "avx512" and _load_avx512() is not None:
            found = "avx512"
        else:
            found = "numba"
        _resolved[want] = found
    return found


@contextlib.contextmanager
def use(name: str) -> Iterator[None]:
    """Run the kernels of ``name`` (``"avx512"``, ``"numba"`` or ``"torch"``, or the best
    below it that runs here) inside the block."""
    global _forced
    if name not in ("avx512", "numba", "torch"):
        raise ValueError(f"kernels are 'avx512', 'numba' or 'torch', got {name!r}")
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


def _load_avx512() -> Any:
    global _avx512
    if _avx512 is None:
        _avx512 = False
        try:
            from . import avx512

            if avx512.available():
                _avx512 = avx512
        except Exception:  # an llvmlite without the intrinsic, another CPU: portable kernels
            _avx512 = False
    return _avx512 or None


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


class Decoder:
    """The kernels bound to one packed weight and one state of its codebook: the numpy
    views and the padded lookup table are made once, not per call (a layer calls these
    once per forward; the fixed cost per call is what batch-1 latency is made of).

    ``kind``: ``"avx512"`` (1- to 4-bit codes, float32 codebook, CPU with AVX-512),
    ``"numba"`` (float32 codebooks) or ``"torch"``.
    """

    def __init__(self, p: PackedRows, cb: torch.Tensor, group_size: int) -> None:
        self.p, self.cb, self.group_size = p, cb.detach(), group_size
        kind = backend() if cb.dtype == torch.float32 else "torch"
        if kind == "avx512" and (p.bits > 4 or cb.shape[-1] > 16):
            kind = "numba"
        self.kind = kind
        if kind != "torch":
            self.cb = self.cb.contiguous()
            self._flat, self._cb = p.flat.numpy(), self.cb.numpy()
        self._table = _load_avx512().padded_table(self._cb) if kind == "avx512" else None
        compiled = _avx512 if kind == "avx512" else _numba
        self._task = 0 if kind == "torch" else compiled.task.address
        # the fields of a team task that stay for this weight and codebook: made once
        self._params = None if kind == "torch" else team.block(
            flat=p.flat.data_ptr(), nbytes=p.flat.numel(), row_bytes=p.row_bytes,
            cb=self.cb.data_ptr(), groups=self.cb.shape[0], k=self.cb.shape[-1],
            table=0 if self._table is None else self._table.ctypes.data,
            group_size=group_size, bits=p.bits, cols=p.cols)

    def _on_team(self, op: int, values: int, n: int, out: torch.Tensor, r0: int = 0,
                 x: torch.Tensor | None = None) -> bool:
        """Run ``op`` over ``n`` rows on torch's threads when the call is large enough to
        share (True), else leave it to the caller's thread (False)."""
        if self._params is None:
            return False
        threads = team.threads(values)
        if threads == 1:
            return False
        params = self._params.copy()  # one block per call: layers may run in several threads
        params[team.OP], params[team.R0], params[team.N] = op, r0, n
        params[team.OUT] = out.data_ptr()
        if x is not None:
            params[team.X], params[team.M] = x.data_ptr(), x.shape[0]
        params[team.CHUNK] = max(1, -(-n // (4 * threads)))
        team.run(self._task, params, threads)
        return True

    def decode(self, r0: int, out: torch.Tensor) -> None:
        """``out[k] = `` the dense row ``r0 + k`` (out: (n, cols), contiguous)."""
        p = self.p
        if self._on_team(team.DECODE, out.numel(), out.shape[0], out, r0=r0):
            return
        if self.kind == "avx512":
            _avx512.decode_rows(self._flat, p.row_bytes, self._cb, self._table,
                                self.group_size, p.bits, r0, out.numpy())
        elif self.kind == "numba":
            _numba.decode_rows(self._flat, p.row_bytes, self._cb, self.group_size, p.bits, r0,
                               out.numpy())
        else:
            torch_kernels.decode_rows(p.flat, p.row_bytes, self.cb, self.group_size, p.bits,
                                      r0, out)

    def gather(self, ids: torch.Tensor, out: torch.Tensor) -> None:
        """``out[k] = `` the dense row ``ids[k]`` (ids: 1-D int64, already range-checked)."""
        p = self.p
        if self._on_team(team.GATHER, out.numel(), ids.numel(), out, x=ids):
            return
        if self.kind == "avx512":
            _avx512.gather_rows(self._flat, p.row_bytes, self._cb, self._table,
                                self.group_size, p.bits, ids.numpy(), out.numpy())
        elif self.kind == "numba":
            _numba.gather_rows(self._flat, p.row_bytes, self._cb, self.group_size, p.bits,
                               ids.numpy(), out.numpy())
        else:
            torch_kernels.gather_rows(p.flat, p.row_bytes, self.cb, self.group_size, p.bits,
                                      ids, out, p.rows)

    def matvec(self, x: torch.Tensor) -> torch.Tensor | None:
        """``x @ W.T`` for a few rows of x (float32, contiguous) with each row of W decoded
        once into a small buffer; None where only torch kernels run."""
        if self.kind == "torch":
            return None
        p = self.p
        y = torch.empty(x.shape[0], p.rows, dtype=torch.float32)
        if self._on_team(team.MATVEC, p.rows * p.cols, p.rows, y, x=x):
            return y
        if self.kind == "avx512":
            _avx512.matvec(self._flat, p.row_bytes, self._cb, self._table, self.group_size,
                           p.bits, x.numpy(), y.numpy())
        else:
            _numba.matvec(self._flat, p.row_bytes, self._cb, self.group_size, p.bits,
                          x.numpy(), y.numpy())
        return y


_warm: set[str] = set()


def warm_up() -> None:
    """Load (or compile) the compiled kernels of :func:`backend` once per process, on tiny
    inputs. Weights call it when they are loaded: the first forward pass then allocates
    nothing long-lived between its activations (which would fragment the heap)."""
    kind = backend()
    if kind in _warm or kind == "torch":
        return
    _warm.add(kind)
    p = PackedRows(torch.zeros(16, dtype=torch.uint8), 2, 16, 4, 8)
    d = Decoder(p, torch.zeros(1, 16), 2)
    d.decode(0, torch.empty(2, 16))
    d.gather(torch.zeros(1, dtype=torch.int64), torch.empty(1, 16))
    d.matvec(torch.zeros(1, 16))
    histogram(p)


def decode_rows(p: PackedRows, cb: torch.Tensor, group_size: int, r0: int,
                out: torch.Tensor) -> None:
    """``out[k] = `` the dense row ``r0 + k`` (out: (n, cols) of the codebook's dtype)."""
    Decoder(p, cb, group_size).decode(r0, out)


def histogram(p: PackedRows, r0: int = 0, r1: int | None = None) -> torch.Tensor:
    """Counts of each code value over rows r0..r1 (default all; int64, ``2**bits``)."""
    r1 = p.rows if r1 is None else r1
    counts = torch.zeros(1 << p.bits, dtype=torch.int64)
    if backend() != "torch":
        _load_numba().histogram(p.np(), p.row_bytes, p.bits, r0, r1, p.cols, counts.numpy())
    else:
        torch_kernels.histogram(p.flat, p.row_bytes, p.bits, r0, r1, p.cols, counts)
    return counts
