"""AVX-512 decoding of 1- to 4-bit codes: sixteen lookups in one instruction.

A codebook of at most 16 float32 values fits one 512-bit register, and ``vpermps``
(``llvm.x86.avx512.permvar.sf.512``) looks up sixteen codes in it at once. The sixteen
codes of a block occupy ``2 * bits`` bytes: eight bytes are loaded, spread so that lane
``l`` holds the two bytes around bit ``l * bits``, shifted and masked into sixteen indices.
That is several times faster than one lookup per code; ``task`` runs these kernels on
torch's own threads (``team.py``), so the packed runtime needs no pool of its own.

numba compiles this for the host CPU; :func:`available` says whether that CPU has AVX-512
(otherwise the portable kernels of ``numba_kernels`` run). Numba has no vector permute of
its own, hence this intrinsic in LLVM IR (numba's documented extension API).
"""

from __future__ import annotations

import llvmlite.binding as llb
import numpy as np
from llvmlite import ir
from numba import carray, cfunc, njit
from numba.core import cgutils, types
from numba.extending import intrinsic

from . import team
from .numba_kernels import _decode_row, f32_at, fields, i64_at, next_chunk
from .team import BITS, COLS, DECODE, GATHER, GROUP_SIZE, GROUPS, OUT, R0, ROW_BYTES, TABLE, M, N, X

_F16 = ir.VectorType(ir.FloatType(), 16)
_I32X16 = ir.VectorType(ir.IntType(32), 16)
_I8X8 = ir.VectorType(ir.IntType(8), 8)


def available() -> bool:
    """The host CPU has AVX-512F (and numba compiles for the host)."""
    from numba import config

    return bool(llb.get_host_cpu_features().get("avx512f")) and not getattr(
        config, "CPU_NAME", None)


