"""Bit-packing of codebook codes at their real width.

The stream is little-endian at both levels: code ``i`` occupies bits
``[i*bits, (i+1)*bits)`` of the stream, bit ``j`` of the stream is bit
``j % 8`` (LSB first) of byte ``j // 8``, and each code is written LSB first.
The last byte is padded with zero bits. See docs/format.md for a worked example.

Why by hand: no well-kept library packs arbitrary widths (1..8) in this order;
numpy's ``packbits`` works on single bits and would cost 8x the memory.
Eight codes always fill exactly ``bits`` bytes, so we pack eight codes at a time
into one little-endian uint64 with eight vectorised shift-ors.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError, DataError, FormatError


def packed_length(numel: int, bits: int) -> int:
    """Bytes that ``numel`` codes of ``bits`` bits take: ``ceil(numel * bits / 8)``."""
    return (numel * bits + 7) // 8


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise ConfigError(f"bits must be an integer from 1 to 8, got {bits!r}; "
                          "choose a width in 1..8")
    return int(bits)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack uint8 ``codes`` (any shape, row-major order) into a 1-D uint8 bit stream.

    Example:
        >>> import torch
        >>> pack_codes(torch.tensor([5, 1, 7], dtype=torch.uint8), 3).tolist()
        [205, 1]
    """
    bits = _check_bits(bits)
    if codes.dtype != torch.uint8:
        raise DataError(f"codes must be a uint8 tensor, got {codes.dtype}; "
                        "convert them with .to(torch.uint8)")
    flat = codes.detach().reshape(-1).cpu().numpy()
    n = flat.size
    top = int(flat.max()) if n else 0
    if top >= (1 << bits):
        raise DataError(f"code {top} does not fit in {bits} bits (max {(1 << bits) - 1}); "
                        "use more bits or fix the codes")
    if bits == 8:
        return torch.from_numpy(flat.copy())
    groups = -(-n // 8)  # ceil: eight codes per group
    padded = np.zeros(groups * 8, dtype=np.uint8)
    padded[:n] = flat
    lanes = padded.reshape(groups, 8).astype("<u8")  # (groups, 8)
    word = np.zeros(groups, dtype="<u8")
    for j in range(8):  # code j of a group lands at bit j*bits of its 64-bit word
        word |= lanes[:, j] << np.uint64(j * bits)
    out = word.view(np.uint8).reshape(groups, 8)[:, :bits]  # low `bits` bytes, little-endian
    return torch.from_numpy(np.ascontiguousarray(out).reshape(-1)[: packed_length(n, bits)])


def unpack_codes(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: a 1-D uint8 tensor of ``numel`` codes.

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
    expected = packed_length(numel, bits)
    if packed.numel() != expected:
        raise FormatError(f"packed codes hold {packed.numel()} bytes but {numel} codes of {bits} "
                          f"bits need {expected}; the file is truncated or corrupt")
    data = packed.detach().cpu().numpy()
    if bits == 8:
        return torch.from_numpy(data.copy())
    groups = -(-numel // 8)
    raw = np.zeros((groups, 8), dtype=np.uint8)
    body = np.zeros(groups * bits, dtype=np.uint8)
    body[:expected] = data
    raw[:, :bits] = body.reshape(groups, bits)
    word = raw.reshape(-1).view("<u8")  # (groups,)
    mask = np.uint64((1 << bits) - 1)
    lanes = np.empty((groups, 8), dtype=np.uint8)
    for j in range(8):
        lanes[:, j] = (word >> np.uint64(j * bits)) & mask
    return torch.from_numpy(lanes.reshape(-1)[:numel].copy())
