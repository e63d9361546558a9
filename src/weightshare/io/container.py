"""The safetensors container, byte by byte: writing it reproducibly and reading tensors
back with their checksums verified (docs/format.md, sections 1 and 5).

Why by hand rather than ``safetensors.torch.save_file`` / ``safe_open``: a writer that
streams one tensor at a time computes each tensor's checksum as it writes and never
holds a second copy of the model; its byte order is ours to fix (keys sorted), so the
same model always gives the same bytes; a reader that reads one tensor at a time into
a buffer of the size the (already validated) header states checks the checksum before
the tensor is used. The files remain plain safetensors files: ``safe_open`` reads them.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import numpy as np
import torch

from ..errors import FormatError
from .header import DTYPE_SIZES, TensorInfo, quote

# safetensors dtype tag -> torch dtype (the tags a weightshare file may hold)
TAG_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn,
    "F8_E4M3FNUZ": torch.float8_e4m3fnuz, "F8_E5M2": torch.float8_e5m2,
    "F8_E5M2FNUZ": torch.float8_e5m2fnuz, "C64": torch.complex64, "U64": torch.uint64,
    "U32": torch.uint32, "U16": torch.uint16,
}
CHECKSUM_PREFIX = "crc32:"


def checksum(data: bytes | bytearray | memoryview | np.ndarray) -> str:
    """The checksum a file records for a tensor's stored bytes: CRC-32 (zlib's, the one
    of PNG and gzip), written ``crc32:`` + 8 lowercase hex digits.

    CRC-32 detects every error within 32 consecutive bits, so every flipped byte.

    Example:
        >>> checksum(b"weightshare")
        'crc32:a07080e7'
    """
    return f"{CHECKSUM_PREFIX}{zlib.crc32(_buffer(data)) & 0xFFFFFFFF:08x}"


def _buffer(data: bytes | bytearray | memoryview | np.ndarray) -> memoryview:
    """A flat byte view of ``data`` (numpy arrays expose their memory, no copy)."""
    return memoryview(cast(Any, data)).cast("B")


def tensor_bytes(t: torch.Tensor) -> np.ndarray:
    """The little-endian bytes of a CPU tensor, as a flat uint8 array (no copy when it is
    contiguous)."""
    t = t.detach().cpu().contiguous().reshape(-1)
    if t.numel() == 0:
        return np.zeros(0, np.uint8)
    return t.view(torch.uint8).numpy()


@dataclass(frozen=True)
class Entry:
    """One tensor to write: its safetensors dtype tag, shape, byte size and a function that
    writes its bytes (called once, in file order)."""

    tag: str
    shape: tuple[int, ...]
    nbytes: int
    data: Callable[[], np.ndarray]


def from_tensor(t: torch.Tensor, tag: str) -> Entry:
    return Entry(tag, tuple(t.shape), t.numel() * DTYPE_SIZES[tag], lambda: tensor_bytes(t))


def file_order(entries: dict[str, Entry]) -> list[str]:
    """Tensor names in the order their bytes are written: widest dtype first, then by name
    (as safetensors does, so that every tensor starts aligned to its element size)."""
    return sorted(entries, key=lambda n: (-DTYPE_SIZES[entries[n].tag], n))


def header_bytes(entries: dict[str, Entry], metadata: dict[str, str]) -> bytes:
    """The 8-byte length and the JSON header (keys sorted, padded with spaces to a multiple
    of 8 bytes, as safetensors pads it)."""
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name in file_order(entries):
        e = entries[name]
        header[name] = {"dtype": e.tag, "shape": list(e.shape),
                        "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def write_container(f: BinaryIO, entries: dict[str, Entry], metadata: dict[str, str],
                    checksums: dict[str, str] | None = None) -> None:
    """Write a whole safetensors file to ``f``: header, then each tensor's bytes (their
    checksums recorded in ``checksums`` as they are written)."""
    f.write(header_bytes(entries, metadata))
    for name in file_order(entries):
        data = entries[name].data()
        if data.nbytes != entries[name].nbytes:  # internal: the entry lied about its size
            raise AssertionError(f"{name}: {data.nbytes} bytes written, {entries[name].nbytes} "
                                 "declared")
        if checksums is not None:
            checksums[name] = checksum(data)
        f.write(_buffer(data))


def read_bytes(f: BinaryIO, data_start: int, info: TensorInfo, path: object) -> np.ndarray:
    """The stored bytes of one tensor (a fresh buffer of exactly ``info.nbytes``)."""
    buf = np.empty(info.nbytes, np.uint8)
    f.seek(data_start + info.begin)
    got = cast(Any, f).readinto(_buffer(buf)) if info.nbytes else 0
    if got != info.nbytes:
        raise FormatError(f"{path} is truncated (tensor {quote(info.stored_as)} ends early); "
                          "save or download it again")
    return buf


def verify(buf: np.ndarray, expected: str | None, name: str, path: object) -> None:
    """FormatError unless ``buf`` has the checksum the file records (None: none recorded)."""
    if expected is not None and checksum(buf) != expected:
        raise FormatError(f"{path}: tensor {quote(name)} does not match its checksum (the file "
                          "is corrupt or was modified); save or download it again")


def as_tensor(buf: np.ndarray, info: TensorInfo) -> torch.Tensor:
    """The tensor of ``info`` over the bytes ``buf`` (shares its memory)."""
    dtype = TAG_DTYPES[info.dtype]
    if info.numel == 0:
        return torch.empty(info.shape, dtype=dtype)
    return torch.frombuffer(buf, dtype=torch.uint8).view(dtype).reshape(info.shape)


def read_checked(f: BinaryIO, data_start: int, info: TensorInfo, expected: str | None,
                 path: object) -> torch.Tensor:
    """One tensor read and its checksum verified."""
    buf = read_bytes(f, data_start, info, path)
    verify(buf, expected, info.stored_as, path)
    return as_tensor(buf, info)


def data_start(f: BinaryIO) -> int:
    """Offset of the data section (after the 8-byte length and the header)."""
    f.seek(0)
    return 8 + int.from_bytes(f.read(8), "little")


def total_bytes(entries: Iterable[Entry]) -> int:
    return sum(e.nbytes for e in entries)
