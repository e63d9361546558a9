"""The weightshare metadata and its validation (docs/format.md is the specification).

:func:`validate_metadata` checks every field of the ``weightshare`` metadata against
the tensor table before a single tensor is read or a model touched: the kind of every
shared weight (through the registry: this module names no kind), the tensors each
kind declares it stores, their dtypes, shapes and packing, and the ties. A reader
that got past it can trust every shape, length and name it uses.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import Any

from ..core.protocol import DTYPE_BYTES, MAX_CODE_BITS, PartSpec, SharedWeight
from ..core.registry import weight_class
from ..errors import FormatError
from .bitpack import packed_length
from .entropy import CODER, check_blob
from .header import MAX_NDIM, TORCH_DTYPE_TAGS, TensorInfo, is_int, quote

FORMAT_VERSION = 3
SUPPORTED_VERSIONS = (1, 2, 3)  # versions 1 and 2 are upgraded on reading (upgrade.py)
MODEL_SOURCES = ("transformers", "torch")
_TOP_KEYS = {"format_version", "library_version", "schemes", "ties", "model", "extra",
             "checksums", "coding"}
_CHECKSUM = re.compile(r"crc32:[0-9a-f]{8}")


@dataclass(frozen=True)
class Layout:
    """What a validated file holds: per shared weight its class and part specs; the names of
    the dense tensors; the slot (stored tensor) each part comes from; the checksum of every
    stored tensor (None for files of format version 1 and 2, which had none) and the coding
    of the entropy-coded ones."""

    weights: dict[str, type[SharedWeight]]
    specs: dict[str, dict[str, PartSpec]]
    dense: list[str]
    parts: dict[str, PartSpec]  # part tensor name -> spec
    checksums: dict[str, str] | None = None
    coding: dict[str, dict[str, Any]] = field(default_factory=dict)

    def slot(self, fqn: str, part: str, ties: dict[str, str]) -> str:
        """The stored tensor that holds ``part`` of weight ``fqn`` (its own, or a tie's)."""
        name = part_name(fqn, part)
        return ties.get(name, name)


def part_name(fqn: str, part: str) -> str:
    """Tensor name of ``part`` of shared weight ``fqn``: ``<fqn>.<part>``."""
    return f"{fqn}.{part}"


def scheme_body(scheme: dict) -> dict:
    """A stored scheme without the fields the io layer adds (``version``)."""
    return {k: v for k, v in scheme.items() if k != "version"}


def library_version() -> str:
    """The version of this weightshare ("0+unknown" when it is not installed)."""
    version = getattr(sys.modules.get("weightshare"), "__version__", None)
    if isinstance(version, str):
        return version
    try:
        from importlib.metadata import version as dist_version

        return dist_version("weightshare")
    except Exception:  # not installed as a distribution (e.g. PYTHONPATH=src)
        return "0+unknown"


def writer(meta: dict) -> str:
    """'weightshare X' naming the library that wrote a file, as far as it says ('a newer
    weightshare' when it does not, or names this very version)."""
    lib = meta.get("library_version")
    if isinstance(lib, str) and lib and len(lib) <= 40 and lib != library_version():
        return f"weightshare {lib}"
    return "a newer weightshare"


def check_version(meta: dict, path: Any) -> int:
    """The file's format version; FormatError naming who can read it when it is not one
    this weightshare reads."""
    version = meta.get("format_version")
    if not is_int(version):
        raise FormatError(f"{path}: format_version is {str(version)[:40]!r}, not an integer; "
                          "the file is corrupt")
    if version not in SUPPORTED_VERSIONS:
        raise FormatError(f"{path} has format_version {version}, written by {writer(meta)}; this "
                          f"weightshare reads format versions {SUPPORTED_VERSIONS[0]} to "
                          f"{SUPPORTED_VERSIONS[-1]}: open it with {writer(meta)} or later "
                          "(pip install -U weightshare)")
    return version


def validate_metadata(meta: dict, tensors: dict[str, TensorInfo] | None = None,
                      path: Any = "<metadata>", *, legacy: bool = False) -> Layout:
    """Check every field of ``meta`` (and, given the tensor table, every tensor).

    Returns the file's :class:`Layout`; raises FormatError naming the first problem. Fills
    ``meta["extra"]`` with ``{}`` when absent. ``legacy``: the metadata was upgraded from
    a format version without checksums (they are then not required).
    """
    p = str(path)
    if check_version(meta, p) != FORMAT_VERSION:
        raise FormatError(f"{p}: format_version {meta['format_version']} must be upgraded "
                          "before it is validated (internal error)")
    unknown = set(meta) - _TOP_KEYS
    missing = (_TOP_KEYS - {"extra"}) - set(meta)
    if unknown or missing:
        raise FormatError(f"{p}: metadata keys wrong (unknown: {quote(sorted(unknown)[:5])}, "
                          f"missing: {sorted(missing)}); the file is corrupt")
    if not isinstance(meta["library_version"], str):
        raise FormatError(f"{p}: library_version must be a string; the file is corrupt")
    meta.setdefault("extra", {})
    if not isinstance(meta["extra"], dict):
        raise FormatError(f"{p}: extra must be a JSON object; the file is corrupt")
    _check_model(p, meta["model"])
    schemes, ties = meta["schemes"], meta["ties"]
    if not isinstance(schemes, dict):
        raise FormatError(f"{p}: schemes must be a JSON object; the file is corrupt")
    if not isinstance(ties, dict) or not all(isinstance(v, str) for v in ties.values()):
        raise FormatError(f"{p}: ties must be a JSON object of names; the file is corrupt")
    weights: dict[str, type[SharedWeight]] = {}
    specs: dict[str, dict[str, PartSpec]] = {}
    for fqn, scheme in schemes.items():
        weights[fqn], specs[fqn] = _check_scheme(p, fqn, scheme, meta)
    parts = {part_name(f, part): spec for f, s in specs.items() for part, spec in s.items()}
    dense = [] if tensors is None else [n for n in tensors if n not in parts]
    checksums = None if legacy else _check_checksums(p, meta["checksums"], tensors)
    coding = _check_coding(p, meta, parts, tensors)
    layout = Layout(weights, specs, dense, parts, checksums, coding)
    if tensors is not None:
        _check_tensors(p, layout, tensors, ties)
    _check_ties(p, layout, tensors, ties, schemes)
    return layout


def _check_checksums(p: str, checksums: Any,
                     tensors: dict[str, TensorInfo] | None) -> dict[str, str]:
    if not isinstance(checksums, dict) or not all(
            isinstance(v, str) and _CHECKSUM.fullmatch(v) for v in checksums.values()):
        raise FormatError(f"{p}: checksums must map tensor names to 'crc32:' + 8 hex digits; the "
                          "file is corrupt")
    if tensors is not None and set(checksums) != set(tensors):
        odd = sorted(set(checksums) ^ set(tensors))[:3]
        raise FormatError(f"{p}: the checksums do not list exactly the stored tensors (e.g. "
                          f"{quote(odd)}); the file is corrupt")
    return checksums


def _check_coding(p: str, meta: dict, parts: dict[str, PartSpec],
                  tensors: dict[str, TensorInfo] | None) -> dict[str, dict[str, Any]]:
    coding = meta["coding"]
    if not isinstance(coding, dict):
        raise FormatError(f"{p}: coding must be a JSON object; the file is corrupt")
    for name, how in coding.items():
        spec = parts.get(name)
        if spec is None or spec.bits is None or (tensors is not None and name not in tensors):
            raise FormatError(f"{p}: coding names {quote(name)}, which is no stored part of codes; "
                              "the file is corrupt")
        if not isinstance(how, dict) or set(how) != {"coder", "words"}:
            raise FormatError(f"{p}: coding of {quote(name)} must have exactly coder and words; "
                              "the file is corrupt")
        if how["coder"] != CODER:
            raise FormatError(f"{p}: {quote(name)} is coded with {quote(how['coder'])}, which this "
                              f"weightshare does not know (it reads {CODER!r}); open it "
                              f"with {writer(meta)} or later (pip install -U weightshare)")
        if tensors is not None:
            info = tensors[name]
            if info.dtype != "U8" or len(info.shape) != 1:
                raise FormatError(f"{p}: coded {quote(name)} must be a 1-D U8 tensor; the file is "
                                  "corrupt")
            check_blob(info.nbytes, spec.bits, spec.numel, how["words"], f"{p}: {name}")
    return coding


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
                          f"class name, got keys {quote(sorted(model)[:5])}; the file is corrupt")
    if model["source"] == "transformers":
        # the class name is looked up in transformers: an identifier, never a dotted path
        if not cls.isidentifier():
            raise FormatError(f"{p}: model.class {cls[:60]!r} is not a class name; the file is "
                              "corrupt")
        if not isinstance(model["config"], dict):
            raise FormatError(f"{p}: model.config must be a JSON object; the file is corrupt")


