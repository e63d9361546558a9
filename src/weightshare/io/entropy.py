"""Entropy coding of bit-packed parts (Deep Compression's third stage), exact.

A part whose values are codes of ``bits`` bits (``PartSpec.bits``) may be stored coded
instead of bit-packed: one static model per tensor, the histogram of its codes, and an
ANS stream (docs/format.md, section 4). The coder is ``constriction``'s ``AnsCoder``
(32-bit words, 24-bit fixed-point probabilities, ``Categorical(perfect=False)`` built
from the stored histogram): a maintained library, within a few bytes of the Shannon
limit of the histogram. Codes are coded and decoded in chunks, so no step holds more
than one chunk of unpacked codes; decoding writes straight into the bit-packed form.

Decoding checks what it produced: the stream must be used up exactly and the decoded
codes must have the stored histogram, so a coder that disagrees with the writer's (or a
forged stream) is an error, never silently different codes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import FormatError, SaveError
from .bitpack import pack_codes, packed_length, unpack_codes

CODER = "ans32"  # the only coder this version writes and reads
CHUNK = 1 << 20  # codes per step (a multiple of 8: chunks start on byte boundaries)
# a coded tensor holds at least one byte per MAX_SYMBOLS_PER_BYTE codes (writers pad the
# stream with zero bytes): a reader never decodes more than this many codes per stored byte
MAX_SYMBOLS_PER_BYTE = 128


def constriction() -> Any:
    """The ``constriction`` module, or an error saying how to install it."""
    try:
        import constriction as c
    except ImportError:
        raise FormatError("entropy coding needs the constriction package, which is not "
                          "installed; run: pip install 'weightshare[entropy]'") from None
    return c


def available() -> bool:
    try:
        constriction()
    except FormatError:
        return False
    return True


def min_blob_bytes(numel: int) -> int:
    return -(-numel // MAX_SYMBOLS_PER_BYTE)


@dataclass(frozen=True)
class Coded:
    """A coded tensor: ``blob`` = histogram (2**bits little-endian uint32) + ANS stream
    (``words`` little-endian uint32) + zero padding."""

    blob: np.ndarray
    words: int


CodeSource = Callable[[int, int], np.ndarray]  # (start, stop) -> int32 codes


def logical_source(codes: torch.Tensor) -> CodeSource:
    """Codes from a tensor of integer codes (any shape, row-major order)."""
    flat = codes.detach().cpu().reshape(-1)
    return lambda a, b: flat[a:b].numpy().astype(np.int32)


def packed_source(stream: torch.Tensor, bits: int, numel: int) -> CodeSource:
    """Codes from a bit-packed stream (chunks start at multiples of 8 codes)."""
    data = stream.detach().cpu().reshape(-1)

    def read(a: int, b: int) -> np.ndarray:
        part = data[a * bits // 8: packed_length(b, bits)]
        return unpack_codes(part, bits, b - a, torch.int32).numpy()

    return read


def _chunks(numel: int) -> list[tuple[int, int]]:
    return [(a, min(a + CHUNK, numel)) for a in range(0, numel, CHUNK)]


def histogram(source: CodeSource, bits: int, numel: int) -> np.ndarray:
    """Counts of each code value 0..2**bits-1 (int64)."""
    counts = np.zeros(1 << bits, np.int64)
    for a, b in _chunks(numel):
        counts += np.bincount(source(a, b), minlength=1 << bits)[: 1 << bits]
    return counts


def shannon_bytes(counts: np.ndarray) -> float:
    """The Shannon limit of a histogram: sum over codes of -log2 p(code), in bytes."""
    n = float(counts.sum())
    nz = counts[counts > 0].astype(np.float64)
    return float(-(nz * np.log2(nz / n)).sum() / 8) if n else 0.0


def _model(counts: np.ndarray) -> Any:
    c = constriction()
    return c.stream.model.Categorical(counts.astype(np.float64), perfect=False)


def encode(source: CodeSource, bits: int, numel: int) -> Coded:
    """Entropy-code ``numel`` codes of ``bits`` bits; SaveError if the coder fails."""
    counts = histogram(source, bits, numel)
    if counts.max(initial=0) >= 1 << 32:
        raise SaveError(f"a tensor of {numel} codes is too large to entropy-code (a code "
                        "count does not fit 32 bits); save it without entropy=True")
    words = np.zeros(0, np.uint32)
    if numel:
        model = _model(counts)
        coder = constriction().stream.stack.AnsCoder()
        for a, b in reversed(_chunks(numel)):  # a stack: the first chunk goes on last
            coder.encode_reverse(source(a, b), model)
        words = coder.get_compressed().astype("<u4")
    body = 4 * counts.size + 4 * words.size
    blob = np.zeros(max(body, min_blob_bytes(numel)), np.uint8)  # zero padding after the body
    blob[: 4 * counts.size] = counts.astype("<u4").view(np.uint8)
    blob[4 * counts.size: body] = words.view(np.uint8)
    return Coded(blob, int(words.size))


def check_blob(nbytes: int, bits: int, numel: int, words: Any, where: str) -> None:
    """FormatError unless a coded tensor of ``nbytes`` bytes fits its part (checked on the
    header alone, before any data is read)."""
    if not (isinstance(words, int) and not isinstance(words, bool) and words >= 0):
        raise FormatError(f"{where}: coding words {str(words)[:40]} is not a count; the file is "
                          "corrupt")
    body = 4 * (1 << bits) + 4 * words
    if nbytes != max(body, min_blob_bytes(numel)):
        raise FormatError(f"{where}: an entropy-coded tensor of {numel} codes with {words} words "
                          f"must hold {max(body, min_blob_bytes(numel))} bytes, not {nbytes}; "
                          "the file is corrupt")


def decode(blob: torch.Tensor, bits: int, numel: int, words: int, *, packed: bool,
           where: str) -> torch.Tensor:
    """The codes of a coded tensor: bit-packed (1-D uint8 stream, ``packed=True``) or as
    int32 codes; FormatError if they do not decode exactly to the stored histogram."""
    raw = blob.numpy()
    k = 1 << bits
    counts = raw[: 4 * k].view("<u4").astype(np.int64)
    if int(counts.sum()) != numel:
        raise FormatError(f"{where}: the code histogram counts {int(counts.sum())} codes, the "
                          f"part has {numel}; the file is corrupt")
    if raw[4 * k + 4 * words:].any():
        raise FormatError(f"{where}: padding after the coded stream is not zero; the file is "
                          "corrupt")
    out = torch.empty(packed_length(numel, bits) if packed else numel,
                      dtype=torch.uint8 if packed else torch.int32)
    for a, b, codes in _decoded(raw[4 * k: 4 * k + 4 * words].view("<u4"), counts, numel,
                                where):
        if packed:
            out[a * bits // 8: packed_length(b, bits)] = pack_codes(torch.from_numpy(codes), bits)
        else:
            out[a:b] = torch.from_numpy(codes)
    return out


def _decoded(stream: np.ndarray, counts: np.ndarray, numel: int,
             where: str) -> Iterator[tuple[int, int, np.ndarray]]:
    if not numel:
        if stream.size:
            raise FormatError(f"{where}: a coded stream for no codes; the file is corrupt")
        return
    seen = np.zeros_like(counts)
    try:
        model = _model(counts)
        coder = constriction().stream.stack.AnsCoder(stream.astype(np.uint32))
        for a, b in _chunks(numel):
            codes = np.asarray(coder.decode(model, b - a), dtype=np.int32)
            seen += np.bincount(codes, minlength=counts.size)[: counts.size]
            yield a, b, codes
        empty = coder.is_empty()
    except FormatError:
        raise
    except BaseException as e:  # constriction raises ValueError, or a Rust panic
        if isinstance(e, (KeyboardInterrupt, SystemExit, MemoryError, GeneratorExit)):
            raise
        raise FormatError(f"{where}: the entropy-coded stream does not decode "
                          f"({type(e).__name__}); the file is corrupt") from None
    if not empty or not np.array_equal(seen, counts):
        raise FormatError(f"{where}: the entropy-coded stream does not decode to its histogram "
                          "(corrupt, or written by an incompatible coder); save it again")
