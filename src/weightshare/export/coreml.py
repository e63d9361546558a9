"""Export to Core ML: an ML program whose shared weights stay palettized.

The dense model (exactly the values the shared model computes with) is traced and
converted by coremltools; then ``palettize_weights`` in its ``"unique"`` mode finds that
each clustered weight takes at most 2**bits values and stores it as a look-up table of
those values plus ``bits``-bit indices (``constexpr_lut_to_dense``): the package keeps
the codebook's size instead of growing back to the dense one. Weights with more than 256
distinct values (per-channel or grouped codebooks: every group has its own values)
stay dense, and the summary says how many.

Conversion runs anywhere (Linux included); running the package needs macOS. coremltools
is an optional dependency (``pip install 'weightshare[export]'``).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import SaveError
from .graph import example_ids
from .hf import dense_model


class _IdsToOutput(nn.Module):
    """``forward(input_ids)`` -> main output; every token is real (batch 1, no padding)."""

    def __init__(self, model: nn.Module, causal: bool) -> None:
        super().__init__()
        self.model, self.causal = model, causal

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        from ..core.batches import first_tensor

        extra = {"use_cache": False} if self.causal else {}
        return first_tensor(self.model(input_ids=input_ids,
                                       attention_mask=torch.ones_like(input_ids), **extra))


def _coremltools() -> Any:
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            import coremltools
    except ImportError as e:
        raise SaveError("--to coreml needs coremltools: pip install 'weightshare[export]'"
                        ) from e
    from . import _coreml_ops  # noqa: F401  (converters for ops coremltools lacks)

    return coremltools


def to_coreml(model: nn.Module, out: str | os.PathLike, *, causal: bool, vocab: int,
              max_length: int = 128) -> dict[str, Any]:
    """Write ``model`` (changed in place to dense weights) as a Core ML package with its
    shared weights palettized; ``input_ids`` (1, 1..max_length) int32 -> output."""
    path = Path(out)
    if path.suffix != ".mlpackage":
        raise SaveError(f"a Core ML package is a directory ending in .mlpackage, got {path}; "
                        "e.g. model.mlpackage")
    if path.exists():
        raise SaveError(f"{path} exists; choose a new name")
    ct = _coremltools()
    from coremltools.optimize.coreml import (
        OpPalettizerConfig,
        OptimizationConfig,
        palettize_weights,
    )

    dense_model(model)
    wrapper = _IdsToOutput(model, causal).eval()
    ids = example_ids(vocab, batch=1, length=16)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), \
            contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        try:
            traced = torch.jit.trace(wrapper, (ids,), strict=False)
            shape = (1, ct.RangeDim(lower_bound=1, upper_bound=max_length, default=16))
            mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="input_ids", shape=shape,
                                                               dtype=np.int32)],
                                 convert_to="mlprogram",
                                 minimum_deployment_target=ct.target.iOS18,
                                 compute_precision=_precision(ct, model))
        except Exception as e:  # the converter raises many types for unsupported graphs
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise SaveError(f"coremltools could not convert {type(model).__name__} ({first}); "
                            "export --to onnx or --to hf instead") from None
        config = OptimizationConfig(global_config=OpPalettizerConfig(mode="unique",
                                                                     weight_threshold=512))
        mlmodel = palettize_weights(mlmodel, config)
    tables = palettized(mlmodel)
    try:
        mlmodel.save(str(path))
    except Exception as e:
        shutil.rmtree(path, ignore_errors=True)
        raise SaveError(f"could not write {path}: {e}") from None
    return {"format": "coreml", "output": str(path),
            "bytes": sum(p.stat().st_size for p in path.rglob("*") if p.is_file()),
            "palettized": len(tables), "tables": tables}


def _precision(ct: Any, model: nn.Module) -> Any:
    dtype = next(iter(model.parameters())).dtype
    return ct.precision.FLOAT16 if dtype in (torch.float16, torch.bfloat16) \
        else ct.precision.FLOAT32


def palettized(mlmodel: Any) -> list[dict[str, Any]]:
    """Every look-up-table weight of a Core ML program: its name, entries per table, bits
    per index, and the bytes of its tables and indices."""
    from coremltools.converters.mil.mil import types

    out = []
    for function in mlmodel._mil_program.functions.values():
        for op in function.operations:
            if op.op_type != "constexpr_lut_to_dense":
                continue
            lut, indices = op.inputs["lut"], op.inputs["indices"]
            bits = int(types.builtin_to_string(indices.dtype).removeprefix("uint"))
            entries = int(lut.val.shape[-2])
            out.append({"name": op.name.removesuffix("_palettized"), "entries": entries,
                        "bits": bits, "index_bytes": (indices.val.size * bits + 7) // 8,
                        "table_bytes": int(lut.val.nbytes)})
    return out
