"""Where the nonzero weights of a sparse tensor are: fixed-width gaps with an escape.

The positions ``p_0 < p_1 < ...`` of the nonzeros in the flattened tensor are stored as
gaps ``g_i = p_i - p_{i-1} - 1`` (zeros skipped before entry ``i``; ``p_{-1} = -1``),
each in ``gap_bits`` bits. The largest value, ``E = 2**gap_bits - 1``, is an escape:
"skip E zeros, no entry here" (Deep Compression's filler zeros, without storing a
filler value). A gap ``g >= E`` is written as ``g // E`` escapes then ``g % E``.
``gap_bits = 1`` is a bitmap (every position up to the last nonzero costs one bit);
wider gaps suit sparser tensors. :func:`best_gap_bits` picks the width that stores a
tensor in the fewest bits.

Example:
    >>> import torch
    >>> gaps = encode_gaps(torch.tensor([2, 3, 12]), 2)
    >>> gaps.tolist(), decode_gaps(gaps, 2).tolist()
    ([2, 0, 3, 3, 2], [2, 3, 12])
"""

from __future__ import annotations

import torch

from ...core.protocol import MAX_CODE_BITS
from ...errors import FormatError


def raw_gaps(positions: torch.Tensor) -> torch.Tensor:
    """Zeros skipped before each entry: ``p_i - p_{i-1} - 1`` (int64)."""
    p = positions.long()
    return torch.diff(p, prepend=p.new_tensor([-1])) - 1


def entries_for(gaps: torch.Tensor, gap_bits: int) -> int:
    """Stored gap symbols (entries plus escapes) at ``gap_bits`` bits."""
    escape = (1 << gap_bits) - 1
    return int(gaps.numel() + (gaps // escape).sum())


def best_gap_bits(positions: torch.Tensor, bits_per_entry: int = 0) -> int:
    """The gap width (1..16) that stores ``positions`` in the fewest bits, counting
    ``bits_per_entry`` more bits for each real entry (its code); escapes carry none.

    Example:
        >>> best_gap_bits(torch.arange(0, 1000, 2)), best_gap_bits(torch.arange(0, 1000, 40))
        (1, 6)
    """
    gaps = raw_gaps(positions)
    nnz = gaps.numel()
    best = min(range(1, MAX_CODE_BITS + 1),
               key=lambda b: (entries_for(gaps, b) * b + nnz * bits_per_entry, b))
    return best


def encode_gaps(positions: torch.Tensor, gap_bits: int) -> torch.Tensor:
    """Sorted, distinct positions -> gap symbols (int32), escapes included."""
    escape = (1 << gap_bits) - 1
    gaps = raw_gaps(positions)
    escapes = gaps // escape  # (nnz,)
    symbols = torch.full((int(gaps.numel() + escapes.sum()),), escape, dtype=torch.int64)
    ends = torch.cumsum(escapes + 1, 0) - 1  # where each real entry's symbol goes
    symbols[ends] = gaps % escape
    return symbols.to(torch.int32)


def decode_gaps(symbols: torch.Tensor, gap_bits: int, numel: int | None = None,
                nnz: int | None = None) -> torch.Tensor:
    """Gap symbols -> the positions of the real entries (int64).

    With ``numel`` / ``nnz`` (a file's scheme), FormatError unless every position falls
    inside the tensor and there are exactly ``nnz`` entries.
    """
    escape = (1 << gap_bits) - 1
    s = symbols.long()
    if s.numel() and (int(s.min()) < 0 or int(s.max()) > escape):
        raise FormatError(f"a gap symbol is outside 0..{escape}")
    is_entry = s != escape
    advance = torch.where(is_entry, s + 1, torch.full_like(s, escape))
    positions = (torch.cumsum(advance, 0) - 1)[is_entry]
    if nnz is not None and positions.numel() != nnz:
        raise FormatError(f"the gaps hold {positions.numel()} entries, the scheme says {nnz}")
    if numel is not None and positions.numel() and int(positions[-1]) >= numel:
        raise FormatError(f"a position ({int(positions[-1])}) falls outside the {numel} values")
    return positions
