"""Export to ONNX: the dense model (every shared weight expanded), checked with
onnxruntime when it is installed.

The graph is dense: ONNX has no standard operator that computes from codes and a
codebook at low bit width (a ``Gather`` from 8-bit codes is possible but onnxruntime
would run it as a dense lookup per call, and most runtimes do not fuse it), so the file
is as large as the dense model at its dtype. Use ``--to coreml`` for a palettized
package, or the weightshare file itself.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import SaveError
from .graph import TokensToOutput, example_ids
from .hf import dense_model


def to_onnx(model: nn.Module, out: str | os.PathLike, *, causal: bool,
            vocab: int) -> dict[str, Any]:
    """Write ``model`` (changed in place to dense weights) as an ONNX graph
    ``(input_ids, attention_mask) -> output`` with dynamic batch and sequence length."""
    path = Path(out)
    if path.exists():
        raise SaveError(f"{path} exists; choose a new file name")
    if not path.parent.is_dir():
        raise SaveError(f"directory {path.parent} does not exist; create it first")
    dense_model(model)
    wrapper = TokensToOutput(model, causal).eval()
    ids = example_ids(vocab)
    mask = torch.ones_like(ids)
    names: dict[str, Any] = {"input_names": ["input_ids", "attention_mask"],
                             "output_names": ["output"]}
    try:
        import onnx  # noqa: F401  (torch.onnx writes through it)
    except ImportError as e:
        raise SaveError("--to onnx needs onnx: pip install 'weightshare[export]'") from e
    # the exporter prints progress on stdout, which belongs to --json
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        try:
            exporter = _export(wrapper, ids, mask, path, names)
        except Exception as e:  # the exporters raise many types for unsupported graphs
            for p in path.parent.glob(path.name + "*"):
                p.unlink(missing_ok=True)
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise SaveError(f"torch.onnx could not export {type(model).__name__} ({first}); "
                            "export --to hf instead") from None
    files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
    result: dict[str, Any] = {"format": "onnx", "output": str(path), "exporter": exporter,
                              "bytes": sum(p.stat().st_size for p in files)}
    result["max_abs_difference"] = check_onnx(wrapper, path, vocab)
    return result


def _export(wrapper: nn.Module, ids: torch.Tensor, mask: torch.Tensor, path: Path,
            names: dict[str, Any]) -> str:
    """Export with torch.export (dynamo) when onnxscript is there, else TorchScript."""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError:
        axes = {"input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "output": {0: "batch", 1: "sequence"}}
        torch.onnx.export(wrapper, (ids, mask), str(path), dynamo=False, opset_version=17,
                          dynamic_axes=axes, **names)
        return "TorchScript (legacy)"
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    torch.onnx.export(wrapper, (ids, mask), str(path), dynamo=True, **names,
                      dynamic_shapes={"input_ids": {0: batch, 1: seq},
                                      "attention_mask": {0: batch, 1: seq}})
    return "torch.export (dynamo)"


def check_onnx(wrapper: nn.Module, path: Path, vocab: int) -> float | None:
    """max |onnxruntime - torch| on a fresh batch (another shape, padding); None without
    onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    ids = example_ids(vocab, batch=3, length=20, seed=1)
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    with torch.no_grad():
        want = wrapper(ids, mask).float().numpy()
    return float(abs(got - want).max())
