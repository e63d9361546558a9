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

import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.batches import (
    as_batches,
    first_tensor,
    is_batch,
    mean_pool,
    model_device,
    run_batch,
    to_device,
    token_mask,
)
from ..errors import ConfigError, DataError
from .hooks import Regularizer, StepCallback, StepInfo, run_callbacks, total_loss
from .teacher_cache import SentenceCache

LOSSES = ("auto", "cosine", "kl", "mse")
SCHEDULES = ("cosine", "linear", "constant")


def distill_(student: nn.Module, teacher: nn.Module, data: Any, steps: int | None = 100,
             lr: float = 1e-4, *, time_budget: float | None = None, tokenizer: Any = None,
             batch_size: int = 16, loss: str | Callable[..., torch.Tensor] = "auto",
             schedule: str = "cosine", augment: bool = False, seed: int = 0,
             weight_decay: float = 0.0, max_grad_norm: float | None = 1.0,
             progress: bool | None = None, history: list[dict] | None = None,
             cache_teacher: bool = True, regularizers: Sequence[Regularizer] = (),
             callbacks: Sequence[StepCallback] = ()) -> nn.Module:
    """Train ``student`` in place to reproduce ``teacher`` on ``data``; returns ``student``.

    ``data``: one batch or a list of batches (tensors, dicts of tensors, tuples), or
    sentences with ``tokenizer``. Every pass over the data visits it in a new seeded
    order; sentences are regrouped into new batches of ``batch_size`` of similar
    lengths each pass (fixed batches seen again and again over-fit a small calibration
    set). ``augment=True`` (sentences only) also feeds variants of them: two sentences
    spliced at their middles, or 15% of the words dropped, which widens a small set of
    inputs.
    Stops after ``steps`` optimizer steps or ``time_budget`` seconds, whichever comes
    first (``steps=None``: time only). ``schedule``: the learning rate after a short
    warm-up, ``cosine`` or ``linear`` decay to 0 over the run (measured in steps or in
    seconds, whichever ends it first) or ``constant``. Shared tensors are one
    parameter, so the optimizer updates each once. ``history``, if given, receives
    ``{"step", "loss", "lr", "seconds"}`` per step. The progress bar goes to stderr, and
    only when stderr is a terminal (``progress=True/False`` forces it).
    ``regularizers`` add their terms to the loss; ``callbacks`` run after every step and
    stop training by returning False (see ``train.hooks``). ``cache_teacher``: keep the
    teacher's outputs — per batch for batches, per sentence for an encoder on sentences
    (``teacher_cache.py``), so that the teacher runs once per input.

    Example:
        >>> import copy, torch
        >>> from weightshare import TieConfig, tie_
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
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown learning-rate schedule {schedule!r}; use one of "
                          f"{', '.join(SCHEDULES)}")
    feed = _Feed(data, tokenizer, batch_size, augment, seed)
    device = model_device(student)
    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the student has no trainable parameter; set requires_grad=True")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warmup = max(1, min(10, steps // 10)) if steps else 10  # Adam's first steps are the noisiest
    cache: dict[int, Any] = {}
    # sentences come back in new batches every pass: cache the teacher per sentence
    per_sentence = SentenceCache() if (cache_teacher and feed.sentences is not None
                                       and not augment and isinstance(loss, str)) else None
    modes = (student.training, teacher.training)
    student.eval()
    teacher.eval()
    bar = _progress(steps, progress)
    start = time.perf_counter()
    step = 0
    try:
        while steps is None or step < steps:
            elapsed = time.perf_counter() - start
            if time_budget is not None and elapsed >= time_budget:
                break
            done = max(step / steps if steps else 0.0,
                       elapsed / time_budget if time_budget else 0.0)
            for group in opt.param_groups:
                group["lr"] = lr * min(1.0, (step + 1) / warmup) * lr_factor(schedule, done)
            key, batch = feed.next()
            batch = to_device(batch, device)
            target = cache.get(key) if key is not None else None
            if target is None and per_sentence is not None and feed.texts is not None:
                target = per_sentence.target(teacher, batch, feed.texts)
            if target is None:
                with torch.no_grad():
                    target = run_batch(teacher, batch)
                if cache_teacher and key is not None:
                    cache[key] = target
            value = total_loss(_loss(loss, run_batch(student, batch), target, batch), student,
                               regularizers)
            loss_value = float(value.detach())
            opt.zero_grad(set_to_none=True)
            value.backward()
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            opt.step()
            step += 1
            info = StepInfo(step, loss_value, student, time.perf_counter() - start,
                            opt.param_groups[0]["lr"])
            if history is not None:
                history.append({"step": step, "loss": loss_value, "lr": info.lr,
                                "seconds": info.seconds})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}")
            if not run_callbacks(callbacks, info):
                break
    finally:
        if bar is not None:
            bar.close()
        student.train(modes[0])
        teacher.train(modes[1])
    return student


def lr_factor(schedule: str, done: float) -> float:
    """The learning-rate multiplier after warm-up when a fraction ``done`` of the run is over.

    Example:
        >>> lr_factor("cosine", 0.5), lr_factor("linear", 0.25), lr_factor("constant", 0.9)
        (0.5, 0.75, 1.0)
    """
    done = min(max(done, 0.0), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * done))
    if schedule == "linear":
        return 1.0 - done
    return 1.0


class _Feed:
    """Batches for distillation, a new seeded order every pass over the data.

    Sentences are drawn in pools of 8 batches; each pool is sorted by length before it
    is cut into batches (and the batches shuffled), so a batch pads little: on CPU the
    padding costs as much as the text.

    ``next()`` returns ``(key, batch)``; ``key`` identifies a batch that comes back
    unchanged (user batches), so the teacher's output on it can be cached, and is
    None for batches built afresh (sentences).
    """

    POOL = 8  # batches per length-sorted pool

    def __init__(self, data: Any, tokenizer: Any, batch_size: int, augment: bool,
                 seed: int) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        items = list(data) if isinstance(data, (list, tuple)) and not is_batch(data) else None
        self.sentences = items if items and all(isinstance(x, str) for x in items) else None
        if self.sentences is not None:
            if tokenizer is None:
                raise DataError("got sentences but no tokenizer; pass tokenizer=... (e.g. "
                                "AutoTokenizer.from_pretrained(...)) or tokenized batches")
        else:
            if augment:
                raise ConfigError("augment=True needs sentences (and a tokenizer); it cannot "
                                  "change tokenized or tensor batches")
            self.batches = as_batches(data, tokenizer, batch_size=batch_size)
        self.tokenizer, self.batch_size, self.augment = tokenizer, batch_size, augment
        self.rng = random.Random(seed)
        self.order: list[int] = []  # what is left of the current pass
        self.ready: list[list[str]] = []  # sentence batches of the current pool
        self.texts: list[str] | None = None  # the sentences of the last batch, in order

    def _take(self, count: int) -> list[int]:
        if not self.order:
            n = len(self.sentences) if self.sentences is not None else len(self.batches)
            self.order = list(range(n))
            self.rng.shuffle(self.order)
        picked, self.order = self.order[:count], self.order[count:]
        return picked

    def next(self) -> tuple[int | None, Any]:
        if self.sentences is None:
            key = self._take(1)[0]
            return key, self.batches[key]
        if not self.ready:
            texts = [self.sentences[i] for i in self._take(self.batch_size * self.POOL)]
            if self.augment:
                texts = [augment_sentence(t, self.sentences, self.rng) for t in texts]
            texts.sort(key=len)
            self.ready = [texts[i:i + self.batch_size]
                          for i in range(0, len(texts), self.batch_size)]
            self.rng.shuffle(self.ready)
        self.texts = self.ready.pop()
        return None, dict(self.tokenizer(self.texts, padding=True, truncation=True,
                                         max_length=128, return_tensors="pt"))


def augment_sentence(text: str, pool: list[str], rng: random.Random) -> str:
    """A variant of ``text`` for distillation: a third of the time its first half spliced
    with the second half of another sentence of ``pool``, a third of the time 15% of its
    words dropped, else itself. The teacher labels whatever the student sees, so variants
    need no labels; they only widen the inputs the two models are matched on.

    Example:
        >>> augment_sentence("a b c d", ["w x y z"], random.Random(1))
        'a b y z'
    """
    words, r = text.split(), rng.random()
    if r < 1 / 3 and len(words) > 1:
        other = rng.choice(pool).split()
        return " ".join(words[:len(words) // 2] + other[len(other) // 2:]) or text
    if r < 2 / 3:
        return " ".join(w for w in words if rng.random() >= 0.15) or text
    return text


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
    pooled = 1 - F.cosine_similarity(mean_pool(student, mask), mean_pool(teacher, mask),
                                     dim=-1).mean()
    w = mask.to(student.dtype)  # (B, T)
    tok = 1 - F.cosine_similarity(student, teacher, dim=-1)  # (B, T)
    token = (tok * w).sum() / w.sum().clamp(min=1)
    return pooled + token
