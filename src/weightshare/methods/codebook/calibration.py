"""Data-aware clustering: how much each weight matters, read from calibration inputs.

For a linear map y = W x, the expected squared output error of a perturbation
dW is sum_ij dW_ij^2 E[x_j^2] plus cross terms; keeping the diagonal (as
GPTQ/AWQ-style methods do) makes E[x_j^2] the importance of every weight in
input column j. Weighted k-means then spends its K values where the layer's
inputs are large.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ...core.batches import eval_mode, run_batch
from ...core.protocol import dense_weight
from ...core.select import Target
from ...errors import DataError

Calibration = Iterable[Any] | Callable[[nn.Module], Any]


def run_calibration(model: nn.Module, calibration: Calibration,
                    on_batch: Callable[[Any], None] | None = None) -> int:
    """Run ``calibration`` through ``model`` without gradients; return the number of batches.

    ``calibration`` is a callable taking the model, or an iterable of batches: a tensor
    (``model(batch)``), a tuple/list (``model(*batch)``) or a dict (``model(**batch)``).
    """
    count = 0
    with torch.no_grad():
        if callable(calibration):
            calibration(model)
            return 1
        for batch in calibration:
            if on_batch is not None:
                on_batch(batch)
            run_model(model, batch)
            count += 1
    if count == 0:
        raise DataError("calibration data is empty; pass at least one batch or calibration=None")
    return count


def run_model(model: nn.Module, batch: Any) -> Any:
    """``run_batch``, with a model that cannot take the batch reported as a DataError."""
    try:
        return run_batch(model, batch)
    except (TypeError, RuntimeError, ValueError, IndexError, KeyError) as exc:
        if isinstance(exc, DataError) or type(exc).__name__ == "_Stop":
            raise
        shown = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise DataError(f"the model cannot take the calibration inputs ({shown}); pass "
                        "batches the model accepts (a tensor, a tuple of arguments or a dict "
                        "of keyword arguments)") from None


def input_importance(model: nn.Module, targets: list[Target],
                     calibration: Calibration) -> dict[str, torch.Tensor]:
    """Per-weight importance (weight-shaped, float64) for Linear, Conv and transformers Conv1D
    targets: E[x_j^2] of the input feature that each weight multiplies. Embeddings get none."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []
    # padding tokens are not data: with an attention mask, only real tokens count
    mask: dict[str, torch.Tensor | None] = {"current": None}

    def remember_mask(batch: Any) -> None:
        m = batch.get("attention_mask") if isinstance(batch, dict) else None
        mask["current"] = None if m is None else m.bool()

    def make_hook(target: Target):
        def hook(_module: nn.Module, args: tuple, _out: Any) -> None:
            x = args[0].detach()
            m = mask["current"]
            if m is not None and x.dim() == 3 and x.shape[:2] == m.shape:
                x = x[m]  # (real tokens, features)
            if isinstance(target.module, nn.modules.conv._ConvNd):
                # (batch, in, *spatial): mean square per input channel
                ch = x.transpose(0, 1).reshape(x.shape[1], -1)
                s, n = (ch * ch).sum(1, dtype=torch.float64), ch.shape[1]
            else:  # features on the last dim
                flat = x.reshape(-1, x.shape[-1])
                s, n = (flat * flat).sum(0, dtype=torch.float64), flat.shape[0]
            sums[target.name] = sums.get(target.name, 0) + s
            counts[target.name] = counts.get(target.name, 0) + n
        return hook

    for t in targets:
        if not isinstance(t.module, nn.Embedding):
            hooks.append(t.module.register_forward_hook(make_hook(t)))
    try:
        with eval_mode(model, inference=False):
            run_calibration(model, calibration, remember_mask)
    finally:
        for h in hooks:
            h.remove()

    out: dict[str, torch.Tensor] = {}
    for t in targets:
        if t.name not in sums:
            continue
        mean_sq = sums[t.name] / max(counts[t.name], 1)
        mean_sq = mean_sq + 1e-12 * float(mean_sq.max())  # no weight gets exactly zero say
        shape = dense_weight(t.module).shape
        if t.axis == 1:  # Conv1D weight (in, out): input features along dim 0
            out[t.name] = mean_sq.reshape(-1, 1).expand(shape)
        else:  # (out, in, *kernel)
            view = [1, -1] + [1] * (len(shape) - 2)
            out[t.name] = mean_sq.reshape(view).expand(shape)
    return out
