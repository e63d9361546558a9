"""Trained codebooks: distil a clustered model toward its original, codes fixed.

``finetune_codebooks_`` trains what a codebook model stores as floats (the codebooks,
per-channel scales, exact outlier values) plus the biases and normalisation layers, with
the project's distillation (``train.distill_``: cosine loss on pooled and token
embeddings for encoders, KL for logits); the codes stay as they are, unless
``reassign_every=N`` re-assigns them to the nearest entries of the trained codebooks
every N steps. ``method="dkm"`` trains the dense weights through differentiable k-means
instead (``dkm.py``) and turns them back into codes at the end.

A step whose loss is not finite stops the run: the trainable tensors are restored to
their values after the last good step, and a ``RuntimeWarning`` says so (``history``,
if given, also receives an ``{"event": "diverged", ...}`` entry).
"""

from __future__ import annotations

import time
import types
import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...core.protocol import iter_shared
from ...errors import ConfigError, DataError
from ...train.distill import distill_
from ...train.hooks import StepCallback, StepInfo
from .feedback import RowCodebooks
from .vector import VectorCodebookWeight
from .weight import CodebookWeight

METHODS = ("codebooks", "dkm")
KINDS = (CodebookWeight, VectorCodebookWeight)


def finetune_codebooks_(model: nn.Module, teacher: nn.Module, data: Any, *,
                        seconds: float | None = None, steps: int | None = None,
                        lr: float = 1e-4, method: str = "codebooks",
                        reassign_every: int = 0, train_biases: bool = True,
                        train_norms: bool = True, train_embeddings: bool = False,
                        tokenizer: Any = None, batch_size: int = 16,
                        augment: bool = False, seed: int = 0,
                        history: list[dict] | None = None, progress: bool | None = None,
                        callbacks: Sequence[StepCallback] = (), **distill_options: Any
                        ) -> nn.Module:
    """Train the codebooks of ``model`` (clustered by ``cluster_``) toward ``teacher`` (the
    original model) on ``data``, in place; returns ``model``.

    ``data``: batches, or sentences with ``tokenizer`` (as ``distill_`` takes them); use
    text disjoint from what you will evaluate on. Budget: ``seconds`` and/or ``steps``
    (whichever ends first). ``lr``: AdamW learning rate (cosine decay).
    ``train_embeddings=False`` keeps the codebooks of (untied) embedding tables fixed and
    expands them once instead of every step: a 30k-row table costs more to expand than
    it gains from training. ``method``:
    ``"codebooks"`` (codes fixed) or ``"dkm"`` (differentiable k-means over the teacher's
    dense weights, scalar per-tensor codebooks). Other keywords go to ``distill_``.

    Example:
        >>> import copy, torch, weightshare as ws
        >>> teacher = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Tanh(),
        ...                               torch.nn.Linear(16, 4))
        >>> model = ws.cluster_(copy.deepcopy(teacher), ws.ClusterConfig(bits=2, min_size=0))
        >>> x = torch.randn(256, 16)
        >>> before = (model(x) - teacher(x)).pow(2).mean().item()
        >>> _ = ws.finetune_codebooks_(model, teacher, [x], steps=50, lr=1e-2)
        >>> (model(x) - teacher(x)).pow(2).mean().item() < before
        True
    """
    check_budget(seconds, steps)
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if isinstance(reassign_every, bool) or not isinstance(reassign_every, int) \
            or reassign_every < 0:
        raise ConfigError(f"reassign_every must be an integer >= 0, got {reassign_every!r}")
    weights = [(fqn, m, a, w, o) for fqn, m, a, w, o in iter_shared(model)
               if isinstance(w, KINDS)]
    if not weights:
        raise ConfigError("the model has no codebook weights to fine-tune; run ws.cluster_ "
                          "first")
    frozen = [] if train_embeddings or method == "dkm" else _frozen_tables(model, weights)
    weights = [x for x in weights if all(x[1] is not f for f in frozen)]
    if method == "dkm":
        from .dkm import DKMSession

        session = DKMSession(model, teacher, weights, seconds, steps)
        extra: list[StepCallback] = [session.anneal]
    else:
        session = None
        extra = []
    flags = {id(p): p.requires_grad for p in model.parameters()}
    try:
        trainable = _trainable(model, weights, train_biases, train_norms, session)
        guard = NanGuard(trainable, history)
        extra.append(guard)
        if reassign_every and method == "codebooks":
            extra.append(_Reassign(model, teacher, weights, reassign_every))
        distill_(model, teacher, data, steps=steps, lr=lr, time_budget=seconds,
                 tokenizer=tokenizer, batch_size=batch_size, augment=augment, seed=seed,
                 history=history, progress=progress, callbacks=[*extra, *callbacks],
                 **distill_options)
    finally:
        for p in model.parameters():
            p.requires_grad_(flags.get(id(p), True))
        for module in frozen:  # the module's own forward, back
            del module.forward
        if session is not None:
            session.finalize()
    return model


