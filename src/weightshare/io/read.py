"""Reading weightshare files: the validated metadata and the tensors, nothing built yet."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..core.protocol import PartSpec
from ..errors import FormatError
from .bitpack import unpack_codes
from .header import TensorInfo, parse_metadata, read_header
from .schema import Layout, validate_metadata
from .upgrade import upgrade


def read_validated(path: str | os.PathLike) -> tuple[dict, dict[str, TensorInfo], Layout]:
    """(metadata, tensor table, layout) of a file, every field checked; no tensor read.
    Files of an older format version come back in the current form."""
    infos, strings = read_header(path)
    meta, infos = upgrade(parse_metadata(path, strings), infos, str(path))
    layout = validate_metadata(meta, infos, path)
    return meta, infos, layout


def read_metadata(path: str | os.PathLike) -> dict:
    """The validated ``weightshare`` metadata of a file; no tensor is read.

    Example:
        >>> meta = read_metadata("model.safetensors")  # doctest: +SKIP
        >>> meta["format_version"], sorted(meta["schemes"])  # doctest: +SKIP
        (2, ['encoder.layer.0.attention.self.query.weight', ...])
    """
    return read_validated(path)[0]


def read_raw(path: Path, infos: dict[str, TensorInfo]) -> dict[str, torch.Tensor]:
    """The tensors of ``infos`` as stored (packed parts still packed)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            out = {name: f.get_tensor(info.stored_as) for name, info in infos.items()}
    except (SafetensorError, OSError, RuntimeError, ValueError, KeyError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FormatError(f"{path} could not be read ({first[:120]}); the file is truncated or "
                          "corrupt, save it again") from None
    for name, t in out.items():  # the file may have changed since it was validated
        if tuple(t.shape) != infos[name].shape:
            raise FormatError(f"{path} changed while it was read ({name}); load it again")
    return out


def unpack_part(stored: torch.Tensor, spec: PartSpec) -> torch.Tensor:
    """A stored part in its logical form: packed codes unpacked to the spec's dtype and shape."""
    if spec.bits is None:
        return stored
    dtype = getattr(torch, spec.dtype)
    return unpack_codes(stored, spec.bits, spec.numel, dtype).reshape(spec.shape)


class StoredTensors(Mapping):
    """The tensors of a validated weightshare file, read one at a time on access (as stored:
    packed parts stay packed). ``infos[name]`` gives dtype, shape and stored bytes without
    reading any data; ``layout`` says what each tensor is."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.metadata, self.infos, self.layout = read_validated(path)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.infos:
            raise KeyError(name)
        return read_raw(self.path, {name: self.infos[name]})[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.infos)

    def __len__(self) -> int:
        return len(self.infos)

    def part(self, fqn: str, part: str) -> torch.Tensor:
        """Part ``part`` of shared weight ``fqn``, unpacked (following a tie to its slot)."""
        slot = self.layout.slot(fqn, part, self.metadata["ties"])
        spec = self.layout.parts.get(slot)  # None: a dense tensor holds it
        return self[slot] if spec is None else unpack_part(self[slot], spec)


def read_tensors(path: str | os.PathLike) -> StoredTensors:
    """A lazy ``{name: tensor}`` mapping of the tensors stored in a weightshare file.

    Example:
        >>> stored = read_tensors("model.safetensors")  # doctest: +SKIP
        >>> sum(info.nbytes for info in stored.infos.values())  # doctest: +SKIP
        8123456
    """
    return StoredTensors(path)
