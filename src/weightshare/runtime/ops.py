"""Layers computed from packed codes: linear, embedding, convolutions.

Never a whole dense weight: a matrix product decodes the weight in tiles of at most
``TILE_ELEMS`` values into one reused buffer and multiplies each tile with torch's own
kernels (a weight that fits one tile is decoded once and multiplied exactly as the dense
layer would be); for up to 24 input rows a compiled matrix-vector kernel reads the codes
directly; an embedding decodes only the rows asked for. Outputs equal the dense layer's
within float32 rounding (exactly, where one tile holds the weight).

Each implementation returns NotImplemented when it does not apply (a gradient wanted
through the input, another device, a layout it does not cover); the PackedTensor then
runs the operation on the dense weight.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
import torch.nn.functional as F

from .tensor import PackedTensor, implements

TILE_ELEMS = 1 << 20  # values per decoded tile (4 MiB of float32)
# Input rows up to which the compiled kernel computes from the codes (each weight row
# decoded once into a small buffer, dotted with every input row; never a tile in memory).
# Measured (768 x 3072, 4 bits, one thread): level with tiles + torch.mm up to about 24
# rows, behind from 32 (one sentence at batch 1 is 10 to 30 tokens).
MATVEC_MAX_ROWS = 24

_local = threading.local()


def _scratch(n: int, dtype: torch.dtype, slot: int = 0) -> torch.Tensor:
    """A reused buffer of ``n`` values (one per thread, dtype and slot): tiles never
    allocate. (Not only for speed: short-lived multi-megabyte temporaries between the
    model's own activations fragment the heap, and the process's memory creeps up.)

    When autograd records the product (an input that wants a gradient), the tile is saved
    for the backward pass and must not be overwritten: then a fresh buffer."""
    if torch.is_grad_enabled():
        return torch.empty(n, dtype=dtype)
    bufs = _local.__dict__.setdefault("bufs", {})
    buf = bufs.get((dtype, slot))
    if buf is None or buf.numel() < n:
        with torch.inference_mode(False):  # a normal tensor: writable in and out of it
            buf = bufs[(dtype, slot)] = torch.empty(max(n, TILE_ELEMS), dtype=dtype)
    return buf[:n]


def _cpu(*tensors: Any) -> bool:
    return all(not isinstance(t, torch.Tensor) or t.device.type == "cpu" for t in tensors)


def _decoded(form: Any, codebook: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
    """Rows r0..r1 of the weight (rows along its axis), decoded into the scratch buffer."""
    tile = _scratch((r1 - r0) * form.cols, codebook.dtype).view(r1 - r0, form.cols)
    form.decoder(codebook).decode(r0, tile)
    return tile


def _tile_rows(form: Any, multiple: int = 1) -> int:
    rows = max(1, TILE_ELEMS // max(1, form.cols))
    return max(multiple, rows // multiple * multiple)


def linear_rows(form: Any, codebook: torch.Tensor, x: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ W.T + bias`` with W the weight's rows (rows along its axis) as a matrix."""
    x2 = x if x.dim() == 2 else x.reshape(-1, form.cols)
    y = None
    if x2.shape[0] <= MATVEC_MAX_ROWS and not (torch.is_grad_enabled() and x.requires_grad):
        y = form.decoder(codebook).matvec(x2.contiguous())
        if y is not None and bias is not None:
            y += bias
    if y is None:
        step = _tile_rows(form)
        if step >= form.rows:
            y = F.linear(x2, _decoded(form, codebook, 0, form.rows), bias)
        else:
            m = x2.shape[0]
            y = torch.empty(m, form.rows, dtype=x2.dtype)
            for r0 in range(0, form.rows, step):
                r1 = min(form.rows, r0 + step)
                part = _scratch(m * (r1 - r0), x2.dtype, slot=1).view(m, r1 - r0)
                tile = _decoded(form, codebook, r0, r1)
                if bias is None:
                    torch.mm(x2, tile.t(), out=part)
                else:
                    torch.addmm(bias[r0:r1], x2, tile.t(), out=part)
                y[:, r0:r1] = part
    return y if x.dim() == 2 else y.reshape(*x.shape[:-1], form.rows)


@implements(F.linear)
def linear(input: torch.Tensor, weight: Any, bias: torch.Tensor | None = None) -> Any:
    form, codebook = weight.form, weight.codebook
    if form.axis != 0 or len(form.shape) != 2 or input.shape[-1] != form.cols \
            or input.dtype != codebook.dtype or not _cpu(input, bias, codebook):
        return NotImplemented
    return linear_rows(form, codebook, input, bias)