def _frozen_tables(model: nn.Module, weights: list) -> list[nn.Module]:
    """Make untied codebook embedding tables look up a dense copy of their value (no
    gradient) for the run, instead of expanding their codebook every step; returns the
    modules, whose own ``forward`` comes back by deleting the instance attribute.

    Only the instance's ``forward`` changes: removing the parametrization instead would
    edit its class, which ``copy.deepcopy`` shares between a clustered model and its
    copies (fine-tuning a copy then broke the original's table)."""
    users: dict[int, int] = {}  # modules holding each weight (a tied table: several)
    sharers: dict[int, set[int]] = {}  # weights using each codebook (cross-layer: several)
    for _fqn, _m, _a, w, o in iter_shared(model, remove_duplicate=False):
        users[id(w)] = users.get(id(w), 0) + 1
        sharers.setdefault(id(o), set()).add(id(w))
    frozen: list[nn.Module] = []
    for _fqn, module, attr, weight, original in weights:
        if isinstance(module, nn.Embedding) and attr == "weight" and users[id(weight)] == 1 \
                and len(sharers[id(original)]) == 1:
            with torch.no_grad():
                dense = getattr(module, attr).detach().clone()
            module.forward = types.MethodType(  # type: ignore[method-assign]
                partial(_dense_lookup, table=dense), module)
            frozen.append(module)
    return frozen


def _dense_lookup(module: nn.Embedding, ids: torch.Tensor, table: torch.Tensor
                  ) -> torch.Tensor:
    return F.embedding(ids, table, module.padding_idx, module.max_norm, module.norm_type,
                       module.scale_grad_by_freq, module.sparse)


def check_budget(seconds: float | None, steps: int | None) -> None:
    if seconds is None and steps is None:
        raise ConfigError("give a fine-tuning budget: seconds=S and/or steps=N")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(
            seconds, (int, float)) or not seconds > 0):
        raise ConfigError(f"a fine-tuning budget of {seconds!r} seconds trains nothing; give "
                          "seconds > 0 (e.g. 600), or skip fine-tuning")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                              or steps < 1):
        raise ConfigError(f"a fine-tuning budget of {steps!r} steps trains nothing; give "
                          "steps >= 1, or skip fine-tuning")


def _trainable(model: nn.Module, weights: list, biases: bool, norms: bool,
               session: Any) -> list[nn.Parameter]:
    """Freeze everything, then unfreeze what codebook fine-tuning trains."""
    for p in model.parameters():
        p.requires_grad_(False)
    chosen: dict[int, nn.Parameter] = {}
    for _fqn, _m, _a, weight, original in weights:
        for p in [original, *weight.parameters()]:
            chosen[id(p)] = p
    if session is not None:
        for p in session.parameters():
            chosen[id(p)] = p
    for module in model.modules():
        is_norm = "norm" in type(module).__name__.lower()
        for pname, p in module.named_parameters(recurse=False):
            if (norms and is_norm) or (biases and pname == "bias"):
                chosen[id(p)] = p
    for p in chosen.values():
        if p.is_floating_point():
            p.requires_grad_(True)
    return [p for p in chosen.values() if p.requires_grad]


