"""The safetensors header of a weightshare file, parsed by hand with hard limits.

Everything here runs before a single tensor is read, so a forged size can never
cause a huge allocation: the header length, every tensor's dtype, shape and byte
range are checked against the file's size (docs/format.md, section 1).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FormatError

METADATA_KEY = "weightshare"
MAX_HEADER_BYTES = 100_000_000  # the limit safetensors itself enforces
MAX_NDIM = 8

# safetensors dtype tag -> bytes per element (the tags torch can load)
DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E4M3FNUZ": 1, "F8_E5M2": 1, "F8_E5M2FNUZ": 1, "C64": 8,
    "U64": 8, "U32": 4, "U16": 2,
}
# torch dtype name -> safetensors tag
TORCH_DTYPE_TAGS = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
    "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3", "float8_e4m3fnuz": "F8_E4M3FNUZ", "float8_e5m2": "F8_E5M2",
    "float8_e5m2fnuz": "F8_E5M2FNUZ", "complex64": "C64", "uint64": "U64", "uint32": "U32",
    "uint16": "U16",
}


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the safetensors header: dtype tag, shape and byte range in the data section.

    ``key`` is the name under which the file stores it (``name`` may differ for files of an
    older format version, whose names are upgraded on reading).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int
    key: str = ""

    @property
    def stored_as(self) -> str:
        return self.key or self.name

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def quote(name: Any) -> str:
    """A name from the file, quoted and cut short: a hostile file may hold huge names."""
    text = repr(name)
    return text if len(text) <= 80 else text[:77] + "..."


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def read_header(path: str | os.PathLike) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and check the safetensors header of ``path``: (tensor table, string metadata).

    Checks: the file exists, the 8-byte header length is plausible and within
    the file, the header is a JSON object, every tensor has a known dtype, a
    shape of non-negative ints and a byte range matching its size, and the
    ranges tile the data section exactly (safetensors' own rule).
    """
    p = Path(path)
    if not p.exists():
        raise FormatError(f"no such file: {p}; check the path")
    if not p.is_file():
        raise FormatError(f"{p} is not a file; pass the path of a .safetensors file")
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise FormatError(f"{p} is not a safetensors file (only {size} bytes); "
                              "pass a file written by weightshare.save")
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER_BYTES:
            raise FormatError(f"{p} is not a safetensors file or is corrupt (header length {n} "
                              f"is over the {MAX_HEADER_BYTES}-byte limit); pass a file written "
                              "by weightshare.save")
        if 8 + n > size:
            raise FormatError(f"{p} is truncated or not a safetensors file (header length {n}, "
                              f"but only {size - 8} bytes follow); save or download it again")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise FormatError(f"{p} is not a safetensors file or its header is corrupt (not valid "
                          "JSON); save or download it again") from None
    if not isinstance(header, dict):
        raise FormatError(f"{p}: safetensors header is not a JSON object; the file is corrupt")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise FormatError(f"{p}: safetensors __metadata__ is not a string-to-string map; "
                          "the file is corrupt")
    infos = {name: _tensor_info(p, name, entry) for name, entry in header.items()}
    _check_tiling(p, infos, size - 8 - n)
    return infos, meta


def _tensor_info(p: Path, name: str, entry: Any) -> TensorInfo:
    bad = f"{p}: header entry for tensor {quote(name)} is corrupt"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise FormatError(f"{bad} (needs exactly dtype, shape, data_offsets); save it again")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise FormatError(f"{p}: tensor {quote(name)} has unsupported dtype {quote(dtype)}; "
                          f"supported: {', '.join(DTYPE_SIZES)}")
    if (not isinstance(shape, list) or len(shape) > 2 * MAX_NDIM
            or not all(is_int(d) and d >= 0 for d in shape)):
        raise FormatError(f"{bad} (shape {str(shape)[:80]}); save it again")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(is_int(o) for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
        raise FormatError(f"{bad} (data_offsets {str(offsets)[:80]}); save it again")
    info = TensorInfo(name, dtype, tuple(shape), offsets[0], offsets[1])
    if info.nbytes != info.numel * DTYPE_SIZES[dtype]:
        raise FormatError(f"{bad} (shape {list(shape)} of {dtype} needs "
                          f"{info.numel * DTYPE_SIZES[dtype]} bytes, offsets give {info.nbytes})")
    return info


def _check_tiling(p: Path, infos: dict[str, TensorInfo], data_size: int) -> None:
    cursor = 0
    for info in sorted(infos.values(), key=lambda i: (i.begin, i.end)):
        if info.begin != cursor:
            raise FormatError(f"{p}: tensor {quote(info.name)} starts at byte {info.begin}, "
                              f"expected {cursor} (overlap or gap); the file is corrupt")
        cursor = info.end
    if cursor > data_size:
        raise FormatError(f"{p} is truncated: tensors need {cursor} data bytes, the file has "
                          f"{data_size}; save or download it again")
    if cursor < data_size:
        raise FormatError(f"{p} has {data_size - cursor} stray bytes after the last tensor; "
                          "the file is corrupt")


def parse_metadata(p: str | os.PathLike, strings: dict[str, str]) -> dict:
    """The ``weightshare`` JSON entry of the safetensors metadata, parsed (not yet validated)."""
    text = strings.get(METADATA_KEY)
    if text is None:
        raise FormatError(f"{p} is a safetensors file but not a weightshare file; load it with "
                          "transformers/safetensors, or run `weightshare compress` on it first")
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError):
        raise FormatError(f"{p}: the weightshare metadata is not valid JSON; the file is "
                          "corrupt, save it again") from None
    if not isinstance(meta, dict):
        raise FormatError(f"{p}: the weightshare metadata is not a JSON object; "
                          "the file is corrupt")
    return meta


