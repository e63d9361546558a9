"""Compiled kernels over bit-packed codes (numba; imported only when numba is installed).

Layout they read (``runtime.codebook``): the codes of a weight as ``rows`` rows of ``cols``
codes, rows along the channel axis; row ``i`` is the LSB-first bit stream of its codes,
starting at byte ``i * row_bytes`` of a flat uint8 buffer. Row ``i`` uses codebook
row ``i // group_size`` (float32, ``2**bits`` entries).

Decoding is table lookup only, so decoded values are the codebook's bits exactly; the
matrix-vector kernel sums in float32 in its own order (within float rounding of the
dense product). Every kernel is single-threaded and releases the GIL: the layers'
products run on torch's threads, and a second thread pool (numba's OpenMP) beside
torch's would only make the two fight for the cores.
"""

from __future__ import annotations

import numpy as np
from numba import njit


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
    m_rows, cols = x.shape
    w = np.empty(cols, np.float32)
    for i in range(y.shape[1]):
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