class NanGuard:
    """Step callback: remembers the trainable tensors after every good step; on a
    non-finite loss (or parameter) restores them, warns and stops training."""

    def __init__(self, params: list[nn.Parameter], history: list[dict] | None = None,
                 every: int = 1) -> None:
        self.params = params
        self.history = history
        self.every = every
        self.good = [p.detach().clone() for p in params]
        self.good_step = 0
        self.diverged_at: int | None = None

    def __call__(self, info: StepInfo) -> bool:
        finite = torch.isfinite(torch.tensor(info.loss)) and all(
            bool(torch.isfinite(p).all()) for p in self.params)
        if finite:
            if info.step % self.every == 0:
                for saved, p in zip(self.good, self.params):
                    saved.copy_(p.detach())
                self.good_step = info.step
            return True
        with torch.no_grad():
            for saved, p in zip(self.good, self.params):
                p.copy_(saved)
        self.diverged_at = info.step
        message = (f"fine-tuning diverged at step {info.step} (loss {info.loss}); restored the "
                   f"codebooks of step {self.good_step} and stopped; lower lr")
        if self.history is not None:
            self.history.append({"event": "diverged", "step": info.step,
                                 "restored_step": self.good_step})
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        return False


class _Reassign:
    """Every ``every`` steps, codes = the nearest entries of the current codebooks to the
    teacher's dense weights (scales applied)."""

    def __init__(self, model: nn.Module, teacher: nn.Module, weights: list, every: int) -> None:
        dense = dict(teacher.named_parameters())
        self.items = []
        for fqn, _m, _a, weight, original in weights:
            if fqn not in dense:
                raise DataError(f"reassign_every needs the teacher's dense {fqn}, which the "
                                "teacher lacks; pass the original model as teacher")
            self.items.append((weight, original, dense[fqn].detach()))
        self.every = every

    @torch.no_grad()
    def __call__(self, info: StepInfo) -> None:
        if info.step % self.every:
            return
        for weight, original, dense in self.items:
            reassign(weight, original, dense)


@torch.no_grad()
def reassign(weight: CodebookWeight | VectorCodebookWeight, codebook: torch.Tensor,
             dense: torch.Tensor) -> None:
    """Codes of ``weight`` = nearest entries of ``codebook`` to ``dense`` (in place)."""
    rows = dense.shape[weight.axis]
    w = dense.movedim(weight.axis, 0).reshape(rows, -1).double()
    d = getattr(weight, "vector_dim", 1)
    cb = codebook.detach().double().reshape(weight.num_groups, weight.levels, d)
    books = RowCodebooks(cb, rows, None if weight.scales is None else weight.scales.detach())
    codes = books.nearest_all(w)
    if isinstance(weight, CodebookWeight):
        moved = list(dense.movedim(weight.axis, 0).shape)
        codes = codes.reshape(moved).movedim(0, weight.axis)
    weight.codes.copy_(codes.reshape(weight.codes.shape).to(weight.codes.dtype))


def finetune_summary(model: nn.Module, teacher: nn.Module, data: Any, before: Any = None,
                     **options: Any) -> dict[str, Any]:
    """``finetune_codebooks_`` (same arguments), then ``model.eval()``; returns what the CLI
    reports: ``seconds``, ``steps``, ``diverged`` (the divergence event, or None) and
    ``fidelity_before`` (``before``, measured by the caller)."""
    history: list[dict] = []
    t0 = time.perf_counter()
    finetune_codebooks_(model, teacher, data, history=history, **options)
    model.eval()
    return {"seconds": time.perf_counter() - t0,
            "steps": sum(1 for h in history if "loss" in h),
            "diverged": next((h for h in history if h.get("event") == "diverged"), None),
            "fidelity_before": before}
