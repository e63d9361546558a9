"""What the verbs measure, chosen from what the model is: one :class:`Fidelity` for all.

* causal language models with a tokenizer: perplexity of the original and the shared
  model, KL divergence and top-1 next-token agreement on held-out text
  (``lm_fidelity.py``);
* sentence-embedding models with a tokenizer: cosine of the sentence embeddings and
  top-1 retrieval agreement on held-out sentences (``fidelity.py``);
* any other model: the relative L2 error of its main output (``last_hidden_state`` or
  ``logits``) on held-out sentences, or on seeded random token ids when there is no
  tokenizer.

Every result says what was measured (``measured``), on which text, so a number is never
read out of context. The held-out text comes from a ``TextSplit``: never calibration
text.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.batches import eval_mode, first_tensor, run_batch
from ..data.split import TextSplit, split_texts, spread
from ..errors import ModelLoadError
from .fidelity import embed, embedding_fidelity
from .lm_fidelity import LMReference, token_windows

MAX_SENTENCES = 1000  # held-out sentences for embedding fidelity (the built-in set: 642)
PROBE_SENTENCES = 64  # for the relative output error


def max_positions(model: torch.nn.Module, default: int = 1024) -> int:
    """The longest sequence a transformers model takes (its config), else ``default``."""
    config = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 1:
            return value
    return default


class Fidelity:
    """Records the original model's outputs on held-out inputs, then scores candidates.

    ``lm`` is a ``LoadedModel`` (``model``, ``tokenizer``, ``kind``). ``max_tokens`` and
    ``seq_len``: the held-out tokens a causal LM is measured on, in windows.

    Example:
        >>> from weightshare.models import load_model
        >>> lm = load_model("minilm")  # doctest: +SKIP
        >>> Fidelity(lm).score(lm.model)["cosine_mean"]  # doctest: +SKIP
        1.0
    """

    def __init__(self, lm: Any, texts: TextSplit | None = None, *, max_tokens: int = 8192,
                 seq_len: int = 128) -> None:
        texts = texts or split_texts()
        model, tok = lm.model, lm.tokenizer
        source = texts.evaluation_source
        self.lm_reference: LMReference | None = None
        self.sentences: list[str] | None = None
        if lm.kind == "causal-lm" and tok is not None:
            seq = min(seq_len, max_positions(model))
            windows = token_windows(texts.evaluation, tok, seq, max_tokens)
            self.metric = "language-model"
            self.lm_reference = LMReference(model, windows)
            self.measured = (f"next-token predictions on {self.lm_reference.tokens:,} held-out "
                             f"tokens ({source})")
        elif lm.kind == "sentence-embedding" and tok is not None:
            self.metric = "sentence-embedding"
            self.sentences = spread(texts.evaluation, MAX_SENTENCES)
            self.reference = embed(model, tok, self.sentences)
            self.measured = f"embeddings of {len(self.sentences)} held-out sentences ({source})"
        else:
            self.metric = "relative-error"
            self.inputs, what = _probe_inputs(lm, texts)
            with eval_mode(model):
                out = run_batch(model, self.inputs)
            self.output_name = _output_name(out)
            self.reference = first_tensor(out).float().clone()
            self.measured = f"relative L2 error of the model's {self.output_name} on {what}"
        self.tokenizer = tok

    def score(self, candidate: torch.nn.Module) -> dict[str, Any]:
        """The metrics of ``candidate`` against the recorded original, with ``metric``
        (which kind of measurement) and ``measured`` (what, on which inputs)."""
        if self.lm_reference is not None:
            result = self.lm_reference.score(candidate)
        elif self.sentences is not None:
            result = embedding_fidelity(self.reference,
                                        embed(candidate, self.tokenizer, self.sentences))
            result["num_sentences"] = len(self.sentences)
        else:
            with eval_mode(candidate):
                out = first_tensor(run_batch(candidate, self.inputs)).float()
            err = (out - self.reference).norm() / self.reference.norm().clamp(min=1e-30)
            result = {"relative_error": float(err)}
        return {**result, "metric": self.metric, "measured": self.measured}


def _probe_inputs(lm: Any, texts: TextSplit) -> tuple[Any, str]:
    if lm.tokenizer is not None:
        sentences = spread(texts.evaluation, PROBE_SENTENCES)
        batch = dict(lm.tokenizer(sentences, padding=True, truncation=True, max_length=64,
                                  return_tensors="pt"))
        return batch, f"{len(sentences)} held-out sentences ({texts.evaluation_source})"
    vocab = getattr(getattr(lm.model, "config", None), "vocab_size", None)
    if vocab:  # a transformers model without a tokenizer: seeded random token ids
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, vocab, (16, 32), generator=gen)
        return {"input_ids": ids}, "16 x 32 seeded random token ids (the model has no tokenizer)"
    raise ModelLoadError(f"cannot measure fidelity of {lm.name}: it has no tokenizer and no "
                         "vocabulary to draw inputs from; skip the measurement (--no-eval) or "
                         "use the Python API with relative_output_error and your own inputs")


def _output_name(out: Any) -> str:
    for attr in ("last_hidden_state", "logits"):
        if isinstance(getattr(out, attr, None), torch.Tensor):
            return attr
    return "output"