def _check_scheme(p: str, fqn: str, s: Any,
                  meta: dict) -> tuple[type[SharedWeight], dict[str, PartSpec]]:
    where = f"{p}: scheme of {quote(fqn)}"
    if not fqn or not isinstance(s, dict):
        raise FormatError(f"{where} is not a JSON object; the file is corrupt")
    cls = weight_class(s.get("kind"), where=where)
    version = s.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise FormatError(f"{where}: version {str(version)[:20]!r} is not a positive integer; "
                          "the file is corrupt")
    if version > cls.version:
        raise FormatError(f"{where}: kind {cls.kind!r} version {version} was written by "
                          f"{writer(meta)}; this weightshare reads {cls.kind!r} up to version "
                          f"{cls.version}: open it with {writer(meta)} or later "
                          "(pip install -U weightshare)")
    body = scheme_body(s)
    try:
        shape = body.get("shape")
        if (not isinstance(shape, list) or not 1 <= len(shape) <= MAX_NDIM
                or not all(is_int(d) and d >= 1 for d in shape)):
            raise FormatError(f"shape {str(shape)[:80]} must be 1..{MAX_NDIM} positive integers")
        cls.check_scheme(body)
        specs = cls.part_specs(body)
        if cls.original_part not in specs:
            raise FormatError(f"declares no {cls.original_part!r} part")
        for part, spec in specs.items():
            _check_spec(part, spec)
    except FormatError as e:
        raise FormatError(f"{where}: {e}; the file is corrupt") from None
    except Exception as e:  # a kind's own checks: whatever they raise, the file is at fault
        raise FormatError(f"{where} is invalid ({type(e).__name__}: {str(e)[:80]}); the file "
                          "is corrupt") from None
    return cls, specs


