"""Saving weightshare files: one safetensors file, shared weights stored once as their
parts, codes bit-packed, ties stored once (docs/format.md is the specification).

Saving is generic over the shared-weight protocol: every shared weight contributes its
``scheme`` and its parts, whatever its kind.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

from ..core.baseline import baseline_extra
from ..core.protocol import (
    PartSpec,
    dtype_name,
    foreign_parametrization,
    iter_shared,
    parametrized_attrs,
)
from ..core.ties import require_ties
from ..errors import FormatError, SaveError, TieError
from .atomic import write_atomic
from .bitpack import pack_codes, packed_length
from .container import Entry, from_tensor, header_bytes, tensor_bytes, write_container
from .entropy import CODER, constriction, encode, logical_source, packed_source
from .header import METADATA_KEY, TORCH_DTYPE_TAGS, TensorInfo
from .schema import FORMAT_VERSION, library_version, part_name, validate_metadata

_DROP = object()  # marks values jsonable() leaves out


def check_output_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or SaveError if a file cannot be written there (checked before
    long work, so that a bad ``-o`` fails at once)."""
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise SaveError(f"directory {parent} does not exist; create it or choose another -o path")
    if path.is_dir():
        raise SaveError(f"{path} is a directory; choose a file path such as "
                        f"{path / 'model.safetensors'}")
    return path


def save(model: nn.Module, path: str | os.PathLike, *, extra: dict | None = None,
         entropy: bool = False) -> Path:
    """Write ``model`` to one safetensors file at ``path``, atomically; return the path.

    Each shared weight is stored as its parts (``<fqn>.codebook`` + bit-packed
    ``<fqn>.codes`` for a codebook weight), tied tensors once under their source name,
    everything else under its state_dict name, each tensor with its checksum. With
    ``entropy=True`` every part of codes is entropy-coded where that makes it smaller
    (decoded exactly on loading). ``extra`` is a small JSON-able dict kept in the metadata.
    The same model always gives the same bytes. A model whose recorded ties have split is
    refused (``retie_`` or ``untie_`` it first): the file would silently hold one tie fewer.

    Example:
        >>> import torch, tempfile, os
        >>> from weightshare.io import read_metadata
        >>> m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
        >>> m[1].weight = m[0].weight
        >>> p = save(m, os.path.join(tempfile.mkdtemp(), "m.safetensors"))
        >>> read_metadata(p)["ties"]
        {'1.weight': '0.weight'}
    """
    path = check_output_path(path)
    if extra is not None and not isinstance(extra, dict):
        raise SaveError(f"extra must be a dict, got {type(extra).__name__}; "
                        "pass e.g. {'note': 'x'}")
    if not isinstance(entropy, bool):
        raise SaveError(f"entropy must be True or False, got {entropy!r}")
    if entropy:
        constriction()  # fail before any work when the coder is missing
    try:
        require_ties(model)
    except TieError as e:
        raise SaveError(str(e)) from None
    # the baseline of the model before sharing (core/baseline.py) travels with the file
    entries, meta = _collect(model, {**baseline_extra(model), **(extra or {})}, entropy)
    infos = {n: TensorInfo(n, e.tag, e.shape, 0, e.nbytes) for n, e in entries.items()}
    meta["checksums"] = {n: PLACEHOLDER for n in entries}  # filled in while writing
    try:  # never write a file we could not read back
        validate_metadata(meta, infos, path)
    except FormatError as e:
        raise SaveError(f"refusing to write a file that would not load: {e}") from None
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise SaveError(f"extra is not JSON-serialisable ({e}); pass only str, numbers, lists "
                        "and dicts") from None
    write_atomic(path, lambda f: _write(f, entries, meta))
    return path


PLACEHOLDER = "crc32:00000000"


def _metadata_strings(meta: dict) -> dict[str, str]:
    text = json.dumps(meta, allow_nan=False, sort_keys=True, separators=(",", ":"))
    return {METADATA_KEY: text, "format": "pt"}


def _write(f: BinaryIO, entries: dict[str, Entry], meta: dict) -> None:
    """Header with placeholder checksums (the same length), the data, then the header
    again with the checksums computed while writing."""
    write_container(f, entries, _metadata_strings(meta), meta["checksums"])
    f.seek(0)
    f.write(header_bytes(entries, _metadata_strings(meta)))


def _part_entry(t: torch.Tensor, spec: PartSpec, name: str, packed: torch.Tensor | None,
                entropy: bool, coding: dict) -> Entry:
    """The stored form of one part: as is, bit-packed, or entropy-coded."""
    if spec.bits is None:
        return from_tensor(_stored(t.to(getattr(torch, spec.dtype)), name),
                           TORCH_DTYPE_TAGS[spec.dtype])
    bits = spec.bits
    if packed is not None:  # the weight holds it bit-packed already (a runtime form)
        stream = packed.detach().cpu().reshape(-1)
        if stream.dtype != torch.uint8 or stream.numel() != packed_length(spec.numel, bits):
            raise SaveError(f"{name}: the bit-packed part holds {stream.numel()} {stream.dtype} "
                            f"values, not {packed_length(spec.numel, bits)} bytes")
        source = packed_source(stream, bits, spec.numel)
    else:
        if tuple(t.shape) != spec.shape:
            raise SaveError(f"{name}: part has shape {list(t.shape)}, its scheme says "
                            f"{list(spec.shape)}")
        source = logical_source(t)
    if entropy:
        coded = encode(source, bits, spec.numel)
        if coded.blob.size < packed_length(spec.numel, bits):
            coding[name] = {"coder": CODER, "words": coded.words}
            blob = torch.from_numpy(coded.blob)
            return Entry("U8", (blob.numel(),), blob.numel(), lambda: tensor_bytes(blob))
    if packed is not None:
        return Entry("U8", (stream.numel(),), stream.numel(), lambda: tensor_bytes(stream))
    return Entry("U8", (packed_length(spec.numel, bits),), packed_length(spec.numel, bits),
                 lambda: tensor_bytes(pack_codes(t, bits)))


