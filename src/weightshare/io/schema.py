"""The weightshare file schema and its validation (docs/format.md is the specification).

Everything here runs before a single tensor is read: the safetensors header is
parsed by hand with hard limits, so a forged size can never cause a huge
allocation, and the ``weightshare`` metadata is checked field by field against
the tensor table. A reader that got past :func:`validate_metadata` can trust
every shape, length and name it uses.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FormatError
from .bitpack import packed_length

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
METADATA_KEY = "weightshare"
MAX_HEADER_BYTES = 100_000_000  # the limit safetensors itself enforces
MAX_NDIM = 8
GRANULARITIES = ("per_tensor", "per_channel", "per_group")
SCHEME_KINDS = ("codebook", "relaxed")
MODEL_SOURCES = ("transformers", "torch")

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
# scheme "dtype" (torch name) -> safetensors tag of the stored codebook
CODEBOOK_DTYPES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64"}

_TOP_KEYS = {"format_version", "library_version", "schemes", "ties", "model", "extra"}
_SCHEME_KEYS = {"kind", "bits", "granularity", "group_size", "axis", "shape", "dtype"}
_SCHEME_OPTIONAL = {"codebook_from"}


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the safetensors header: dtype tag, shape and byte range in the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def codebook_name(fqn: str) -> str:
    """Tensor name of the codebook of codebook weight ``fqn``."""
    return f"{fqn}.codebook"


def codes_name(fqn: str) -> str:
    """Tensor name of the packed codes of codebook weight ``fqn``."""
    return f"{fqn}.codes"


def _q(name: Any) -> str:
    """A name from the file, quoted and cut short: a hostile file may hold huge names."""
    text = repr(name)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(x: Any) -> bool:
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
    bad = f"{p}: header entry for tensor {_q(name)} is corrupt"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise FormatError(f"{bad} (needs exactly dtype, shape, data_offsets); save it again")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise FormatError(f"{p}: tensor {_q(name)} has unsupported dtype {_q(dtype)}; "
                          f"supported: {', '.join(DTYPE_SIZES)}")
    if (not isinstance(shape, list) or len(shape) > 2 * MAX_NDIM
            or not all(_is_int(d) and d >= 0 for d in shape)):
        raise FormatError(f"{bad} (shape {str(shape)[:80]}); save it again")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(_is_int(o) for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
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
            raise FormatError(f"{p}: tensor {_q(info.name)} starts at byte {info.begin}, expected "
                              f"{cursor} (overlap or gap); the file is corrupt")
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


def validate_metadata(meta: dict, tensors: dict[str, TensorInfo] | None = None,
                      path: str | os.PathLike = "<metadata>") -> dict:
    """Check every field of ``meta`` (and, given the tensor table, every tensor); return it.

    Raises FormatError naming the first problem. The returned dict has ``extra``
    filled in (``{}``) when absent.
    """
    p = str(path)
    version = meta.get("format_version")
    if not _is_int(version):
        raise FormatError(f"{p}: format_version is {str(version)[:40]!r}, not an integer; "
                          "the file is corrupt")
    if version not in SUPPORTED_VERSIONS:
        raise FormatError(f"{p} uses weightshare format_version {version}, this weightshare reads "
                          f"{', '.join(map(str, SUPPORTED_VERSIONS))}; upgrade weightshare "
                          "(pip install -U weightshare)")
    unknown = set(meta) - _TOP_KEYS
    missing = (_TOP_KEYS - {"extra"}) - set(meta)
    if unknown or missing:
        raise FormatError(f"{p}: metadata keys wrong (unknown: {_q(sorted(unknown)[:5])}, "
                          f"missing: {sorted(missing)}); the file is corrupt")
    if not isinstance(meta["library_version"], str):
        raise FormatError(f"{p}: library_version must be a string; the file is corrupt")
    meta.setdefault("extra", {})
    if not isinstance(meta["extra"], dict):
        raise FormatError(f"{p}: extra must be a JSON object; the file is corrupt")
    _check_model(p, meta["model"])
    schemes = meta["schemes"]
    if not isinstance(schemes, dict):
        raise FormatError(f"{p}: schemes must be a JSON object; the file is corrupt")
    for fqn, scheme in schemes.items():
        _check_scheme(p, fqn, scheme)
    for fqn, scheme in schemes.items():
        _check_codebook_from(p, fqn, scheme, schemes)
    if tensors is not None:
        _check_tensors(p, schemes, tensors)
    _check_ties(p, meta["ties"], schemes, tensors)
    return meta


def _check_model(p: str, model: Any) -> None:
    if not isinstance(model, dict) or model.get("source") not in MODEL_SOURCES:
        src = model.get("source") if isinstance(model, dict) else model
        raise FormatError(f"{p}: model.source is {str(src)[:60]!r}, expected one of "
                          f"{list(MODEL_SOURCES)}; the file is corrupt or needs a newer "
                          "weightshare")
    allowed = {"source", "class", "config"} if model["source"] == "transformers" else {
        "source", "class"}
    cls = model.get("class")
    if set(model) != allowed or not isinstance(cls, str) or not cls:
        raise FormatError(f"{p}: model entry must have exactly {sorted(allowed)} with a non-empty "
                          f"class name, got keys {_q(sorted(model)[:5])}; the file is corrupt")
    if model["source"] == "transformers":
        # the class name is looked up in transformers: an identifier, never a dotted path
        if not cls.isidentifier():
            raise FormatError(f"{p}: model.class {cls[:60]!r} is not a class name; the file is "
                              "corrupt")
        if not isinstance(model["config"], dict):
            raise FormatError(f"{p}: model.config must be a JSON object; the file is corrupt")


def _check_scheme(p: str, fqn: str, s: Any) -> None:
    where = f"{p}: scheme of {_q(fqn)}"
    if not fqn or not isinstance(s, dict):
        raise FormatError(f"{where} is not a JSON object; the file is corrupt")
    if s.get("kind") not in SCHEME_KINDS:
        raise FormatError(f"{where} has kind {str(s.get('kind'))[:40]!r}, this weightshare knows "
                          f"{list(SCHEME_KINDS)}; upgrade weightshare")
    if s["kind"] == "relaxed":
        _check_relaxed_scheme(where, s)
        return
    keys = set(s)
    if not _SCHEME_KEYS <= keys <= _SCHEME_KEYS | _SCHEME_OPTIONAL:
        raise FormatError(f"{where} has keys {_q(sorted(keys)[:10])}, expected "
                          f"{sorted(_SCHEME_KEYS)} (+ optional {sorted(_SCHEME_OPTIONAL)}); "
                          "the file is corrupt")
    bits, shape, axis, gs = s["bits"], s["shape"], s["axis"], s["group_size"]
    if not _is_int(bits) or not 1 <= bits <= 8:
        raise FormatError(f"{where}: bits is {str(bits)[:40]}, must be an integer 1..8; "
                          "the file is corrupt")
    if s["granularity"] not in GRANULARITIES:
        raise FormatError(f"{where}: granularity {str(s['granularity'])[:40]!r} is not one of "
                          f"{list(GRANULARITIES)}; the file is corrupt")
    _check_shape(where, shape)
    if not _is_int(axis) or not 0 <= axis < len(shape):
        raise FormatError(f"{where}: axis {_q(axis)} is not a dimension of shape {shape}; "
                          "the file is corrupt")
    rows = shape[axis]
    expected_gs = {"per_tensor": rows, "per_channel": 1}.get(s["granularity"])
    if (not _is_int(gs) or gs < 1 or rows % gs
            or (expected_gs is not None and gs != expected_gs)):
        raise FormatError(f"{where}: group_size {_q(gs)} does not fit {rows} rows with granularity "
                          f"{s['granularity']}; the file is corrupt")
    if not isinstance(s["dtype"], str) or s["dtype"] not in CODEBOOK_DTYPES:
        raise FormatError(f"{where}: dtype {str(s['dtype'])[:40]!r} is not one of "
                          f"{list(CODEBOOK_DTYPES)}; the file is corrupt")


def _check_shape(where: str, shape: Any) -> None:
    if (not isinstance(shape, list) or not 1 <= len(shape) <= MAX_NDIM
            or not all(_is_int(d) and d >= 1 for d in shape)):
        raise FormatError(f"{where}: shape {str(shape)[:80]} must be 1..{MAX_NDIM} positive "
                          "integers; the file is corrupt")


def _check_relaxed_scheme(where: str, s: dict) -> None:
    """A relaxed weight (tying/relax.py): its tensors are stored dense under their names."""
    shape, rank = s.get("shape"), s.get("rank")
    if set(s) != {"kind", "rank", "shape", "delta", "dtype"} or s["delta"] not in (
            "low_rank", "dense") or s["dtype"] not in CODEBOOK_DTYPES:
        raise FormatError(f"{where} must have kind, rank, shape, delta (low_rank|dense) and a "
                          f"float dtype, got {_q(sorted(s)[:10])}; the file is corrupt")
    _check_shape(where, shape)
    low_rank = s["delta"] == "low_rank"
    limit = min(shape[0], math.prod(shape[1:])) if len(shape) >= 2 else 0
    if not _is_int(rank) or (low_rank and not 1 <= rank <= limit) or (not low_rank and rank):
        raise FormatError(f"{where}: rank {_q(rank)} does not fit shape {shape} and delta "
                          f"{s['delta']}; the file is corrupt")


def groups_of(scheme: dict) -> int:
    """Number of codebooks (rows of the codebook tensor) of a validated scheme."""
    return scheme["shape"][scheme["axis"]] // scheme["group_size"]


def _check_codebook_from(p: str, fqn: str, s: dict, schemes: dict) -> None:
    if "codebook_from" not in s:
        return
    src = s["codebook_from"]
    other = schemes.get(src) if isinstance(src, str) else None
    if other is None or other.get("kind") != "codebook" or "codebook_from" in other or src == fqn:
        raise FormatError(f"{p}: {_q(fqn)} takes its codebook from {_q(src)}, which is not "
                          "a codebook weight that stores its own codebook; the file is corrupt")
    if (other["bits"], other["dtype"], groups_of(other)) != (s["bits"], s["dtype"], groups_of(s)):
        raise FormatError(f"{p}: {_q(fqn)} shares the codebook of {_q(src)} but bits, dtype or "
                          "number of groups differ; the file is corrupt")


def _check_tensors(p: str, schemes: dict, tensors: dict[str, TensorInfo]) -> None:
    parts: set[str] = set()
    for fqn, s in schemes.items():
        if s["kind"] != "codebook":  # relaxed weights: plain tensors, checked on placement
            continue
        numel = math.prod(s["shape"])
        codes = tensors.get(codes_name(fqn))
        want = packed_length(numel, s["bits"])
        if codes is None or codes.dtype != "U8" or codes.shape != (want,):
            got = "missing" if codes is None else f"{codes.dtype} {list(codes.shape)}"
            raise FormatError(f"{p}: codes of {_q(fqn)} must be U8 [{want}] ({numel} codes of "
                              f"{s['bits']} bits), got {got}; the file is corrupt")
        parts.add(codes_name(fqn))
        cb = tensors.get(codebook_name(fqn))
        if "codebook_from" in s:
            if cb is not None:
                raise FormatError(f"{p}: stray tensor {_q(codebook_name(fqn))}: {_q(fqn)} shares "
                                  f"the codebook of {_q(s['codebook_from'])}; the file is corrupt")
            continue
        want_cb = (groups_of(s), 1 << s["bits"])
        tag = CODEBOOK_DTYPES[s["dtype"]]
        if cb is None or cb.dtype != tag or cb.shape != want_cb:
            got = "missing" if cb is None else f"{cb.dtype} {list(cb.shape)}"
            raise FormatError(f"{p}: codebook of {_q(fqn)} must be {tag} {list(want_cb)}, got "
                              f"{got}; the file is corrupt")
        parts.add(codebook_name(fqn))
    for name in tensors:
        if name in parts:
            continue
        if name in schemes:
            raise FormatError(f"{p}: {_q(name)} is stored both dense and as a codebook weight; "
                              "the file is corrupt")
        owner = next((f for f in schemes if name.startswith(f + ".")), None)
        if owner is not None:
            raise FormatError(f"{p}: stray tensor {_q(name)} next to codebook weight {_q(owner)}; "
                              "the file is corrupt")


def dense_tensor_names(meta: dict, tensors: dict[str, TensorInfo]) -> list[str]:
    """Names of the dense tensors of a validated file (every tensor that is no codebook part)."""
    parts = {codes_name(f) for f in meta["schemes"]} | {codebook_name(f) for f in meta["schemes"]}
    return [n for n in tensors if n not in parts]


def _check_ties(p: str, ties: Any, schemes: dict, tensors: dict[str, TensorInfo] | None) -> None:
    if not isinstance(ties, dict):
        raise FormatError(f"{p}: ties must be a JSON object; the file is corrupt")
    dense = None if tensors is None else set(dense_tensor_names({"schemes": schemes}, tensors))
    for alias, source in ties.items():
        if not isinstance(source, str) or not alias or alias == source:
            raise FormatError(f"{p}: tie {_q(alias)} -> {_q(source)} is invalid; "
                              "the file is corrupt")
        if source in ties:
            raise FormatError(f"{p}: tie source {_q(source)} is itself an alias (chains are not "
                              "allowed); the file is corrupt")
        if source not in schemes and dense is not None and source not in dense:
            raise FormatError(f"{p}: tie {_q(alias)} -> {_q(source)} refers to a tensor the file "
                              "does not store; the file is corrupt")
        if alias in schemes or (tensors is not None and alias in tensors):
            raise FormatError(f"{p}: tie alias {_q(alias)} is also stored; the file is corrupt")
