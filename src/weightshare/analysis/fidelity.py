"""How close a shared model stays to the original: embeddings, outputs, accuracy, perplexity.

Every function runs under ``core.batches.eval_mode`` (inference mode, dropout off, every
train/eval flag restored afterwards), so dropout never adds noise to a measurement.
Measure on held-out inputs (``eval_sentences()``), never on calibration ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..core.batches import eval_mode, first_tensor, mean_pool, run_batch
from ..data.sentences import eval_sentences
from ..errors import DataError


def embed(
    model: torch.nn.Module,
    tokenizer: Any,
    sentences: Sequence[str],
    batch_size: int = 64,
    max_length: int = 128,
) -> torch.Tensor:
    """Mean-pooled sentence embeddings, shape (N, D): the average of ``last_hidden_state``
    over real tokens (padding is masked out), as sentence-transformers' MiniLM does.

    >>> from weightshare.models import load_model
    >>> m = load_model("minilm")  # doctest: +SKIP
    >>> embed(m.model, m.tokenizer, ["a cat", "a dog"]).shape  # doctest: +SKIP
    torch.Size([2, 384])
    """
    if isinstance(sentences, str) or not sentences:
        raise DataError(f"embed needs a non-empty list of strings, got {sentences!r:.80}; "
                        "pass e.g. eval_sentences()")
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}; pass a positive integer")
    # Sorting by length keeps padding (wasted compute) small; the order is restored below.
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    chunks = []
    with eval_mode(model):
        for start in range(0, len(order), batch_size):
            batch = [str(sentences[i]) for i in order[start:start + batch_size]]
            enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            hidden = first_tensor(model(**enc))  # (B, T, D)
            chunks.append(mean_pool(hidden, enc["attention_mask"]).float())  # (B, D)
    emb = torch.cat(chunks)
    result = torch.empty_like(emb)
    result[torch.tensor(order)] = emb
    return result


def _nearest_neighbours(emb: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """Index of each row's most cosine-similar other row, computed in blocks of rows."""
    unit = F.normalize(emb.double(), dim=1)
    out = torch.empty(len(unit), dtype=torch.long)
    for start in range(0, len(unit), block):
        sim = unit[start:start + block] @ unit.T  # (b, N)
        rows = torch.arange(sim.shape[0])
        sim[rows, rows + start] = -math.inf  # a sentence is not its own neighbour
        out[start:start + block] = sim.argmax(1)
    return out


def embedding_fidelity(reference_emb: torch.Tensor, candidate_emb: torch.Tensor) -> dict:
    """Compare two embeddings of the same N sentences, both of shape (N, D).

    * ``cosine_mean`` / ``cosine_min``: cosine similarity between each sentence's reference
      and candidate vector, averaged / worst case (1.0 = same direction).
    * ``top1_agreement``: fraction of sentences whose nearest other sentence (by cosine)
      is the same in both spaces, i.e. how often top-1 retrieval gives the same answer.

    >>> ref = torch.eye(3)
    >>> embedding_fidelity(ref, ref)
    {'cosine_mean': 1.0, 'cosine_min': 1.0, 'top1_agreement': 1.0}
    """
    if reference_emb.ndim != 2 or reference_emb.shape != candidate_emb.shape:
        raise DataError(f"embeddings must both be (N, D) with equal shapes, got "
                        f"{tuple(reference_emb.shape)} and {tuple(candidate_emb.shape)}; "
                        "embed the same sentences with both models")
    if len(reference_emb) < 2:
        raise DataError(f"need at least 2 sentences to compare neighbours, got "
                        f"{len(reference_emb)}; pass more sentences")
    for name, emb in (("reference", reference_emb), ("candidate", candidate_emb)):
        if not torch.isfinite(emb).all():
            raise DataError(f"{name} embeddings contain NaN or inf; check that model's weights")
    cosine = F.cosine_similarity(reference_emb.double(), candidate_emb.double(), dim=1)
    agree = _nearest_neighbours(reference_emb) == _nearest_neighbours(candidate_emb)
    return {
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        "top1_agreement": float(agree.double().mean()),
    }


def sentence_fidelity(
    reference_model: torch.nn.Module,
    candidate_model: torch.nn.Module,
    tokenizer: Any,
    sentences: Sequence[str] | None = None,
    reference_emb: torch.Tensor | None = None,
) -> dict:
    """``embedding_fidelity`` of two sentence encoders on ``sentences`` (default: the
    built-in held-out ``eval_sentences()``), plus ``num_sentences``. Pass ``reference_emb``
    (from ``embed``) to reuse the original model's embeddings across many candidates.

    >>> from weightshare.models import load_model
    >>> m = load_model("minilm")  # doctest: +SKIP
    >>> sentence_fidelity(m.model, m.model, m.tokenizer)["top1_agreement"]  # doctest: +SKIP
    1.0
    """
    if sentences is None:
        sentences = eval_sentences()
    if reference_emb is None:
        reference_emb = embed(reference_model, tokenizer, sentences)
    elif len(reference_emb) != len(sentences):
        raise DataError(f"reference_emb has {len(reference_emb)} rows but there are "
                        f"{len(sentences)} sentences; embed the same sentences")
    result = embedding_fidelity(reference_emb, embed(candidate_model, tokenizer, sentences))
    result["num_sentences"] = len(sentences)
    return result


