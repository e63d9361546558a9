"""Saving weightshare files: one safetensors file, shared weights stored once as their
parts, codes bit-packed, ties stored once (docs/format.md is the specification).

Saving is generic over the shared-weight protocol: every shared weight contributes its
``scheme`` and its parts, whatever its kind.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from ..core.protocol import dtype_name, foreign_parametrization, iter_shared, parametrized_attrs
from ..core.ties import require_ties
from ..errors import FormatError, SaveError, TieError
from .bitpack import pack_codes
from .header import METADATA_KEY, TORCH_DTYPE_TAGS, TensorInfo
from .schema import FORMAT_VERSION, part_name, stored_shape, validate_metadata

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


def save(model: nn.Module, path: str | os.PathLike, *, extra: dict | None = None) -> Path:
    """Write ``model`` to one safetensors file at ``path``, atomically; return the path.

    Each shared weight is stored as its parts (``<fqn>.codebook`` + bit-packed
    ``<fqn>.codes`` for a codebook weight), tied tensors once under their source name,
    everything else under its state_dict name. ``extra`` is a small JSON-able dict kept
    in the metadata. A model whose recorded ties have split is refused (``retie_`` or
    ``untie_`` it first): the file would silently hold one tie fewer.

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
    try:
        require_ties(model)
    except TieError as e:
        raise SaveError(str(e)) from None
    tensors, meta = _collect(model, extra or {})
    infos = {n: TensorInfo(n, TORCH_DTYPE_TAGS[dtype_name(t.dtype)], tuple(t.shape), 0, 0)
             for n, t in tensors.items()}
    try:  # never write a file we could not read back
        validate_metadata(meta, infos, path)
    except FormatError as e:
        raise SaveError(f"refusing to write a file that would not load: {e}") from None
    try:
        text = json.dumps(meta, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise SaveError(f"extra is not JSON-serialisable ({e}); pass only str, numbers, lists "
                        "and dicts") from None
    _write_atomic(path, tensors, {METADATA_KEY: text, "format": "pt"})
    return path


def _stored(t: torch.Tensor, name: str, storages: set[int]) -> torch.Tensor:
    """A CPU, contiguous tensor safetensors accepts (no two sharing memory)."""
    if t.is_meta:
        raise SaveError(f"{name} is on the meta device; load or initialise it before saving")
    if dtype_name(t.dtype) not in TORCH_DTYPE_TAGS:
        raise SaveError(f"{name} has dtype {t.dtype}, which safetensors cannot store; convert "
                        "it (e.g. .float()) before saving")
    t = t.detach().cpu().contiguous()
    ptr = t.untyped_storage().data_ptr()
    if ptr in storages or t.numel() == 0:  # views of one storage: safetensors wants copies
        t = t.clone()
    storages.add(ptr)
    return t


def _collect(model: nn.Module, extra: dict) -> tuple[dict[str, torch.Tensor], dict]:
    for fqn, module, attr in parametrized_attrs(model):
        kinds = foreign_parametrization(module, attr)
        if kinds is not None:
            raise SaveError(f"{fqn} uses parametrization(s) {kinds}, which the weightshare format "
                            "cannot store; remove them (parametrize.remove_parametrizations) "
                            "first")
    tensors: dict[str, torch.Tensor] = {}
    schemes: dict[str, dict] = {}
    ties: dict[str, str] = {}
    first: dict[int, str] = {}  # id(tensor) -> the name it is stored under
    storages: set[int] = set()
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
        own = weight.parts()
        alive.append(own)  # parts() may build new tensors: keep them so no id() is reused
        for part, spec in specs.items():
            name = part_name(fqn, part)
            t = original if part == weight.original_part else own[part]
            if id(t) in first:  # stored already (a codebook shared across layers, ...)
                ties[name] = first[id(t)]
                continue
            first[id(t)] = name
            if t.is_meta:
                raise SaveError(f"{fqn} is on the meta device; load or initialise it before "
                                "saving")
            tensors[name] = pack_codes(t, spec.bits) if spec.bits is not None \
                else _stored(t.to(getattr(torch, spec.dtype)), name, storages)
            assert tuple(tensors[name].shape) == stored_shape(spec)[1], name
    for name, t in model.state_dict(keep_vars=True).items():
        if ".parametrizations." in f".{name}":  # held by a shared weight: stored above
            continue
        if id(t) in first:
            ties[name] = first[id(t)]
            continue
        first[id(t)] = name
        tensors[name] = _stored(t, name, storages)
    meta = {
        "format_version": FORMAT_VERSION,
        "library_version": _library_version(),
        "schemes": schemes,
        "ties": ties,
        "model": _model_entry(model),
        "extra": extra,
    }
    return tensors, meta


def _library_version() -> str:
    version = getattr(sys.modules.get("weightshare"), "__version__", None)
    if isinstance(version, str):
        return version
    try:
        from importlib.metadata import version as dist_version

        return dist_version("weightshare")
    except Exception:  # not installed as a distribution (e.g. PYTHONPATH=src)
        return "0+unknown"


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


def _write_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    # temp file in the same directory, so os.replace is an atomic rename on one file system
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        mode = os.stat(tmp).st_mode & 0o777  # 0666 less the umask, read without os.umask()
    except OSError as e:
        raise SaveError(f"could not write in {path.parent}: {e.strerror or e}; check "
                        "permissions or choose another -o path") from e
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # recent safetensors write through their own 0600 temp file
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise SaveError(f"could not write {path}: {e.strerror or e}; check free space and "
                            "permissions") from e
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