def _check_spec(part: str, spec: PartSpec) -> None:
    if not isinstance(spec, PartSpec) or spec.dtype not in DTYPE_BYTES:
        raise FormatError(f"part {part!r} has an unknown dtype")
    if not 1 <= len(spec.shape) <= MAX_NDIM or not all(is_int(d) and d >= 1 for d in spec.shape):
        raise FormatError(f"part {part!r} has shape {list(spec.shape)[:8]}, not 1..{MAX_NDIM} "
                          "positive integers")
    if spec.bits is not None and (not is_int(spec.bits) or not 1 <= spec.bits <= MAX_CODE_BITS
                                  or spec.is_float):
        raise FormatError(f"part {part!r} packs {spec.dtype} at {spec.bits} bits")


def stored_shape(spec: PartSpec) -> tuple[str, tuple[int, ...]]:
    """(safetensors dtype tag, shape) a part is stored with."""
    if spec.bits is not None:
        return "U8", (packed_length(spec.numel, spec.bits),)
    return TORCH_DTYPE_TAGS[spec.dtype], spec.shape


def _check_tensors(p: str, layout: Layout, tensors: dict[str, TensorInfo],
                   ties: dict[str, str]) -> None:
    for fqn, specs in layout.specs.items():
        cls = layout.weights[fqn]
        for part, spec in specs.items():
            name = part_name(fqn, part)
            info = tensors.get(name)
            if info is None:
                if part == cls.original_part and name in ties:
                    continue  # an original shared with another weight: checked with the ties
                raise FormatError(f"{p}: {quote(fqn)} lacks its tensor {quote(name)}; the file "
                                  "is corrupt")
            if name in layout.coding:
                continue  # checked with the coding
            tag, shape = stored_shape(spec)
            if (info.dtype, info.shape) != (tag, shape):
                raise FormatError(f"{p}: {quote(name)} must be {tag} {list(shape)}, got "
                                  f"{info.dtype} {list(info.shape)}; the file is corrupt")
    for name in layout.dense:
        if name in layout.weights:
            raise FormatError(f"{p}: {quote(name)} is stored both dense and as a shared weight; "
                              "the file is corrupt")
        owner = next((f for f in layout.weights if name.startswith(f + ".")), None)
        if owner is not None:
            raise FormatError(f"{p}: stray tensor {quote(name)} next to shared weight "
                              f"{quote(owner)}; the file is corrupt")


