"""Language-model fidelity: how close a shared causal LM stays to its original, on text.

On held-out text cut into windows of ``seq_len`` tokens, every position t predicts
token t + 1, and the shared model is compared with the original:

* ``perplexity_reference`` / ``perplexity``: exp of the mean next-token cross-entropy
  of the original / the shared model on the text (lower is better; what users quote);
* ``kl``: mean KL(original || shared) of the next-token distributions, in nats per
  token (0 = the same predictions);
* ``top1_agreement``: fraction of positions where both models' most likely next token
  is the same.

The original's predictions are recorded once (:class:`LMReference`), so the original
model need not be kept in memory while the shared one is built: its per-position
losses and top-1 tokens for every position, its full log-probabilities for as many
positions as ``kl_budget_bytes`` allows (64 MiB by default; ``kl_tokens`` says how many
KL was measured on: a 50k vocabulary takes 200 kB per position).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..core.batches import eval_mode, first_tensor
from ..errors import DataError


def token_windows(texts: Sequence[str], tokenizer: Any, seq_len: int = 128,
                  max_tokens: int = 8192) -> torch.Tensor:
    """The texts tokenized and joined (end-of-sequence token between samples when the
    tokenizer has one), cut into windows: (windows, seq_len) int64.

    Example:
        >>> class Tok:
        ...     eos_token_id = 0
        ...     def __call__(self, texts, add_special_tokens=False):
        ...         return {"input_ids": [[1 + len(w) for w in t.split()] for t in texts]}
        >>> token_windows(["a bb ccc", "dddd"], Tok(), seq_len=3).tolist()
        [[2, 3, 4], [0, 5, 0]]
    """
    if seq_len < 2:
        raise DataError(f"seq_len must be >= 2, got {seq_len}; pass e.g. 128")
    eos = getattr(tokenizer, "eos_token_id", None)
    ids: list[int] = []
    for start in range(0, len(texts), 256):
        encoded = tokenizer(list(texts[start:start + 256]), add_special_tokens=False)
        for row in encoded["input_ids"]:
            ids.extend(row)
            if eos is not None:
                ids.append(int(eos))
        if len(ids) >= max_tokens:
            break
    ids = ids[:max_tokens]
    if len(ids) < 2:
        raise DataError("the held-out text gives fewer than 2 tokens; pass more text")
    if len(ids) < seq_len:
        return torch.tensor([ids], dtype=torch.long)
    n = len(ids) // seq_len
    return torch.tensor(ids[:n * seq_len], dtype=torch.long).reshape(n, seq_len)


def _vocab(model: torch.nn.Module) -> int:
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", None)
    return vocab if isinstance(vocab, int) and vocab > 0 else 32768


def _logits(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    # (B, T) -> (B, T - 1, V) float32: position t predicts token t + 1
    return first_tensor(model(input_ids=batch)).float()[:, :-1]


class LMReference:
    """The original model's next-token predictions on ``windows``, to score shared models
    against (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, windows: torch.Tensor,
                 batch_size: int | None = None, kl_budget_bytes: int = 64 * 2**20) -> None:
        self.windows = windows
        # a batch's logits are (B, T, V) floats, and log-softmax / KL make a few copies:
        # keep each near 32 MiB (GPT-2's 50k vocabulary: one window of 128 at a time)
        vocab = _vocab(model)
        self.batch_size = batch_size or max(1, min(8, (32 * 2**20) // max(
            1, windows.shape[1] * vocab * 4)))
        self.nll: list[torch.Tensor] = []  # per batch: (B, T - 1) float64
        self.top1: list[torch.Tensor] = []  # per batch: (B, T - 1) int64
        self.logprobs: list[torch.Tensor] = []  # per batch within the budget: (B, T - 1, V)
        used = 0
        with eval_mode(model):
            for batch in self._batches():
                logits = _logits(model, batch)
                logp = F.log_softmax(logits, dim=-1)
                self.nll.append(-logp.gather(-1, batch[:, 1:, None])[..., 0].double())
                self.top1.append(logp.argmax(-1))
                if used + logp.numel() * 4 <= kl_budget_bytes:
                    self.logprobs.append(logp)
                    used += logp.numel() * 4
        self.tokens = sum(n.numel() for n in self.nll)
        self.kl_tokens = sum(lp.shape[0] * lp.shape[1] for lp in self.logprobs)

    def _batches(self) -> list[torch.Tensor]:
        return [self.windows[i:i + self.batch_size]
                for i in range(0, len(self.windows), self.batch_size)]

    @property
    def perplexity(self) -> float:
        return math.exp(float(sum(n.sum() for n in self.nll)) / self.tokens)

    def score(self, candidate: torch.nn.Module) -> dict[str, Any]:
        """Perplexity of both models, KL and top-1 agreement of ``candidate``."""
        nll, agree, kl = 0.0, 0, 0.0
        with eval_mode(candidate):
            for b, batch in enumerate(self._batches()):
                logp = F.log_softmax(_logits(candidate, batch), dim=-1)
                nll -= float(logp.gather(-1, batch[:, 1:, None]).double().sum())
                agree += int((logp.argmax(-1) == self.top1[b]).sum())
                if b < len(self.logprobs):
                    ref = self.logprobs[b]
                    kl += float((ref.exp() * (ref - logp)).sum(dtype=torch.float64))
        return {
            "perplexity_reference": self.perplexity,
            "perplexity": math.exp(nll / self.tokens),
            "kl": kl / self.kl_tokens if self.kl_tokens else None,
            "top1_agreement": agree / self.tokens,
            "tokens": self.tokens,
            "kl_tokens": self.kl_tokens,
        }


def lm_fidelity(reference: torch.nn.Module, candidate: torch.nn.Module, texts: Sequence[str],
                tokenizer: Any, seq_len: int = 128, max_tokens: int = 8192) -> dict[str, Any]:
    """Perplexity of both models, KL and top-1 agreement of two causal LMs on ``texts``
    (held-out text: never the calibration text).

    >>> class Bigram(torch.nn.Module):  # a stand-in causal LM: logits from the last token
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.emb = torch.nn.Embedding(8, 8)
    ...     def forward(self, input_ids):
    ...         return self.emb(input_ids)
    >>> class Tok:
    ...     eos_token_id = 0
    ...     def __call__(self, texts, add_special_tokens=False):
    ...         return {"input_ids": [[len(w) % 8 for w in t.split()] for t in texts]}
    >>> m = Bigram()
    >>> r = lm_fidelity(m, m, ["a bb ccc dddd"] * 8, Tok(), seq_len=4)
    >>> r["kl"], r["top1_agreement"], r["perplexity"] == r["perplexity_reference"]
    (0.0, 1.0, True)
    """
    windows = token_windows(texts, tokenizer, seq_len, max_tokens)
    return LMReference(reference, windows).score(candidate)
