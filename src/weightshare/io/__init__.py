"""The weightshare file format: one safetensors file, shared weights stored once as their
parts, codes bit-packed, ties stored once.

``docs/format.md`` is the specification: :mod:`.header` reads the safetensors header,
:mod:`.schema` validates the metadata (generic over the shared-weight protocol),
:mod:`.bitpack` packs codes, :mod:`.upgrade` reads older versions, :mod:`.write` saves,
:mod:`.read` reads and :mod:`.restore` loads into a model. Nothing here names a kind of
sharing.
"""

from .bitpack import pack_codes, packed_length, unpack_codes
from .header import TensorInfo
from .read import StoredTensors, read_metadata, read_tensors
from .restore import load
from .schema import FORMAT_VERSION, validate_metadata
from .write import save

__all__ = [
    "FORMAT_VERSION",
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
