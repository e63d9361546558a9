"""The packed runtime form of the codebook weight: codes bit-packed in memory.

Same kind, version, scheme and parts as ``CodebookWeight`` (so files, ties, ``inspect``
and the tie machinery treat both alike), held for inference: the codes stay at their
real width, one row per channel (rows along the scheme's ``axis``, each padded to a
whole byte), the codebook beside them. ``forward`` returns a :class:`PackedTensor`, which
layers compute from directly (``runtime.ops``): never a whole dense weight.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..core.protocol import PartSpec, SharedWeight, dtype_name
from ..errors import ConfigError
from ..io.bitpack import pack_codes, unpack_codes
from ..methods.codebook.config import group_size_for
from ..methods.codebook.extras import EXTRA_KEYS
from ..methods.codebook.weight import CodebookWeight, codes_dtype
from .kernels import Decoder, PackedRows, backend, histogram, warm_up
from .tensor import PackedTensor

# rows decoded per step when the whole dense weight is wanted (materialize_, fallbacks)
_DENSE_STEP = 1 << 20


class PackedCodebookWeight(SharedWeight):
    """weight[r, ...] = codebook[r // group_size, code] with the codes bit-packed in memory.

    Built by ``weightshare.load(path, runtime="packed")`` or
    ``weightshare.runtime.to_runtime_(model, "packed")``; read-only (convert back with
    ``to_runtime_(model, "train")`` to fine-tune).

    Example:
        >>> import torch, weightshare as ws
        >>> from weightshare.runtime import to_runtime_
        >>> m = torch.nn.Sequential(torch.nn.Linear(16, 8))
        >>> _ = ws.cluster_(m, ws.ClusterConfig(bits=4, min_size=0))
        >>> x = torch.randn(3, 16)
        >>> before = m(x)
        >>> _ = to_runtime_(m, "packed")
        >>> torch.allclose(m(x), before, atol=1e-6)
        True
    """

    kind = CodebookWeight.kind
    version = CodebookWeight.version
    original_part = CodebookWeight.original_part
    codes: torch.Tensor  # flat uint8: rows of bit-packed codes (see kernels.PackedRows)

    def __init__(self, rows: PackedRows, bits: int, granularity: str, group_size: int,
                 axis: int, shape: tuple[int, ...], dense_dtype: torch.dtype | None = None
                 ) -> None:
        super().__init__()
        self.dense_dtype = dense_dtype  # a float32 codebook of a half model computes in half
        self.bits, self.granularity, self.axis = int(bits), granularity, int(axis)
        self.shape = tuple(int(d) for d in shape)
        self.group_size = group_size_for(granularity, self.shape[self.axis], group_size)
        self.num_groups = self.shape[self.axis] // self.group_size
        self.rows, self.cols, self.row_bytes = rows.rows, rows.cols, rows.row_bytes
        self.register_buffer("codes", rows.flat)
        self._decoder: tuple[tuple, Any] = ((), None)
        self._tensor: tuple[Any, Any] = (None, None)  # (codebook, its PackedTensor)

    @property
    def packed(self) -> PackedRows:
        return PackedRows(self.codes, self.rows, self.cols, self.bits, self.row_bytes)

    def _ready(self, codebook: torch.Tensor) -> None:
        """Make the long-lived objects a forward pass needs (the weight's view, its decoder,
        the compiled kernels) while the model is loaded, not during its first forward pass:
        objects made between a pass's activations pin the top of the heap, and the
        activations of every later layer would go above them (the peak memory of a first
        pass through BERT-base grew by 150 MB that way)."""
        if codebook.is_meta:
            return
        warm_up()
        self.forward(codebook)
        self.decoder(codebook)

    def decoder(self, codebook: torch.Tensor) -> Decoder:
        """The kernels bound to these codes and ``codebook``, kept while it is unchanged."""
        # (inference tensors cannot change outside inference mode: they have no version)
        version = -1 if codebook.is_inference() else codebook._version
        key = (codebook.data_ptr(), version, codebook.dtype, backend(), self.codes.data_ptr())
        if self._decoder[0] != key:
            self._decoder = (key, Decoder(self.packed, codebook, self.group_size))
        return self._decoder[1]

    # -- the shared-weight protocol ----------------------------------------------------

    def scheme(self, original: torch.Tensor) -> dict[str, Any]:
        return {"kind": self.kind, "bits": self.bits, "granularity": self.granularity,
                "group_size": self.group_size, "axis": self.axis, "shape": list(self.shape),
                "dtype": dtype_name(original.dtype),
                **({"dense_dtype": dtype_name(self.dense_dtype)}
                   if self.dense_dtype not in (None, original.dtype) else {})}

    @classmethod
    def handles(cls, scheme: dict[str, Any]) -> bool:
        """Plain codebooks only: per-channel scales and exact outliers (the ``extras`` of
        the codebook kind) have no packed kernels yet, so those weights stay trainable."""
        return not set(scheme) & EXTRA_KEYS

    @classmethod
    def dense_dtype_name(cls, scheme: dict[str, Any]) -> str:
        return CodebookWeight.dense_dtype_name(scheme)

    @classmethod
    def check_scheme(cls, scheme: dict[str, Any]) -> None:
        CodebookWeight.check_scheme(scheme)

    @classmethod
    def part_specs(cls, scheme: dict[str, Any]) -> dict[str, PartSpec]:
        return CodebookWeight.part_specs(scheme)

    @classmethod
    def from_scheme(cls, scheme: dict[str, Any],
                    parts: dict[str, torch.Tensor]) -> PackedCodebookWeight:
        bits = scheme["bits"]
        return cls.from_stored(scheme, {"codes": pack_codes(parts["codes"], bits)})

    @classmethod
    def from_stored(cls, scheme: dict[str, Any],
                    parts: dict[str, torch.Tensor]) -> PackedCodebookWeight:
        """From the file's stream of codes (row-major over the dense shape)."""
        shape, axis, bits = tuple(scheme["shape"]), scheme["axis"], scheme["bits"]
        rows = shape[axis]
        cols = math.prod(shape) // rows
        stream = parts["codes"].reshape(-1)
        if axis == 0 and (cols * bits) % 8 == 0 or rows == 1 and axis == 0:
            packed = PackedRows.from_stream(stream, rows, cols, bits)
        else:  # rows must start on a byte: move the axis first, pad each row
            codes = unpack_codes(stream, bits, math.prod(shape), codes_dtype(bits))
            packed = _rows_of(codes.reshape(shape).movedim(axis, 0).reshape(rows, cols), bits)
        dense = getattr(torch, scheme["dense_dtype"]) if "dense_dtype" in scheme else None
        return cls(packed, bits, scheme["granularity"], scheme["group_size"], axis, shape, dense)

    def packed_parts(self) -> dict[str, torch.Tensor]:
        """The codes as the file stores them (one stream, row-major over the dense shape)."""
        if self.axis == 0 and ((self.cols * self.bits) % 8 == 0 or self.rows == 1):
            return {"codes": self.codes}
        return {"codes": pack_codes(self.parts()["codes"], self.bits)}

    def parts(self) -> dict[str, torch.Tensor]:
        """The codes unpacked, in the dense weight's shape (a copy: costs a byte per code)."""
        per_row = self.row_bytes * 8 // self.bits
        flat = unpack_codes(self.codes, self.bits, self.rows * per_row, codes_dtype(self.bits))
        moved = [self.shape[self.axis]] + [d for i, d in enumerate(self.shape) if i != self.axis]
        rows = flat.reshape(self.rows, per_row)[:, : self.cols]
        return {"codes": rows.reshape(moved).movedim(0, self.axis).contiguous()}

    def forward(self, codebook: torch.Tensor) -> torch.Tensor:
        if self._tensor[0] is not codebook:  # made once per codebook object: it is a view
            # a wider codebook computes in the dense dtype: casting the entries first is
            # exact (the training form casts each decoded value the same way)
            cast = codebook if self.dense_dtype in (None, codebook.dtype) \
                else codebook.detach().to(self.dense_dtype)
            self._tensor = (codebook, PackedTensor(self, cast))
        return self._tensor[1]

    # a layer asks for its weight on every call: skip Module.__call__'s hook machinery
    # (a parametrization has no hooks); the weight is a view, computing it is free
    __call__ = forward

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        pending = self.take_pending()
        if pending is not None:  # attached to its module: ready everything now (see below)
            self._ready(pending)
            return pending
        raise ConfigError("a packed weight is read-only; convert the model to its training form "
                          "first: weightshare.runtime.to_runtime_(model, 'train')")

    @torch.no_grad()
    def dense(self, codebook: torch.Tensor) -> torch.Tensor:
        """The whole dense weight, a plain tensor (decoded in steps)."""
        cb = codebook.detach().contiguous()
        if self.dense_dtype is not None:
            cb = cb.to(self.dense_dtype)
        rows = torch.empty(self.rows, self.cols, dtype=cb.dtype)
        step = max(1, _DENSE_STEP // max(1, self.cols))
        decoder = self.decoder(cb)
        for r0 in range(0, self.rows, step):
            decoder.decode(r0, rows[r0: r0 + step])
        moved = [self.shape[self.axis]] + [d for i, d in enumerate(self.shape) if i != self.axis]
        return rows.reshape(moved).movedim(0, self.axis).contiguous()

    def describe(self, original: torch.Tensor) -> str:
        return f"{self.granularity}, {self.num_groups} codebook(s), packed"

    def code_bits(self) -> int:
        return self.bits

    def code_histogram(self) -> torch.Tensor:
        """Counts of each code value (int64, ``2**bits`` entries), from the packed codes."""
        return histogram(self.packed)

    @torch.no_grad()
    def distinct_values(self, original: torch.Tensor) -> int:
        values = []
        for g in range(self.num_groups):
            used = histogram(self.packed, g * self.group_size,
                                     (g + 1) * self.group_size) > 0
            values.append(original[g][used])
        return int(torch.cat(values).unique().numel())

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, granularity={self.granularity}, groups={self.num_groups}, "
                f"shape={self.shape}, packed={self.codes.numel()} bytes")


def _rows_of(codes: torch.Tensor, bits: int) -> PackedRows:
    """(rows, cols) codes -> PackedRows, each row padded with zero codes to a whole byte."""
    rows, cols = codes.shape
    per_byte = 8 // math.gcd(bits, 8)
    padded = -(-cols // per_byte) * per_byte
    if padded != cols:
        codes = torch.cat([codes, codes.new_zeros(rows, padded - cols)], 1)
    row_bytes = PackedRows.row_bytes_for(padded, bits)
    return PackedRows(pack_codes(codes, bits), rows, cols, bits, row_bytes)
