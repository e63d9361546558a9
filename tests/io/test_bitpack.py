"""Bit-packing of codes: the order docs/format.md specifies, exact lengths, speed."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightshare.errors import ConfigError, DataError, FormatError
from weightshare.io.bitpack import pack_codes, packed_length, unpack_codes


def reference_pack(codes: list[int], bits: int) -> list[int]:
    """The spec, literally: code i at stream bits [i*bits, (i+1)*bits), LSB first."""
    word = 0
    for i, c in enumerate(codes):
        word |= c << (i * bits)
    return list(word.to_bytes(packed_length(len(codes), bits), "little"))


@st.composite
def codes_and_bits(draw: st.DrawFn) -> tuple[list[int], int]:
    bits = draw(st.integers(1, 8))
    codes = draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=200))
    return codes, bits


@settings(max_examples=200, deadline=None)
@given(codes_and_bits())
def test_round_trip_and_spec_order(case: tuple[list[int], int]) -> None:
    codes, bits = case
    t = torch.tensor(codes, dtype=torch.uint8)
    packed = pack_codes(t, bits)
    assert packed.dtype == torch.uint8 and packed.dim() == 1
    assert packed.numel() == (len(codes) * bits + 7) // 8
    assert packed.tolist() == reference_pack(codes, bits)
    assert unpack_codes(packed, bits, len(codes)).tolist() == codes


def test_worked_example_from_format_md() -> None:
    packed = pack_codes(torch.tensor([5, 1, 7], dtype=torch.uint8), 3)
    assert packed.tolist() == [205, 1]
    assert unpack_codes(packed, 3, 3).tolist() == [5, 1, 7]


def test_exact_packed_length() -> None:
    assert pack_codes(torch.zeros(10, dtype=torch.uint8), 3).numel() == 4
    assert pack_codes(torch.zeros(0, dtype=torch.uint8), 5).numel() == 0
    assert pack_codes(torch.zeros(8, dtype=torch.uint8), 7).numel() == 7
    assert pack_codes(torch.zeros(9, dtype=torch.uint8), 1).numel() == 2


def test_any_shape_is_packed_in_row_major_order() -> None:
    codes = torch.randint(0, 16, (3, 4, 5), dtype=torch.uint8)
    packed = pack_codes(codes, 4)
    assert torch.equal(packed, pack_codes(codes.reshape(-1), 4))
    assert torch.equal(unpack_codes(packed, 4, 60).reshape(3, 4, 5), codes)
    # a non-contiguous view packs its logical order
    assert torch.equal(unpack_codes(pack_codes(codes.mT, 4), 4, 60), codes.mT.reshape(-1))


@pytest.mark.parametrize("bits", [0, 17, -1, True, 2.0])
def test_bad_bits(bits: object) -> None:
    with pytest.raises(ConfigError, match="bits"):
        pack_codes(torch.zeros(3, dtype=torch.uint8), bits)  # type: ignore[arg-type]


def test_code_too_large_for_bits() -> None:
    with pytest.raises(DataError, match="does not fit in 3 bits"):
        pack_codes(torch.tensor([1, 8], dtype=torch.uint8), 3)


def test_codes_must_be_integers_that_fit() -> None:
    with pytest.raises(DataError, match="integer"):
        pack_codes(torch.tensor([1.0, 2.0]), 3)
    with pytest.raises(DataError, match="does not fit"):
        pack_codes(torch.tensor([1, -2]), 3)
    assert pack_codes(torch.tensor([5, 1, 7]), 3).tolist() == [205, 1]  # any integer dtype


@pytest.mark.parametrize("bits", range(1, 17))
def test_every_width_matches_the_reference_stream(bits: int) -> None:
    # docs/format.md: the whole stream is one little-endian integer, code i at bit i*bits
    for n in (0, 1, 7, 8, 9, 101):
        codes = torch.randint(0, 1 << bits, (n,), generator=torch.Generator().manual_seed(n))
        packed = pack_codes(codes, bits)
        word = sum(int(c) << (i * bits) for i, c in enumerate(codes.tolist()))
        assert bytes(packed.tolist()) == word.to_bytes(packed_length(n, bits), "little")
        assert torch.equal(unpack_codes(packed, bits, n, torch.int64), codes)


def test_unpack_wrong_length_is_a_format_error() -> None:
    with pytest.raises(FormatError, match="need 4"):
        unpack_codes(torch.zeros(3, dtype=torch.uint8), 3, 10)
    with pytest.raises(FormatError, match="1-D uint8"):
        unpack_codes(torch.zeros(4, dtype=torch.int32), 3, 10)


def test_twelve_million_codes_round_trip() -> None:
    # a model-sized tensor in one go (a per-element loop would take minutes; the speed
    # itself is measured in benchmarks, not asserted here)
    codes = torch.randint(0, 8, (12_000_000,), dtype=torch.uint8)
    packed = pack_codes(codes, 3)
    assert packed.numel() == 4_500_000
    assert torch.equal(unpack_codes(packed, 3, codes.numel()), codes)