def relative_output_error(
    reference_model: torch.nn.Module, candidate_model: torch.nn.Module, inputs: Any
) -> dict:
    """Relative L2 error of the candidate's output, ``||y_c - y_r|| / ||y_r||``, on one batch.

    ``inputs`` is a tensor, a tuple of tensors (positional arguments) or a dict (keyword
    arguments). For outputs that are tuples, dicts or ModelOutputs the first tensor counts.
    Also reports ``max_abs_error``.

    >>> net = torch.nn.Linear(4, 2)
    >>> relative_output_error(net, net, torch.randn(3, 4))["relative_error"]
    0.0
    """
    with eval_mode(reference_model, candidate_model):
        ref = first_tensor(run_batch(reference_model, inputs)).double()
        cand = first_tensor(run_batch(candidate_model, inputs)).double()
    if ref.shape != cand.shape:
        raise DataError(f"outputs differ in shape: {tuple(ref.shape)} vs {tuple(cand.shape)}; "
                        "compare models with the same output")
    diff = torch.linalg.vector_norm(cand - ref)
    norm = torch.linalg.vector_norm(ref)
    if norm > 0:
        rel = float(diff / norm)
    else:  # a zero reference: any difference is infinitely large relative to it
        rel = 0.0 if diff == 0 else math.inf
    max_abs = float((cand - ref).abs().max()) if ref.numel() else 0.0
    return {"relative_error": rel, "max_abs_error": max_abs}


def perplexity(
    model: torch.nn.Module,
    token_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    batch_size: int = 8,
) -> float:
    """exp of the mean next-token cross-entropy of a causal LM on ``token_ids`` (B, T) or (T,).

    The model returns logits (B, T, V), or an output with ``.logits``. Positions whose
    ``attention_mask`` is 0 are not predicted. A model that knows nothing (uniform logits)
    scores exactly the vocabulary size.

    >>> class Uniform(torch.nn.Module):
    ...     def forward(self, ids):
    ...         return torch.zeros(*ids.shape, 50)
    >>> round(perplexity(Uniform(), torch.randint(0, 50, (2, 16))), 6)
    50.0
    """
    ids = torch.as_tensor(token_ids)
    ids = ids.unsqueeze(0) if ids.ndim == 1 else ids
    if ids.ndim != 2 or ids.shape[1] < 2 or ids.dtype.is_floating_point:
        raise DataError(f"token_ids must be integer (B, T) with T >= 2, got {ids.dtype} "
                        f"{tuple(ids.shape)}; pass tokenized text")
    mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask)
    mask = mask.unsqueeze(0) if mask.ndim == 1 else mask
    if mask.shape != ids.shape:
        raise DataError(f"attention_mask shape {tuple(mask.shape)} differs from token_ids "
                        f"{tuple(ids.shape)}; pass the mask the tokenizer returned")
    total, count = 0.0, 0
    with eval_mode(model):
        for start in range(0, len(ids), max(1, batch_size)):
            batch, bmask = ids[start:start + batch_size], mask[start:start + batch_size]
            out = model(batch) if attention_mask is None else model(batch, attention_mask=bmask)
            logits = first_tensor(out)  # (B, T, V)
            nll = F.cross_entropy(  # position t predicts token t + 1
                logits[:, :-1].double().flatten(0, 1), batch[:, 1:].flatten(), reduction="none"
            )
            keep = bmask[:, 1:].flatten().bool()
            total += float(nll[keep].sum())
            count += int(keep.sum())
    if count == 0:
        raise DataError("no token to predict: attention_mask leaves fewer than 2 tokens per row;"
                        " pass longer sequences")
    return math.exp(total / count)


def accuracy(
    model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 256
) -> float:
    """Fraction of ``inputs`` whose argmax prediction (last dim of the output) equals ``labels``.

    >>> net = torch.nn.Linear(2, 2, bias=False)
    >>> _ = net.weight.data.copy_(torch.eye(2))
    >>> accuracy(net, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
    0.5
    """
    if len(inputs) != len(labels) or len(inputs) == 0:
        raise DataError(f"need as many labels as inputs (and at least one), got {len(inputs)} "
                        f"inputs and {len(labels)} labels; check the dataset split")
    correct = 0
    with eval_mode(model):
        for start in range(0, len(inputs), max(1, batch_size)):
            pred = first_tensor(model(inputs[start:start + batch_size])).argmax(-1)
            correct += int((pred == labels[start:start + batch_size]).sum())
    return correct / len(inputs)