@implements(torch.addmm)
def addmm(input: torch.Tensor, mat1: torch.Tensor, mat2: Any, *, beta: float = 1,
          alpha: float = 1, out: Any = None) -> Any:
    """``input + mat1 @ mat2`` with mat2 stored (in, out) and codebooks per output column
    (transformers' Conv1D): its rows are the columns of mat2."""
    if out is not None or beta != 1 or alpha != 1 or not isinstance(mat2, PackedTensor):
        return NotImplemented
    form, codebook = mat2.form, mat2.codebook
    if form.axis != 1 or len(form.shape) != 2 or mat1.dim() != 2 \
            or mat1.shape[1] != form.shape[0] or mat1.dtype != codebook.dtype \
            or not _cpu(input, mat1, codebook):
        return NotImplemented
    return linear_rows(form, codebook, mat1, None) + input


@implements(torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__)
def matmul(a: torch.Tensor, b: Any, *, out: Any = None) -> Any:
    if out is not None or not isinstance(b, PackedTensor) or isinstance(a, PackedTensor) \
            or not isinstance(a, torch.Tensor):
        return NotImplemented
    form, codebook = b.form, b.codebook
    if form.axis != 1 or len(form.shape) != 2 or a.dim() < 1 \
            or a.shape[-1] != form.shape[0] or a.dtype != codebook.dtype or not _cpu(a, codebook):
        return NotImplemented
    return linear_rows(form, codebook, a, None)


@implements(F.embedding)
def embedding(input: torch.Tensor, weight: Any, padding_idx: int | None = None,
              max_norm: float | None = None, norm_type: float = 2.0,
              scale_grad_by_freq: bool = False, sparse: bool = False) -> Any:
    """Only the rows asked for are decoded (padding_idx changes gradients only)."""
    if max_norm is not None or not isinstance(weight, PackedTensor):
        return NotImplemented
    form, codebook = weight.form, weight.codebook
    if form.axis != 0 or len(form.shape) != 2 or input.dtype not in (torch.int64, torch.int32) \
            or not _cpu(input, codebook):
        return NotImplemented
    ids = input.reshape(-1).long()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= form.rows):
        raise IndexError("index out of range in self")
    out = torch.empty(ids.numel(), form.cols, dtype=codebook.dtype)
    form.decoder(codebook).gather(ids.contiguous(), out)
    return out.reshape(*input.shape, form.cols)


def _conv(fn: Any, input: torch.Tensor, weight: Any, bias: torch.Tensor | None = None,
          stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Any:
    if not isinstance(weight, PackedTensor):
        return NotImplemented
    form, codebook = weight.form, weight.codebook
    shape = form.shape
    if form.axis != 0 or input.dtype != codebook.dtype or not _cpu(input, bias, codebook):
        return NotImplemented
    per_group = form.rows // groups  # output channels per group: tiles hold whole groups
    step = _tile_rows(form, per_group)
    if step >= form.rows:
        tile = _decoded(form, codebook, 0, form.rows).view(shape)
        return fn(input, tile, bias, stride, padding, dilation, groups)
    in_per_group = shape[1]
    channels = input.dim() - (len(shape) - 1)  # 1 for a batch, 0 for one unbatched input
    outs = []
    for r0 in range(0, form.rows, step):
        r1 = min(form.rows, r0 + step)
        g0, g1 = r0 // per_group, r1 // per_group
        x = input if groups == 1 else input.narrow(channels, g0 * in_per_group,
                                                   (g1 - g0) * in_per_group)
        tile = _decoded(form, codebook, r0, r1).view(r1 - r0, *shape[1:])
        outs.append(fn(x, tile, None if bias is None else bias[r0:r1], stride, padding,
                       dilation, g1 - g0))
    return torch.cat(outs, channels)


@implements(F.conv1d)
def conv1d(*args: Any, **kwargs: Any) -> Any:
    return _conv(F.conv1d, *args, **kwargs)


@implements(F.conv2d)
def conv2d(*args: Any, **kwargs: Any) -> Any:
    return _conv(F.conv2d, *args, **kwargs)


@implements(F.conv3d)
def conv3d(*args: Any, **kwargs: Any) -> Any:
    return _conv(F.conv3d, *args, **kwargs)
