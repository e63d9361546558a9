"""Save and load weightshare files: one safetensors file, codes bit-packed, ties stored once.

The layout is specified in docs/format.md. ``load`` validates the whole header
and metadata (:mod:`.schema`) before it reads a tensor or builds a model.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import FormatError, ModelLoadError, SaveError
from ..tying.relax import relaxed_of, relaxed_schemes
from ..tying.tiemap import set_tie_map
from .bitpack import pack_codes
from .restore import apply_file, codebook_parts, dense_state, parametrized_weights
from .schema import (
    FORMAT_VERSION,
    METADATA_KEY,
    TORCH_DTYPE_TAGS,
    TensorInfo,
    codebook_name,
    codes_name,
    dense_tensor_names,
    parse_metadata,
    read_header,
    validate_metadata,
)

_DROP = object()  # marks values jsonable() leaves out


# ---------------------------------------------------------------- save

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

    Codebook weights are stored as ``<fqn>.codebook`` + bit-packed ``<fqn>.codes``,
    tied tensors once under their source name, everything else under its
    state_dict name. ``extra`` is a small JSON-able dict kept in the metadata.

    Example:
        >>> import torch, tempfile, os
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
    tensors, meta = _collect(model, extra or {})
    infos = {n: TensorInfo(n, TORCH_DTYPE_TAGS[_dtype_name(t)], tuple(t.shape), 0, 0)
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


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _collect(model: nn.Module, extra: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    schemes: dict[str, dict] = {}
    ties: dict[str, str] = {}
    by_weight: dict[int, tuple[str, int]] = {}  # id(CodebookWeight) -> (fqn, id(codebook))
    by_codebook: dict[int, str] = {}  # id(codebook) -> fqn that stores it
    _, dense = dense_state(model, SaveError)  # also rejects parametrizations we cannot store
    for fqn, _, module, attr in parametrized_weights(model):
        if relaxed_of(module, attr) is not None:  # stored as dense tensors + a scheme
            continue
        cw, codebook = codebook_parts(module, attr, fqn, SaveError)
        seen = by_weight.get(id(cw))
        if seen is not None and seen[1] == id(codebook):  # same codes and codebook: a tie
            ties[fqn] = seen[0]
            continue
        if codebook.is_meta or cw.codes.is_meta:
            raise SaveError(f"{fqn} is on the meta device; load or initialise it before saving")
        by_weight.setdefault(id(cw), (fqn, id(codebook)))
        scheme = dict(cw.scheme(), dtype=_dtype_name(codebook))
        scheme["axis"] = scheme["axis"] % cw.codes.dim()
        tensors[codes_name(fqn)] = pack_codes(cw.codes, cw.bits)
        if id(codebook) in by_codebook:  # one codebook, other codes: shared across layers
            scheme["codebook_from"] = by_codebook[id(codebook)]
        else:
            by_codebook[id(codebook)] = fqn
            tensors[codebook_name(fqn)] = codebook.detach().cpu().contiguous().clone()
        schemes[fqn] = scheme
    schemes.update(relaxed_schemes(model))
    first: dict[int, str] = {}
    storages: set[int] = set()
    for name, t in dense.items():
        if id(t) in first:
            ties[name] = first[id(t)]
            continue
        first[id(t)] = name
        if t.is_meta:
            raise SaveError(f"{name} is on the meta device; load or initialise it before saving")
        if _dtype_name(t) not in TORCH_DTYPE_TAGS:
            raise SaveError(f"{name} has dtype {t.dtype}, which safetensors cannot store; convert "
                            "it (e.g. .float()) before saving")
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in storages or t.numel() == 0:  # views of one storage: safetensors wants copies
            t = t.clone()
        storages.add(ptr)
        tensors[name] = t
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


# ---------------------------------------------------------------- read

def _read_validated(path: str | os.PathLike) -> tuple[dict, dict[str, TensorInfo]]:
    infos, strings = read_header(path)
    meta = validate_metadata(parse_metadata(path, strings), infos, path)
    return meta, infos


def read_metadata(path: str | os.PathLike) -> dict:
    """The validated ``weightshare`` metadata of a file; no tensor is read.

    Example:
        >>> meta = read_metadata("model.safetensors")  # doctest: +SKIP
        >>> meta["format_version"], sorted(meta["schemes"])  # doctest: +SKIP
        (1, ['encoder.layer.0.attention.self.query.weight', ...])
    """
    return _read_validated(path)[0]


class StoredTensors(Mapping):
    """The tensors of a validated weightshare file, read one at a time on access.

    ``infos[name]`` gives dtype, shape and stored bytes without reading any data.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.metadata, self.infos = _read_validated(path)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.infos:
            raise KeyError(name)
        return _read_tensors(self.path, {name: self.infos[name]})[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.infos)

    def __len__(self) -> int:
        return len(self.infos)


def read_tensors(path: str | os.PathLike) -> StoredTensors:
    """A lazy ``{name: tensor}`` mapping of the tensors stored in a weightshare file.

    Example:
        >>> stored = read_tensors("model.safetensors")  # doctest: +SKIP
        >>> sum(info.nbytes for info in stored.infos.values())  # doctest: +SKIP
        8123456
    """
    return StoredTensors(path)


def _read_tensors(path: Path, infos: dict[str, TensorInfo]) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as f:
            out = {name: f.get_tensor(name) for name in infos}
    except (SafetensorError, OSError, RuntimeError, ValueError, KeyError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FormatError(f"{path} could not be read ({first[:120]}); the file is truncated or "
                          "corrupt, save it again") from None
    for name, t in out.items():  # the file may have changed since it was validated
        if tuple(t.shape) != infos[name].shape:
            raise FormatError(f"{path} changed while it was read ({name}); load it again")
    return out


# ---------------------------------------------------------------- load


def load(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """Load a weightshare file into ``model`` (or a model rebuilt from its config); eval mode.

    Everything is validated before anything is built. Codebook weights come back
    as codebook parametrizations, ties as one shared Parameter, bit-identical.

    Example:
        >>> import torch, tempfile, os
        >>> m = torch.nn.Linear(3, 2)
        >>> p = save(m, os.path.join(tempfile.mkdtemp(), "m.safetensors"))
        >>> torch.equal(load(p, torch.nn.Linear(3, 2)).weight, m.weight)
        True
    """
    meta, infos = _read_validated(path)
    if model is None:
        model = _build_model(meta, path)
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"model must be a torch.nn.Module, got {type(model).__name__}; pass "
                             "the skeleton to load into")
    tensors = _read_tensors(Path(path), infos)
    ties = apply_file(model, meta, tensors, dense_tensor_names(meta, infos), str(path))
    set_tie_map(model, ties)
    return model.eval()


def _build_model(meta: dict, path: str | os.PathLike) -> nn.Module:
    entry = meta["model"]
    if entry["source"] != "transformers":
        raise FormatError(f"{path} holds a plain torch model ({entry['class'][:80]}); pass "
                          "model= the skeleton to load into, e.g. load(path, model=MyNet())")
    try:
        from ..models import model_from_config
    except ImportError as e:
        raise ModelLoadError(f"cannot rebuild {entry['class']} ({e}); install weightshare[hf] or "
                             "pass model= the skeleton to load into") from None
    return model_from_config(entry["class"], entry["config"])


__all__ = ["SaveError", "StoredTensors", "load", "read_metadata", "read_tensors", "save"]
