"""Reading weightshare files: the validated metadata and the tensors, nothing built yet.

Every tensor is read into a buffer of the size the validated header gives and its
checksum is verified before it is used; entropy-coded parts are decoded (and checked
against their histogram) on the way, into their bit-packed or their unpacked form.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ..core.protocol import PartSpec
from ..errors import FormatError
from .bitpack import unpack_codes
from .container import data_start, read_checked
from .entropy import decode
from .header import TensorInfo, parse_metadata, read_header
from .schema import Layout, validate_metadata
from .upgrade import upgrade


def read_validated(path: str | os.PathLike) -> tuple[dict, dict[str, TensorInfo], Layout]:
    """(metadata, tensor table, layout) of a file, every field checked; no tensor read.
    Files of an older format version come back in the current form."""
    infos, strings = read_header(path)
    meta, infos, legacy = upgrade(parse_metadata(path, strings), infos, str(path))
    layout = validate_metadata(meta, infos, path, legacy=legacy)
    return meta, infos, layout


def read_metadata(path: str | os.PathLike) -> dict:
    """The validated ``weightshare`` metadata of a file; no tensor is read.

    Example:
        >>> meta = read_metadata("model.safetensors")  # doctest: +SKIP
        >>> meta["format_version"], sorted(meta["schemes"])  # doctest: +SKIP
        (3, ['encoder.layer.0.attention.self.query.weight', ...])
    """
    return read_validated(path)[0]


def unpack_part(stored: torch.Tensor, spec: PartSpec) -> torch.Tensor:
    """A bit-packed part in its logical form: unpacked to the spec's dtype and shape."""
    if spec.bits is None:
        return stored
    dtype = getattr(torch, spec.dtype)
    return unpack_codes(stored, spec.bits, spec.numel, dtype).reshape(spec.shape)


class Reader:
    """An open, validated weightshare file: ``stored(name)`` reads a tensor as stored and
    ``part(name, packed)`` a part in its bit-packed or logical form, checksums verified."""

    def __init__(self, path: str | os.PathLike, validated: tuple | None = None) -> None:
        self.path = Path(path)
        self.metadata, self.infos, self.layout = validated or read_validated(path)
        self._file: BinaryIO | None = None
        self._start = 0

    def __enter__(self) -> Reader:
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115 (closed in __exit__)
        except OSError as e:
            raise FormatError(f"{self.path} could not be read ({e.strerror or e}); check the "
                              "path and permissions") from None
        self._start = data_start(self._file)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def stored(self, name: str) -> torch.Tensor:
        """Tensor ``name`` as stored (packed parts packed, coded parts coded)."""
        if self._file is None:
            with self:
                return self.stored(name)
        info = self.infos[name]
        expected = None if self.layout.checksums is None else self.layout.checksums[name]
        try:
            return read_checked(self._file, self._start, info, expected, self.path)
        except OSError as e:
            raise FormatError(f"{self.path} could not be read ({e.strerror or e}); the file is "
                              "truncated or on a failing disk, save it again") from None

    def part(self, name: str, packed: bool) -> torch.Tensor:
        """Stored tensor ``name``: a part of codes bit-packed (``packed``) or unpacked to
        its logical dtype and shape; any other tensor as stored."""
        spec = self.layout.parts.get(name)
        raw = self.stored(name)
        if spec is None or spec.bits is None:
            return raw
        coding = self.layout.coding.get(name)
        if coding is None:
            return raw if packed else unpack_part(raw, spec)
        codes = decode(raw, spec.bits, spec.numel, coding["words"], packed=packed,
                               where=f"{self.path}: {name}")
        if packed:
            return codes
        return codes.to(getattr(torch, spec.dtype)).reshape(spec.shape)


class StoredTensors(Mapping):
    """The tensors of a validated weightshare file, read one at a time on access (as stored:
    packed parts stay packed, coded parts coded; checksums verified). ``infos[name]`` gives
    dtype, shape and stored bytes without reading any data; ``layout`` says what each
    tensor is."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.reader = Reader(path)
        self.metadata, self.infos, self.layout = (self.reader.metadata, self.reader.infos,
                                                  self.reader.layout)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.infos:
            raise KeyError(name)
        return self.reader.stored(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.infos)

    def __len__(self) -> int:
        return len(self.infos)

    def part(self, fqn: str, part: str, packed: bool = False) -> torch.Tensor:
        """Part ``part`` of shared weight ``fqn``, unpacked (or bit-packed), following a tie
        to its slot."""
        slot = self.layout.slot(fqn, part, self.metadata["ties"])
        return self.reader.part(slot, packed)


def read_tensors(path: str | os.PathLike) -> StoredTensors:
    """A lazy ``{name: tensor}`` mapping of the tensors stored in a weightshare file.

    Example:
        >>> stored = read_tensors("model.safetensors")  # doctest: +SKIP
        >>> sum(info.nbytes for info in stored.infos.values())  # doctest: +SKIP
        8123456
    """
    return StoredTensors(path)
