"""Compiled kernels over bit-packed codes (numba; imported only when numba is installed).

Layout they read (``runtime.codebook``): the codes of a weight as ``rows`` rows of ``cols``
codes, rows along the channel axis; row ``i`` is the LSB-first bit stream of its codes,
starting at byte ``i * row_bytes`` of a flat uint8 buffer. Row ``i`` uses codebook
row ``i // group_size`` (float32, ``2**bits`` entries).

Decoding is table lookup only, so decoded values are the codebook's bits exactly; the
matrix-vector kernel sums in float32 in its own order (within float rounding of the
dense product). Every kernel works on one thread and releases the GIL; ``task`` shares
a call's rows among torch's own OpenMP threads (``team.py``): a second thread pool
(numba's parallel layers) beside torch's would only make the two fight for the cores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import carray, cfunc, njit, types
from numba.extending import intrinsic

from . import team
from .team import BITS, COLS, DECODE, GATHER, GROUP_SIZE, OUT, R0, ROW_BYTES, M, N, X


@njit(cache=True, nogil=True, inline="always")
def _code(flat, n, bitpos, bits, mask):  # pragma: no cover - compiled
    """The code starting at bit ``bitpos`` (never reads past byte n - 1)."""
    byte = bitpos >> 3
    shift = bitpos & 7
    w = np.uint32(flat[byte])
    if shift + bits > 8 and byte + 1 < n:
        w |= np.uint32(flat[byte + 1]) << 8
    if shift + bits > 16 and byte + 2 < n:
        w |= np.uint32(flat[byte + 2]) << 16
    return (w >> shift) & mask


@njit(cache=True, nogil=True, inline="always")
def _decode_row(flat, n, base, c, bits, cols, o):  # pragma: no cover - compiled
    """o[j] = c[code j] for the row whose codes start at byte ``base``."""
    mask = np.uint32((1 << bits) - 1)
    if bits == 4:  # two codes per byte
        half = cols // 2
        for p in range(half):
            b = flat[base + p]
            o[2 * p] = c[b & 15]
            o[2 * p + 1] = c[b >> 4]
        if cols & 1:
            o[cols - 1] = c[flat[base + half] & 15]
    elif bits == 8:
        for j in range(cols):
            o[j] = c[flat[base + j]]
    elif bits < 8:  # eight codes fill exactly ``bits`` bytes: one 64-bit word per eight
        groups = cols // 8
        wmask = np.uint64(mask)
        for g in range(groups):
            at = base + g * bits
            w = np.uint64(0)
            for t in range(bits):
                w |= np.uint64(flat[at + t]) << np.uint64(8 * t)
            for k in range(8):
                o[8 * g + k] = c[(w >> np.uint64(k * bits)) & wmask]
        for j in range(8 * groups, cols):
            o[j] = c[_code(flat, n, 8 * base + j * bits, bits, mask)]
    else:
        for j in range(cols):
            o[j] = c[_code(flat, n, 8 * base + j * bits, bits, mask)]


@njit(cache=True, nogil=True)
def decode_rows(flat, row_bytes, cb, group_size, bits, r0, out):  # pragma: no cover
    """out[k, :] = codebook row of (r0 + k) looked up at the codes of row r0 + k."""
    n, cols = out.shape
    for k in range(n):
        i = r0 + k
        _decode_row(flat, flat.shape[0], i * row_bytes, cb[i // group_size], bits, cols, out[k])


@njit(cache=True, nogil=True)
def gather_rows(flat, row_bytes, cb, group_size, bits, ids, out):  # pragma: no cover
    """out[k, :] = row ids[k] decoded (an embedding lookup); ids already range-checked."""
    cols = out.shape[1]
    for k in range(ids.shape[0]):
        i = ids[k]
        _decode_row(flat, flat.shape[0], i * row_bytes, cb[i // group_size], bits, cols, out[k])


@njit(cache=True, nogil=True, fastmath=True)
def matvec(flat, row_bytes, cb, group_size, bits, x, y):  # pragma: no cover
    """y[m, i] = sum_j x[m, j] * W[i, j] for a few rows m of x, each row of W decoded once
    into a small buffer (never the whole weight)."""
    _matvec_rows(flat, row_bytes, cb, group_size, bits, x, y, 0, y.shape[1])


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _matvec_rows(flat, row_bytes, cb, group_size, bits, x, y, i0, i1):  # pragma: no cover
    """Columns i0..i1 of ``matvec``'s y."""
    m_rows, cols = x.shape
    w = np.empty(cols, np.float32)
    for i in range(i0, i1):
        _decode_row(flat, flat.shape[0], i * row_bytes, cb[i // group_size], bits, cols, w)
        for m in range(m_rows):
            acc = np.float32(0.0)
            xm = x[m]
            for j in range(cols):
                acc += xm[j] * w[j]
            y[m, i] = acc


@njit(cache=True, nogil=True)
def histogram(flat, row_bytes, bits, r0, r1, cols, counts):  # pragma: no cover
    """counts[v] += number of codes equal to v in rows r0..r1 (row padding not counted)."""
    mask = np.uint32((1 << bits) - 1)
    n = flat.shape[0]
    for i in range(r0, r1):
        base = 8 * i * row_bytes
        for j in range(cols):
            counts[_code(flat, n, base + j * bits, bits, mask)] += 1


# ------------------------------------------- the tasks torch's threads run (team.py)

def _pointer_to(dtype: Any) -> Any:
    @intrinsic
    def pointer(typingctx, address):  # noqa: ANN001, ANN202 - numba typing objects
        sig = types.CPointer(dtype)(types.int64)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

        return sig, codegen

    return pointer


f32_at, u8_at, i64_at = (_pointer_to(t) for t in (types.float32, types.uint8, types.int64))


@intrinsic
def address(typingctx, pointer):  # noqa: ANN001, ANN202
    """The address a ``void *`` holds, as an int64."""
    sig = types.int64(types.voidptr)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        return builder.ptrtoint(args[0], context.get_value_type(types.int64))

    return sig, codegen


@intrinsic
def _fetch_add(typingctx, address, value):  # noqa: ANN001, ANN202
    """Atomically add ``value`` to the int64 at ``address``; the value before."""
    sig = types.int64(types.int64, types.int64)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        ptr = builder.inttoptr(args[0], context.get_value_type(types.CPointer(types.int64)))
        return builder.atomic_rmw("add", ptr, args[1], "monotonic")

    return sig, codegen


@njit(cache=True, nogil=True, inline="always")
def next_chunk(at, p):  # pragma: no cover - compiled
    """The next ``[start, end)`` of the task's rows for this thread (start >= n: done)."""
    start = _fetch_add(at + 8 * team.NEXT, p[team.CHUNK])
    return start, min(p[N], start + p[team.CHUNK])


@njit(cache=True, nogil=True, inline="always")
def fields(data):  # pragma: no cover - compiled
    """The parameter block at ``data`` (a ``void *``), its address, the code buffer and
    the codebook (groups, K)."""
    at = address(data)
    p = carray(i64_at(at), len(team.FIELDS))
    flat = carray(u8_at(p[team.FLAT]), p[team.NBYTES])
    return at, p, flat, carray(f32_at(p[team.CB]), (p[team.GROUPS], p[team.K]))


@cfunc(types.void(types.voidptr), cache=True)
def task(data):  # pragma: no cover - compiled; run by team.run on torch's threads
    """``decode_rows``, ``gather_rows`` or ``matvec`` over the chunks of rows this thread
    takes (parameter block: ``team.FIELDS``)."""
    at, p, flat, cb = fields(data)
    op, n, cols = p[team.OP], p[N], p[COLS]
    while True:
        start, end = next_chunk(at, p)
        if start >= n:
            break
        if op == DECODE:
            out = carray(f32_at(p[OUT]), (n, cols))
            decode_rows(flat, p[ROW_BYTES], cb, p[GROUP_SIZE], p[BITS], p[R0] + start,
                        out[start:end])
        elif op == GATHER:
            out = carray(f32_at(p[OUT]), (n, cols))
            ids = carray(i64_at(p[X]), n)
            gather_rows(flat, p[ROW_BYTES], cb, p[GROUP_SIZE], p[BITS], ids[start:end],
                        out[start:end])
        else:
            x = carray(f32_at(p[X]), (p[M], cols))
            y = carray(f32_at(p[OUT]), (p[M], n))
            _matvec_rows(flat, p[ROW_BYTES], cb, p[GROUP_SIZE], p[BITS], x, y, start, end)
