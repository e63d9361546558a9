"""Bit-packing of integer codes at their real width, 1 to 16 bits.

The stream is little-endian at both levels: code ``i`` occupies bits
``[i*bits, (i+1)*bits)`` of the stream, bit ``j`` of the stream is bit
``j % 8`` (LSB first) of byte ``j // 8``, and each code is written LSB first.
The last byte is padded with zero bits. See docs/format.md for a worked example.

Why by hand: no well-kept library packs arbitrary widths in this order; numpy's
``packbits`` works on single bits and would cost 8x the memory. Eight codes always
fill exactly ``bits`` bytes, so we pack eight codes at a time into one little-endian
128-bit word (two uint64 lanes) with eight vectorised shift-ors.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError, DataError, FormatError

MAX_BITS = 16


def packed_length(numel: int, bits: int) -> int:
    """Bytes that ``numel`` codes of ``bits`` bits take: ``ceil(numel * bits / 8)``."""
    return (numel * bits + 7) // 8


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) \
            or not 1 <= bits <= MAX_BITS:
        raise ConfigError(f"bits must be an integer from 1 to {MAX_BITS}, got {bits!r}; "
                          f"choose a width in 1..{MAX_BITS}")
    return int(bits)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack non-negative integer ``codes`` (any shape, row-major order) into a 1-D uint8
    bit stream.

    Example:
        >>> import torch
        >>> pack_codes(torch.tensor([5, 1, 7], dtype=torch.uint8), 3).tolist()
        [205, 1]
        >>> pack_codes(torch.tensor([1000, 3], dtype=torch.int32), 10).tolist()
        [232, 15, 0]
    """
    bits = _check_bits(bits)
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise DataError(f"codes must be an integer tensor, got {codes.dtype}; "
                        "convert them with .to(torch.uint8)")
    flat = codes.detach().reshape(-1).cpu().numpy()
    n = flat.size
    if n and (int(flat.min()) < 0 or int(flat.max()) >= (1 << bits)):
        bad = int(flat.max()) if int(flat.min()) >= 0 else int(flat.min())
        raise DataError(f"code {bad} does not fit in {bits} bits (0..{(1 << bits) - 1}); "
                        "use more bits or fix the codes")
    if bits in (8, 16):  # whole bytes: the little-endian bytes of the codes themselves
        return torch.from_numpy(flat.astype("<u1" if bits == 8 else "<u2").view(np.uint8).copy())
    groups = -(-n // 8)  # ceil: eight codes per group
    flat_lanes = np.zeros(groups * 8, dtype="<u8")
    flat_lanes[:n] = flat
    lanes = flat_lanes.reshape(groups, 8)  # (groups, 8)
    lo = np.zeros(groups, dtype="<u8")
    hi = np.zeros(groups, dtype="<u8")
    for j in range(8):  # code j of a group lands at bit j*bits of its 128-bit word
        shift = j * bits
        if shift < 64:
            lo |= lanes[:, j] << np.uint64(shift)
            if shift + bits > 64:  # straddles the two lanes
                hi |= lanes[:, j] >> np.uint64(64 - shift)
        else:
            hi |= lanes[:, j] << np.uint64(shift - 64)
    words = np.stack([lo, hi], 1).view(np.uint8).reshape(groups, 16)[:, :bits]
    return torch.from_numpy(np.ascontiguousarray(words).reshape(-1)[: packed_length(n, bits)])


def unpack_codes(packed: torch.Tensor, bits: int, numel: int,
                 dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: a 1-D tensor of ``numel`` codes of ``dtype``.

    Raises FormatError when ``packed`` does not hold exactly ``ceil(numel*bits/8)`` bytes.

    Example:
        >>> import torch
        >>> unpack_codes(torch.tensor([205, 1], dtype=torch.uint8), 3, 3).tolist()
        [5, 1, 7]
    """
    bits = _check_bits(bits)
    if packed.dtype != torch.uint8 or packed.dim() != 1:
        raise FormatError(f"packed codes must be a 1-D uint8 tensor, got {packed.dtype} "
                          f"of shape {tuple(packed.shape)}; the file is corrupt")
    if isinstance(numel, bool) or numel < 0:
        raise FormatError(f"code count must be >= 0, got {numel!r}; the file is corrupt")
    if bits > 8 and dtype == torch.uint8:
        raise ConfigError(f"{bits}-bit codes do not fit uint8; unpack them as torch.int32")
    expected = packed_length(numel, bits)
    if packed.numel() != expected:
        raise FormatError(f"packed codes hold {packed.numel()} bytes but {numel} codes of {bits} "
                          f"bits need {expected}; the file is truncated or corrupt")
    data = packed.detach().cpu().numpy()
    if bits == 8 and dtype == torch.uint8:
        return torch.from_numpy(data.copy())
    if bits in (8, 16):
        codes = data.view("<u1" if bits == 8 else "<u2")
        return torch.from_numpy(codes.astype(np.int64)).to(dtype)
    groups = -(-numel // 8)
    raw = np.zeros((groups, 16), dtype=np.uint8)
    body = np.zeros(groups * bits, dtype=np.uint8)
    body[:expected] = data
    raw[:, :bits] = body.reshape(groups, bits)
    words = raw.view("<u8")  # (groups, 2): low and high 64 bits
    lo, hi = words[:, 0], words[:, 1]
    mask = np.uint64((1 << bits) - 1)
    lanes = np.empty((groups, 8), dtype="<u8")
    for j in range(8):
        shift = j * bits
        if shift < 64:
            value = lo >> np.uint64(shift)
            if shift + bits > 64:
                value = value | (hi << np.uint64(64 - shift))
        else:
            value = hi >> np.uint64(shift - 64)
        lanes[:, j] = value & mask
    flat = lanes.reshape(-1)[:numel]
    if dtype == torch.uint8:
        return torch.from_numpy(flat.astype(np.uint8))
    return torch.from_numpy(flat.astype(np.int64)).to(dtype)
