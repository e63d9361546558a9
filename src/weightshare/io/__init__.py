"""The weightshare file format: one safetensors file, codes bit-packed, ties stored once.

``docs/format.md`` is the specification; :mod:`.schema` validates it, :mod:`.bitpack`
packs codes, :mod:`.serialize` saves and loads.
"""

from .bitpack import pack_codes, packed_length, unpack_codes
from .schema import FORMAT_VERSION, TensorInfo, validate_metadata
from .serialize import SaveError, StoredTensors, load, read_metadata, read_tensors, save

__all__ = [
    "FORMAT_VERSION",
    "SaveError",
    "StoredTensors",
    "TensorInfo",
    "load",
    "pack_codes",
    "packed_length",
    "read_metadata",
    "read_tensors",
    "save",
    "unpack_codes",
    "validate_metadata",
]