def _logical(name: str, parts: dict[str, PartSpec],
             tensors: dict[str, TensorInfo] | None) -> tuple[str, tuple[int, ...]] | None:
    """(dtype tag, shape) of the tensor a stored slot holds once unpacked, None if unknown."""
    if name in parts:
        return TORCH_DTYPE_TAGS[parts[name].dtype], parts[name].shape
    if tensors is not None and name in tensors:
        return tensors[name].dtype, tensors[name].shape
    return None


def _check_ties(p: str, layout: Layout, tensors: dict[str, TensorInfo] | None,
                ties: dict[str, str], schemes: dict) -> None:
    parts = layout.parts
    originals = {part_name(f, layout.weights[f].original_part) for f in layout.weights}
    stored = set(tensors) if tensors is not None else None
    for alias, source in ties.items():
        if not alias or alias == source:
            raise FormatError(f"{p}: tie {quote(alias)} -> {quote(source)} is invalid; "
                              "the file is corrupt")
        if source in ties:
            raise FormatError(f"{p}: tie source {quote(source)} is itself an alias (chains are not "
                              "allowed); the file is corrupt")
        if alias in schemes or (stored is not None and alias in stored):
            raise FormatError(f"{p}: tie alias {quote(alias)} is also stored; the file is corrupt")
        if source in schemes:  # a whole shared weight registered twice
            if alias in parts:
                raise FormatError(f"{p}: tie {quote(alias)} -> {quote(source)} joins a tensor to "
                                  "a whole shared weight; the file is corrupt")
            continue
        if stored is not None and source not in stored:
            raise FormatError(f"{p}: tie {quote(alias)} -> {quote(source)} refers to a tensor the "
                              "file does not store; the file is corrupt")
        if alias in parts and alias not in originals:
            raise FormatError(f"{p}: tie alias {quote(alias)} is a part a shared weight must store "
                              "itself; the file is corrupt")
        want = _logical(alias, parts, tensors)
        got = _logical(source, parts, tensors)
        if alias in parts and got is not None and want != got:
            raise FormatError(f"{p}: tie {quote(alias)} -> {quote(source)} joins tensors of "
                              f"different dtype or shape ({want} vs {got}); the file is corrupt")
        if stored is not None and alias not in parts and any(
                alias.startswith(f + ".") for f in layout.weights):
            raise FormatError(f"{p}: tie alias {quote(alias)} is inside shared weight; the file "
                              "is corrupt")