def _indices(builder: ir.IRBuilder, byte_ptr: ir.Value, bits: int) -> ir.Value:
    """<16 x i32> codes of the block of 16 codes starting at ``byte_ptr`` (8 bytes read)."""
    v = builder.load(builder.bitcast(byte_ptr, _I8X8.as_pointer()), align=1)
    lo = [(lane * bits) // 8 for lane in range(16)]
    hi = [min(b + 1, 7) for b in lo]  # a code crosses into the next byte at most
    undef = ir.Constant(_I8X8, None)
    low = builder.zext(builder.shuffle_vector(v, undef, ir.Constant(_I32X16, lo)), _I32X16)
    high = builder.zext(builder.shuffle_vector(v, undef, ir.Constant(_I32X16, hi)), _I32X16)
    word = builder.or_(low, builder.shl(high, ir.Constant(_I32X16, [8] * 16)))
    word = builder.lshr(word, ir.Constant(_I32X16, [(lane * bits) % 8 for lane in range(16)]))
    return builder.and_(word, ir.Constant(_I32X16, [(1 << bits) - 1] * 16))


def _data(context, builder, aryty, ary):  # noqa: ANN001, ANN202 - numba codegen objects
    return context.make_array(aryty)(context, builder, value=ary).data


def _make_block_decoder(bits: int):  # noqa: ANN202 - a numba intrinsic
    @intrinsic
    def decode16(typingctx, table, table_at, flat, byte_at, out, out_at):  # noqa: ANN001
        """out[out_at:out_at+16] = table[table_at + code] for the 16 codes at flat[byte_at:]."""
        sig = types.void(table, table_at, flat, byte_at, out, out_at)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            tab, tab_at, fl, at, o, o_at = args
            i64 = ir.IntType(64)
            tab_ptr = builder.gep(_data(context, builder, signature.args[0], tab),
                                  [builder.sext(tab_at, i64)])
            table16 = builder.load(builder.bitcast(tab_ptr, _F16.as_pointer()), align=4)
            src = builder.gep(_data(context, builder, signature.args[2], fl),
                              [builder.sext(at, i64)])
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_F16, [_F16, _I32X16]),
                "llvm.x86.avx512.permvar.sf.512")
            values = builder.call(fn, [table16, _indices(builder, src, bits)])
            dst = builder.gep(_data(context, builder, signature.args[4], o),
                              [builder.sext(o_at, i64)])
            builder.store(values, builder.bitcast(dst, _F16.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return decode16


_B1, _B2, _B3, _B4 = (_make_block_decoder(b) for b in (1, 2, 3, 4))


@njit(cache=True, nogil=True, inline="always")
def _block(table, table_at, flat, byte_at, out, out_at, bits):  # pragma: no cover
    if bits == 4:
        _B4(table, table_at, flat, byte_at, out, out_at)
    elif bits == 3:
        _B3(table, table_at, flat, byte_at, out, out_at)
    elif bits == 2:
        _B2(table, table_at, flat, byte_at, out, out_at)
    else:
        _B1(table, table_at, flat, byte_at, out, out_at)


@njit(cache=True, nogil=True, inline="always")
def _row(flat, base, table, table_at, cb_row, bits, cols, out, out_at):  # pragma: no cover
    """Decode one row: whole 16-code blocks with AVX-512 where 8 bytes can be read, the
    rest with the portable decoder."""
    n = flat.shape[0]
    step = 2 * bits  # bytes per 16 codes
    blocks = cols // 16
    while blocks > 0 and base + (blocks - 1) * step + 8 > n:
        blocks -= 1  # the last blocks of the buffer: 8-byte loads would read past it
    for k in range(blocks):
        _block(table, table_at, flat, base + k * step, out, out_at + 16 * k, bits)
    done = 16 * blocks
    if done < cols:
        _decode_row(flat, n, base + done * bits // 8, cb_row, bits, cols - done,
                    out[out_at + done: out_at + cols])


@njit(cache=True, nogil=True)
def decode_rows(flat, row_bytes, cb, table, group_size, bits, r0, out):  # pragma: no cover
    """As ``numba_kernels.decode_rows``; ``table`` is the codebook padded to 16 entries
    per group, flattened (float32)."""
    n, cols = out.shape
    flat_out = out.reshape(n * cols)
    for k in range(n):
        i = r0 + k
        g = i // group_size
        _row(flat, i * row_bytes, table, 16 * g, cb[g], bits, cols, flat_out, k * cols)


@njit(cache=True, nogil=True)
def gather_rows(flat, row_bytes, cb, table, group_size, bits, ids, out):  # pragma: no cover
    n, cols = out.shape
    flat_out = out.reshape(n * cols)
    for k in range(ids.shape[0]):
        i = ids[k]
        g = i // group_size
        _row(flat, i * row_bytes, table, 16 * g, cb[g], bits, cols, flat_out, k * cols)


@njit(cache=True, nogil=True, fastmath=True)
def matvec(flat, row_bytes, cb, table, group_size, bits, x, y):  # pragma: no cover
    """As ``numba_kernels.matvec``, rows decoded sixteen codes at a time."""
    _matvec_rows(flat, row_bytes, cb, table, group_size, bits, x, y, 0, y.shape[1])


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _matvec_rows(flat, row_bytes, cb, table, group_size, bits, x, y, i0, i1):  # pragma: no cover
    """Columns i0..i1 of ``matvec``'s y."""
    m_rows, cols = x.shape
    w = np.empty(cols, np.float32)
    for i in range(i0, i1):
        g = i // group_size
        _row(flat, i * row_bytes, table, 16 * g, cb[g], bits, cols, w, 0)
        for m in range(m_rows):
            acc = np.float32(0.0)
            xm = x[m]
            for j in range(cols):
                acc += xm[j] * w[j]
            y[m, i] = acc


def _task(data):  # pragma: no cover - compiled; run by team.run on torch's threads
    """As ``numba_kernels.task``, with these kernels (``table``: the padded codebook)."""
    at, p, flat, cb = fields(data)
    table = carray(f32_at(p[TABLE]), 16 * p[GROUPS])
    op, n, cols = p[team.OP], p[N], p[COLS]
    while True:
        start, end = next_chunk(at, p)
        if start >= n:
            break
        if op == DECODE:
            out = carray(f32_at(p[OUT]), (n, cols))
            decode_rows(flat, p[ROW_BYTES], cb, table, p[GROUP_SIZE], p[BITS], p[R0] + start,
                        out[start:end])
        elif op == GATHER:
            out = carray(f32_at(p[OUT]), (n, cols))
            ids = carray(i64_at(p[X]), n)
            gather_rows(flat, p[ROW_BYTES], cb, table, p[GROUP_SIZE], p[BITS], ids[start:end],
                        out[start:end])
        else:
            x = carray(f32_at(p[X]), (p[M], cols))
            y = carray(f32_at(p[OUT]), (p[M], n))
            _matvec_rows(flat, p[ROW_BYTES], cb, table, p[GROUP_SIZE], p[BITS], x, y, start,
                         end)


# compiled here only where the CPU has the instruction (LLVM cannot lower it elsewhere)
task = cfunc(types.void(types.voidptr), cache=True)(_task) if available() else None


def padded_table(cb: np.ndarray) -> np.ndarray:
    """(groups, K <= 16) float32 -> (groups * 16,) float32, zeros after entry K."""
    table = np.zeros((cb.shape[0], 16), np.float32)
    table[:, : cb.shape[1]] = cb
    return table.reshape(-1)