def _stored(t: torch.Tensor, name: str) -> torch.Tensor:
    """A CPU, contiguous tensor (never one of the meta device)."""
    if t.is_meta:
        raise SaveError(f"{name} is on the meta device; load or initialise it before saving")
    if dtype_name(t.dtype) not in TORCH_DTYPE_TAGS:
        raise SaveError(f"{name} has dtype {t.dtype}, which safetensors cannot store; convert "
                        "it (e.g. .float()) before saving")
    return t.detach().cpu().contiguous()


def _collect(model: nn.Module, extra: dict, entropy: bool) -> tuple[dict[str, Entry], dict]:
    for fqn, module, attr in parametrized_attrs(model):
        kinds = foreign_parametrization(module, attr)
        if kinds is not None:
            raise SaveError(f"{fqn} uses parametrization(s) {kinds}, which the weightshare format "
                            "cannot store; remove them (parametrize.remove_parametrizations) "
                            "first")
    entries: dict[str, Entry] = {}
    schemes: dict[str, dict] = {}
    ties: dict[str, str] = {}
    coding: dict[str, dict] = {}
    first: dict[int, str] = {}  # id(tensor) -> the name it is stored under
    weights: dict[tuple[int, int], str] = {}  # (id(weight), id(original)) -> fqn
    alive: list[dict[str, torch.Tensor]] = []  # every part seen, until `first` is done
    for fqn, _module, _attr, weight, original in iter_shared(model, remove_duplicate=False):
        key = (id(weight), id(original))
        if key in weights:  # the same shared weight in another module: a tie
            ties[fqn] = weights[key]
            continue
        weights[key] = fqn
        scheme = weight.scheme(original)
        specs = type(weight).part_specs(scheme)
        schemes[fqn] = {**scheme, "version": type(weight).version}
        packed = weight.packed_parts()
        own = {} if set(packed) >= set(specs) - {weight.original_part} else weight.parts()
        alive.append(packed)  # packed_parts()/parts() may build new tensors: keep them
        alive.append(own)  # alive so that no id() in `first` is reused by a later one
        for part, spec in specs.items():
            name = part_name(fqn, part)
            t = original if part == weight.original_part else packed.get(part, own.get(part))
            if t is None:
                raise SaveError(f"{fqn} ({weight.kind}) does not hold its part {part!r}")
            if id(t) in first:  # stored already (a codebook shared across layers, ...)
                ties[name] = first[id(t)]
                continue
            first[id(t)] = name
            if t.is_meta:
                raise SaveError(f"{fqn} is on the meta device; load or initialise it before "
                                "saving")
            entries[name] = _part_entry(t, spec, name, packed.get(part), entropy, coding)
    for name, t in model.state_dict(keep_vars=True).items():
        if ".parametrizations." in f".{name}":  # held by a shared weight: stored above
            continue
        if id(t) in first:
            ties[name] = first[id(t)]
            continue
        first[id(t)] = name
        stored = _stored(t, name)
        entries[name] = from_tensor(stored, TORCH_DTYPE_TAGS[dtype_name(stored.dtype)])
    meta = {
        "format_version": FORMAT_VERSION,
        "library_version": library_version(),
        "schemes": schemes,
        "ties": ties,
        "model": _model_entry(model),
        "extra": extra,
        "coding": coding,
    }
    return entries, meta


def _model_entry(model: nn.Module) -> dict:
    tf = sys.modules.get("transformers")  # a transformers model implies it is imported
    if tf is not None and isinstance(model, tf.PreTrainedModel):
        return {"source": "transformers", "class": type(model).__name__,
                "config": jsonable(model.config.to_dict())}
    cls = type(model)
    return {"source": "torch", "class": f"{cls.__module__}.{cls.__qualname__}"}


def jsonable(obj: Any) -> Any:
    """A JSON-encodable copy of ``obj``: dicts, lists, str, finite numbers, bools, None.

    torch dtypes become their name ("float32"); tuples and sets become lists;
    NaN/inf and anything else json cannot encode are dropped (None in a list).

    Example:
        >>> import torch
        >>> jsonable({"dtype": torch.float16, "ids": (1, 2), "f": print, "x": float("nan")})
        {'dtype': 'float16', 'ids': [1, 2]}
    """
    out = _jsonable(obj, 0)
    return None if out is _DROP else out


def _jsonable(obj: Any, _depth: int) -> Any:
    if _depth > 64:
        return _DROP
    if isinstance(obj, np.generic):  # numpy scalars in configs
        obj = obj.item()
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else _DROP
    if type(obj).__module__ == "torch" and type(obj).__name__ == "dtype":
        return str(obj).removeprefix("torch.")
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, (str, int, float, bool)):
                value = _jsonable(v, _depth + 1)
                if value is not _DROP:
                    out[str(k)] = value
        return out
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [_jsonable(v, _depth + 1) for v in obj]
        return [None if v is _DROP else v for v in items]
    return _DROP
