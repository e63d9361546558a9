"""Recovering quality: a short distillation of a shared (tied, relaxed, clustered) model
toward its original on unlabeled inputs.

Loss (``loss="auto"``), chosen from what the models return:

* ``last_hidden_state`` (sentence-embedding and encoder models): 1 - cosine of the
  mean-pooled embeddings plus 1 - cosine of each real token's embedding. Both
  matter: the pooled term is what users of sentence embeddings measure, the token
  term gives a denser signal per sentence.
* ``logits`` (language models, classifiers): KL(teacher || student) over the last dim.
* a plain tensor: mean squared error relative to the teacher's mean square.

Dropout stays off during distillation (the student runs in eval mode with
gradients on): with a few hundred steps the noise costs more than it regularises.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .tying.batches import as_batches, first_tensor, model_device, run_batch, to_device, token_mask

LOSSES = ("auto", "cosine", "kl", "mse")


def distill_(student: nn.Module, teacher: nn.Module, data: Any, steps: int | None = 100,
             lr: float = 1e-4, *, time_budget: float | None = None, tokenizer: Any = None,
             batch_size: int = 32, loss: str | Callable[..., torch.Tensor] = "auto",
             weight_decay: float = 0.0, max_grad_norm: float | None = 1.0,
             progress: bool | None = None, history: list[dict] | None = None,
             cache_teacher: bool = True) -> nn.Module:
    """Train ``student`` in place to reproduce ``teacher`` on ``data``; returns ``student``.

    ``data``: one batch or a list of batches (tensors, dicts of tensors, tuples), or
    sentences with ``tokenizer``; batches are cycled. Stops after ``steps`` optimizer
    steps or ``time_budget`` seconds, whichever comes first (``steps=None``: time
    only). Shared tensors are one parameter, so the optimizer updates each once.
    ``history``, if given, receives ``{"step", "loss", "seconds"}`` per step. The
    progress bar goes to stderr, and only when stderr is a terminal
    (``progress=True/False`` forces it).

    Example:
        >>> import copy, torch
        >>> from weightshare.tying import TieConfig, tie_
        >>> teacher = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(4)])
        >>> student = tie_(copy.deepcopy(teacher), TieConfig(strategy="cycle", unique=2))
        >>> log = []
        >>> _ = distill_(student, teacher, torch.randn(64, 8), steps=20, lr=1e-2, history=log)
        >>> log[-1]["loss"] < log[0]["loss"]
        True
    """
    if steps is None and time_budget is None:
        raise ConfigError("distill_ needs steps=N or time_budget=seconds (or both)")
    if steps is not None and steps < 0:
        raise ConfigError(f"steps must be >= 0, got {steps}")
    if not lr > 0:
        raise ConfigError(f"lr must be > 0, got {lr}")
    if isinstance(loss, str) and loss not in LOSSES:
        raise ConfigError(f"unknown distillation loss {loss!r}; use one of {', '.join(LOSSES)} "
                          "or a callable(student_out, teacher_out, batch)")
    batches = as_batches(data, tokenizer, batch_size=batch_size)
    device = model_device(student)
    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the student has no trainable parameter; set requires_grad=True")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    # short linear warm-up: Adam's first steps are the noisiest
    warmup = max(1, min(10, steps // 10)) if steps else 3
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    cache: dict[int, Any] = {}
    modes = (student.training, teacher.training)
    student.eval()
    teacher.eval()
    bar = _progress(steps, progress)
    start = time.perf_counter()
    step = 0
    try:
        while steps is None or step < steps:
            if time_budget is not None and time.perf_counter() - start >= time_budget:
                break
            k = step % len(batches)
            batch = to_device(batches[k], device)
            if k in cache:
                target = cache[k]
            else:
                with torch.no_grad():
                    target = run_batch(teacher, batch)
                if cache_teacher:
                    cache[k] = target
            value = _loss(loss, run_batch(student, batch), target, batch)
            loss_value = float(value.detach())
            opt.zero_grad(set_to_none=True)
            value.backward()
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            opt.step()
            sched.step()
            step += 1
            if history is not None:
                history.append({"step": step, "loss": loss_value,
                                "seconds": time.perf_counter() - start})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}")
    finally:
        if bar is not None:
            bar.close()
        student.train(modes[0])
        teacher.train(modes[1])
    return student


def _progress(steps: int | None, progress: bool | None) -> Any:
    show = sys.stderr.isatty() if progress is None else progress
    if not show:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=steps, desc="distill", file=sys.stderr, leave=False)


def _loss(kind: str | Callable[..., torch.Tensor], out: Any, target: Any,
          batch: Any) -> torch.Tensor:
    if callable(kind):
        return kind(out, target, batch)
    if kind == "auto":
        if getattr(out, "last_hidden_state", None) is not None:
            kind = "cosine"
        elif getattr(out, "logits", None) is not None:
            kind = "kl"
        else:
            kind = "mse"
    s, t = first_tensor(out).float(), first_tensor(target).float()
    if kind == "kl":
        return F.kl_div(F.log_softmax(s, -1).reshape(-1, s.shape[-1]),
                        F.log_softmax(t, -1).reshape(-1, t.shape[-1]),
                        log_target=True, reduction="batchmean")
    if kind == "mse":
        return F.mse_loss(s, t) / t.pow(2).mean().clamp(min=1e-12)
    return cosine_loss(s, t, token_mask(batch))


def cosine_loss(student: torch.Tensor, teacher: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """(1 - cos of mean-pooled embeddings) + (1 - cos of token embeddings), masked means.

    ``student``, ``teacher``: (batch, tokens, hidden); ``mask``: (batch, tokens) or None.
    """
    if student.dim() < 3:
        return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
    if mask is None:
        mask = torch.ones(student.shape[:2], dtype=torch.bool, device=student.device)
    w = mask.to(student.dtype).unsqueeze(-1)  # (B, T, 1)
    pooled_s = (student * w).sum(1) / w.sum(1).clamp(min=1)
    pooled_t = (teacher * w).sum(1) / w.sum(1).clamp(min=1)
    pooled = 1 - F.cosine_similarity(pooled_s, pooled_t, dim=-1).mean()
    tok = 1 - F.cosine_similarity(student, teacher, dim=-1)  # (B, T)
    token = (tok * w.squeeze(-1)).sum() / w.sum().clamp(min=1)
    return pooled + token
