"""The seeded hash of HashedNets, exact and portable: the same seed gives the same virtual
weight on every machine, every torch version, computed or cached.

``lowbias32`` (C. Wellons' 32-bit integer mixer: xor-shift, multiply, xor-shift,
multiply, xor-shift) is computed in int64 tensors: every multiply is split into 16-bit
halves so no intermediate passes 2**63 (signed overflow is undefined in C++). Each
position ``i`` of the flattened weight gets a bucket ``bucket_index(i)`` in
``[0, budget)`` from one hash (range-reduced by multiply-and-shift, not modulo) and a
sign from a second, independent hash: ``w[i] = sign(i) * bucket[bucket_index(i)]``.
"""

from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
MAX_POSITIONS = 1 << 32  # positions are hashed as 32-bit keys
MAX_BUDGET = 1 << 31  # (h * budget) >> 32 must stay below 2**63


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for int64 ``x`` in [0, 2**32) and a 32-bit constant ``c``; in place
    where it can (the hash runs on every forward when it is not cached)."""
    hi = x * (c >> 16)
    hi &= 0xFFFF  # only the low 16 bits survive the shift below
    hi <<= 16
    x *= c & 0xFFFF  # < 2**48
    x += hi
    x &= MASK32
    return x


def lowbias32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit bijective mixer of int64 values in [0, 2**32).

    Example:
        >>> lowbias32(torch.tensor([0, 1, 2])).tolist()
        [0, 1753845952, 3507691905]
    """
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x ^= x >> 15
    x = _mul32(x, 0x846CA68B)
    x ^= x >> 16
    return x


def _key(seed: int, salt: int) -> int:
    # the golden-ratio offset keeps seed 0 from hashing with key 0 (lowbias32(0) == 0)
    return int(lowbias32(torch.tensor([(2 * seed + salt + 0x9E3779B9) & MASK32]))[0])


def signed_index(positions: torch.Tensor, budget: int, seed: int, sign: bool) -> torch.Tensor:
    """For flat positions (int64), the index into ``cat([bucket, -bucket])``: the bucket
    of each position, plus ``budget`` where its sign is negative.

    Example:
        >>> signed_index(torch.arange(6), 3, seed=0, sign=True).tolist()
        [2, 4, 0, 4, 3, 1]
    """
    index = lowbias32(positions ^ _key(seed, 0))
    index *= budget
    index >>= 32  # in [0, budget): multiply-shift range reduction
    if sign:
        negative = lowbias32(positions ^ _key(seed, 1))
        negative &= 1
        negative *= budget
        index += negative
    return index
