"""Fisher sensitivity: how much the model's output moves when a weight moves.

``weighting="fisher"`` weights each value in the codebook fit by the mean of its squared
gradient over the calibration batches (SqueezeLLM; coremltools' SKM), a diagonal
estimate of the loss curvature. Which loss:

* ``loss(output, batch)`` when the caller gives one;
* the model's own ``output.loss`` when the batch carries labels;
* logits: cross-entropy against labels *sampled from the model's own prediction*: the
  expected squared gradient is then the true Fisher information (with the observed
  labels it would be the "empirical" Fisher, and with the original model's outputs as
  targets the gradient of a distillation loss is exactly zero);
* any other output (hidden states, embeddings): <output, v> with v ~ N(0, 1) per real
  token: E[g^2] is the diagonal of J^T J, the Gauss-Newton curvature of a squared-error
  distillation loss toward the original.

One backward pass per batch: the cross terms between samples of a batch have mean zero
under the random labels / projections, so the batch gradient's square estimates the sum
of per-sample terms without per-sample passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...core.batches import eval_mode, first_tensor, token_mask
from ...core.protocol import dense_weight, shared_of
from ...core.select import Target
from ...errors import DataError
from .calibration import Calibration, run_model

FisherLoss = Callable[[Any, Any], torch.Tensor]


def fisher_importance(model: nn.Module, targets: list[Target], calibration: Calibration,
                      loss: FisherLoss | None = None, seed: int = 0,
                      embeddings: bool = False) -> dict[str, torch.Tensor]:
    """{target name: mean over batches of (d loss / d weight)^2}, weight-shaped float64,
    for dense Linear / Conv / Conv1D targets, and embedding tables with ``embeddings``
    (whose rows of tokens the calibration never used get 0; the codebook fit leaves
    embeddings unweighted for that reason).

    Example:
        >>> lin = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False))
        >>> _ = lin[0].weight.data.copy_(torch.tensor([[1.0, 2.0]]))
        >>> from weightshare.core.select import select_targets
        >>> fi = fisher_importance(lin, select_targets(lin), [torch.tensor([[3.0, 4.0]])],
        ...                        loss=lambda out, batch: out.sum())
        >>> fi["0"].tolist()  # d(w . x)/dw = x, squared
        [[9.0, 16.0]]
    """
    if callable(calibration):
        raise DataError("weighting='fisher' needs calibration batches (an iterable), not a "
                        "callable; pass a list of batches")
    chosen = [t for t in targets if (embeddings or not isinstance(t.module, nn.Embedding))
              and shared_of(t.module, "weight") is None]
    if not chosen:
        return {}
    flags = {id(p): p.requires_grad for p in model.parameters()}
    params: list[torch.Tensor] = [dense_weight(t.module) for t in chosen]
    sums = [torch.zeros(p.shape, dtype=torch.float64) for p in params]
    gen = torch.Generator().manual_seed(seed)
    batches = 0
    try:
        for param in model.parameters():
            param.requires_grad_(False)
        for w in params:
            w.requires_grad_(True)
        with eval_mode(model, inference=False), torch.enable_grad():
            for batch in calibration:
                value = _loss(run_model(model, batch), batch, loss, gen)
                grads = torch.autograd.grad(value, params, allow_unused=True)
                for s, g in zip(sums, grads):
                    if g is not None:
                        s += g.detach().double() ** 2
                batches += 1
    finally:
        for param in model.parameters():
            param.requires_grad_(flags.get(id(param), param.requires_grad))
    if batches == 0:
        raise DataError("calibration data is empty; pass at least one batch")
    return {t.name: s / batches for t, s in zip(chosen, sums)}


def floored(fisher: torch.Tensor) -> torch.Tensor:
    """Fisher importance plus its mean: what the codebook fit weights values by.

    Squared gradients span many decades, and a weighted k-means ignores the values that
    weigh nothing: on all-MiniLM-L6-v2 the few large weights of the feed-forward outputs
    (|w| ~ 3, where most are ~ 0.05) have small gradients, and a pure Fisher fit clipped
    them to 0.14, collapsing the model (held-out cosine 0.13). The floor keeps every
    value in the fit while the sensitive ones still pull harder.
    """
    return fisher + fisher.mean()


def _loss(out: Any, batch: Any, loss: FisherLoss | None, gen: torch.Generator) -> torch.Tensor:
    if loss is not None:
        return loss(out, batch)
    own = getattr(out, "loss", None)
    if isinstance(own, torch.Tensor):
        return own
    logits = getattr(out, "logits", None)
    mask = token_mask(batch)
    if isinstance(logits, torch.Tensor):
        with torch.no_grad():
            probs = F.softmax(logits.detach().double(), -1).reshape(-1, logits.shape[-1])
            labels = torch.multinomial(probs, 1, generator=gen).reshape(logits.shape[:-1])
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                             reduction="none").reshape(labels.shape)
        if mask is not None and mask.shape == ce.shape:
            ce = ce * mask
        return ce.sum()
    t = first_tensor(out)
    v = torch.randn(t.shape, generator=gen, dtype=torch.float32).to(t.dtype)
    if mask is not None and t.dim() == 3 and t.shape[:2] == mask.shape:
        v = v * mask.unsqueeze(-1).to(t.dtype)
    return (t * v).sum()
