"""Layer-input statistics for error feedback: H = E[x x^T] of each layer's input.

For y = W x the squared output error of a perturbation dW is tr(dW H dW^T) with
H = E[x x^T] over calibration tokens; GPTQ-style assignment (``feedback.py``) and the
codebook refit (``refit.py``) minimise exactly that. The diagonal of H is the activation
importance of ``calibration.py``.

Sequential mode compresses the layers in the order the model runs them: each *stage* is
the set of layers that read the same input tensor (query, key and value of one attention
block), and a stage's H is measured with every earlier stage already compressed. A
stage's calibration pass stops as soon as the stage's layers have seen their inputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ...core.batches import eval_mode
from ...core.select import Target
from .calibration import Calibration, run_calibration


def takes_hessian(target: Target) -> bool:
    """Whether error feedback applies: Linear and transformers Conv1D weights (inputs on
    the last dimension), and ``nn.Conv2d`` with zero padding and one group (its inputs
    are the unfolded patches, which ``weight.reshape(out, -1)`` multiplies). Embeddings
    (token ids) and other convolutions use plain assignment."""
    m = target.module
    if isinstance(m, nn.Conv2d):
        return m.groups == 1 and m.padding_mode == "zeros" and not isinstance(m.padding, str) \
            and target.axis == 0
    return isinstance(m, nn.Linear) or (type(m).__name__ == "Conv1D" and target.axis == 1)


def _view(module: nn.Module) -> tuple:
    """How a layer sees its input: two layers reading one input share H only when equal."""
    if isinstance(module, nn.Conv2d):
        return (module.kernel_size, module.dilation, module.padding, module.stride)
    return ()


def _patches(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """(patches, in x kh x kw) rows of a Conv2d input: what each output position sees."""
    cols = torch.nn.functional.unfold(x, conv.kernel_size, conv.dilation,
                                      conv.padding, conv.stride)  # type: ignore[arg-type]
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


class _Stop(Exception):
    """Raised from a hook once a stage's layers have seen their inputs: the rest of the
    forward pass is not needed."""


class _Recorder:
    """Forward hooks that accumulate x^T x of the hooked layers' inputs (real tokens)."""

    def __init__(self, targets: Sequence[Target], stop_after: int | None = None) -> None:
        self.targets = list(targets)
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.order: list[tuple[str, int]] = []  # (target, id of its input) per call
        self.mask: torch.Tensor | None = None
        self.stop_after = stop_after  # hook calls per batch after which to stop
        self.calls = 0
        self.keep: list[torch.Tensor] | None = None
        self.last: tuple[torch.Tensor, torch.Tensor, int, tuple] | None = None

    def hook(self, target: Target):  # noqa: ANN201 - a forward hook
        def fn(_module: nn.Module, args: tuple, _out: Any) -> None:
            x = args[0].detach()
            if self.keep is not None:  # held so that ids of freed tensors are not reused
                self.keep.append(args[0])
            self.order.append((target.name, id(args[0])))
            m = self.mask
            last = self.last
            view = _view(target.module)
            if last is not None and last[0] is args[0] and last[3] == view:
                xtx, n = last[1], last[2]  # same input as the layer before (q, k, v): once
            else:
                if isinstance(target.module, nn.Conv2d):
                    x = _patches(target.module, x if x.dim() == 4 else x.unsqueeze(0))
                elif m is not None and x.dim() == 3 and x.shape[:2] == m.shape:
                    x = x[m]  # (real tokens, features): padding is no data
                x = x.reshape(-1, x.shape[-1]).float()
                # float32 product per batch (the costly part), float64 running sums
                xtx, n = (x.T @ x).double(), x.shape[0]
                self.last = (args[0], xtx, n, view)
            self.sums[target.name] = self.sums.get(target.name, 0) + xtx
            self.counts[target.name] = self.counts.get(target.name, 0) + n
            self.calls += 1
            if self.stop_after is not None and self.calls >= self.stop_after:
                raise _Stop
        return fn

    def on_batch(self, batch: Any) -> None:
        m = batch.get("attention_mask") if isinstance(batch, dict) else None
        self.mask = None if m is None else m.bool()
        self.calls = 0
        self.last = None


def _record(model: nn.Module, targets: Sequence[Target], calibration: Calibration,
            stop_after: int | None = None, first_batch_only: bool = False) -> _Recorder:
    rec = _Recorder(targets, stop_after)
    if first_batch_only:
        rec.keep = []
    hooks = [t.module.register_forward_hook(rec.hook(t)) for t in targets]
    batches = calibration
    if first_batch_only and not callable(calibration):
        batches = [next(iter(calibration))]
    try:
        with eval_mode(model, inference=False):  # no_grad inside; H stays a normal tensor
            _run_stoppable(model, batches, rec)
    finally:
        for h in hooks:
            h.remove()
    return rec


def _run_stoppable(model: nn.Module, calibration: Calibration, rec: _Recorder) -> None:
    if callable(calibration):
        with contextlib.suppress(_Stop):
            calibration(model)
        return
    for batch in calibration:
        try:
            run_calibration(model, [batch], rec.on_batch)
        except _Stop:
            continue


def input_hessians(model: nn.Module, targets: Sequence[Target], calibration: Calibration,
                   stop_after: int | None = None) -> dict[str, torch.Tensor]:
    """{target name: H (in, in) float64} = mean of x x^T over the calibration tokens, for
    the targets that take one (``takes_hessian``) and saw at least one input.

    Example:
        >>> from weightshare.core.select import select_targets
        >>> lin = torch.nn.Sequential(torch.nn.Linear(3, 2))
        >>> x = torch.tensor([[1.0, 0.0, 2.0]])
        >>> input_hessians(lin, select_targets(lin), [x])["0"].tolist()
        [[1.0, 0.0, 2.0], [0.0, 0.0, 0.0], [2.0, 0.0, 4.0]]
    """
    hooked = [t for t in targets if takes_hessian(t)]
    if not hooked:
        return {}
    rec = _record(model, hooked, calibration, stop_after)
    return {name: s / max(rec.counts[name], 1) for name, s in rec.sums.items()}


def forward_stages(model: nn.Module, targets: Sequence[Target],
                   calibration: Calibration) -> list[tuple[list[Target], int]]:
    """The targets in the order the model runs them, grouped into stages of layers that
    read the same input; with each stage, the number of hook calls (of the stage's
    layers) after which its calibration pass may stop. Targets never run come last, in
    one stage that needs a full pass (stop count None is given as 0)."""
    by_name = {t.name: t for t in targets}
    rec = _record(model, targets, calibration, first_batch_only=True)
    stages: list[tuple[list[Target], int]] = []
    seen: set[str] = set()
    input_of: dict[int, int] = {}  # id of an input tensor -> its stage
    for name, inp in rec.order:
        if name in seen:
            continue
        seen.add(name)
        if inp in input_of:
            stages[input_of[inp]][0].append(by_name[name])
        else:
            input_of[inp] = len(stages)
            stages.append(([by_name[name]], 0))
    # a stage's pass may stop once its layers have been called as often as in one forward
    out = []
    for members, _ in stages:
        names = {t.name for t in members}
        out.append((members, sum(1 for n, _ in rec.order if n in names)))
    rest = [t for t in targets if t.name not in seen]
    if rest:
        out.append((rest, 0))
    return out
