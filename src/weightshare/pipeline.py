"""The main jobs, as Python functions the CLI calls: load -> share -> measure -> save.

Each returns a JSON-serialisable dict (the CLI's ``--json`` output).
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import torch

from .analysis.fidelity import embed, embedding_fidelity
from .analysis.report import inspect
from .analysis.similarity import block_similarity, plot_similarity
from .analysis.suggest import TiePlan, suggest_plan
from .core.batches import as_batches, first_tensor, run_batch
from .data.sentences import calibration_sentences, eval_sentences
from .data.text import read_texts
from .errors import ConfigError, FormatError, ModelLoadError
from .io import load, read_metadata, save
from .io.write import check_output_path
from .methods.codebook import ClusterConfig, cluster_, finetune_codebooks_
from .methods.codebook.finetune import check_budget
from .methods.tie import TieConfig, tie_
from .models import LoadedModel, load_model, minilm_dir
from .train.distill import distill_

MINILM = "minilm"
CODEBOOK_KINDS = ("codebook", "vector_codebook")


def open_model(spec: str = MINILM) -> LoadedModel:
    """A transformers directory or hub id, a weightshare file, or ``minilm`` (the default).

    Example:
        >>> lm = open_model("minilm")  # doctest: +SKIP
        >>> lm.kind  # doctest: +SKIP
        'sentence-embedding'
    """
    path = Path(spec)
    if path.suffix == ".safetensors" and not path.is_file():
        raise FormatError(f"no such file: {spec}; check the path")
    if path.is_file():
        meta = read_metadata(path)
        extra = meta.get("extra") or {}
        model = load(path)
        base = extra.get("base")
        return LoadedModel(model=model, tokenizer=_tokenizer_for(base), kind=extra.get(
            "kind", "torch"), name=str(path), source_dir=None)
    return load_model(spec)


def _tokenizer_for(base: str | None) -> Any | None:
    if not base:
        return None
    source = minilm_dir() if base == MINILM else Path(base)
    if not Path(source).is_dir():
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(source), local_files_only=True)


def provenance(lm: LoadedModel) -> dict[str, str]:
    """What a saved file records about where its model came from (to find the tokenizer)."""
    base = lm.name if lm.name == MINILM else (lm.source_dir or lm.name)
    return {"base": str(base), "kind": lm.kind}


class Fidelity:
    """Records the original model's outputs on held-out inputs, then scores a candidate."""

    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm
        self.sentences = eval_sentences()
        if lm.tokenizer is not None and lm.kind == "sentence-embedding":
            self.reference = embed(lm.model, lm.tokenizer, self.sentences)
        else:
            self.inputs = self._probe_inputs()
            with torch.inference_mode():
                self.reference = first_tensor(run_batch(lm.model, self.inputs)).clone()

    def _probe_inputs(self) -> Any:
        if self.lm.tokenizer is not None:
            return dict(self.lm.tokenizer(self.sentences[:64], padding=True, truncation=True,
                                          max_length=64, return_tensors="pt"))
        vocab = getattr(getattr(self.lm.model, "config", None), "vocab_size", None)
        if vocab:  # a transformers model without a tokenizer: seeded random token ids
            gen = torch.Generator().manual_seed(0)
            return {"input_ids": torch.randint(0, vocab, (16, 32), generator=gen)}
        raise ModelLoadError("cannot measure fidelity of a model without a tokenizer or "
                             "example inputs; use the Python API with relative_output_error")

    def score(self, candidate: torch.nn.Module) -> dict[str, float]:
        if self.lm.tokenizer is not None and self.lm.kind == "sentence-embedding":
            return embedding_fidelity(self.reference, embed(candidate, self.lm.tokenizer,
                                                            self.sentences))
        with torch.inference_mode():
            out = first_tensor(run_batch(candidate, self.inputs))
        err = (out - self.reference).norm() / self.reference.norm().clamp(min=1e-30)
        return {"relative_error": float(err)}


def calibration_batches(lm: LoadedModel, count: int = 32, batch_size: int = 32) -> list[dict]:
    """Tokenised calibration sentences (disjoint from the evaluation sentences).

    Data-aware clustering needs only the mean square of each input feature, which a
    few hundred token vectors estimate well: 32 sentences by default."""
    if lm.tokenizer is None:
        raise ModelLoadError(f"{lm.name} has no tokenizer, so built-in calibration text "
                             "cannot be used; pass calibration batches through the Python API")
    return as_batches(calibration_sentences()[:count], lm.tokenizer, batch_size=batch_size)


def default_output(spec: str, bits: int) -> Path:
    stem = Path(spec).stem if spec != MINILM else MINILM
    return Path(f"{stem}-{bits}bit.safetensors")


def compress(spec: str = MINILM, config: ClusterConfig | None = None,
             output: str | Path | None = None, *, calibrate: bool | None = None,
             measure: bool = True, progress: bool | None = None,
             calibration_samples: int | None = None, finetune_seconds: float | None = None,
             finetune_steps: int | None = None, finetune_lr: float = 1e-4
             ) -> dict[str, Any]:
    """Load a model, cluster it to codebooks, save it, measure it. Returns the summary.

    ``calibrate`` (default: when the model has a tokenizer) makes the clustering
    data-aware with the built-in calibration sentences, which are disjoint from the
    evaluation sentences that fidelity is measured on: ``calibration_samples`` of them
    (default: 32, or 128 for error feedback, Fisher weighting and budgets, which
    estimate more than a mean square per input). ``finetune_seconds`` /
    ``finetune_steps``: then train the codebooks toward the original
    (``finetune_codebooks_``) on all built-in calibration sentences.

    Example:
        >>> summary = compress("minilm", ClusterConfig(bits=4), "m.safetensors")  # doctest: +SKIP
        >>> summary["ratio"] > 7.5  # doctest: +SKIP
        True
    """
    config = config or ClusterConfig()
    finetune = finetune_seconds is not None or finetune_steps is not None
    if finetune:
        check_budget(finetune_seconds, finetune_steps)
    if calibration_samples is not None and calibration_samples < 1:
        raise ConfigError(f"calibration_samples must be >= 1, got {calibration_samples}")
    out = check_output_path(output if output else default_output(spec, config.bits))
    t0 = time.perf_counter()
    lm = open_model(spec)
    t_load = time.perf_counter() - t0
    dense = inspect(lm.model)
    fidelity = Fidelity(lm) if measure else None
    if calibrate is None:
        calibrate = lm.tokenizer is not None
    if finetune and lm.tokenizer is None:
        raise ModelLoadError(f"{spec} has no tokenizer, so built-in sentences cannot fine-tune "
                             "it; use finetune_codebooks_ from Python with your batches")
    teacher = copy.deepcopy(lm.model) if finetune else None

    t0 = time.perf_counter()
    calibration = None
    if calibrate:
        count = calibration_samples or (128 if config.error_feedback or config.weighting
                                        == "fisher" or config.budget is not None else 32)
        calibration = calibration_batches(lm, count=count)
    cluster_(lm.model, config, calibration, progress=progress)
    t_cluster = time.perf_counter() - t0

    tuned: dict[str, Any] | None = None
    if teacher is not None:
        before = fidelity.score(lm.model) if fidelity else None
        history: list[dict] = []
        t0 = time.perf_counter()
        finetune_codebooks_(lm.model, teacher, calibration_sentences(), seconds=finetune_seconds,
                            steps=finetune_steps, lr=finetune_lr, tokenizer=lm.tokenizer,
                            history=history, progress=progress)
        diverged = next((h for h in history if h.get("event") == "diverged"), None)
        tuned = {"seconds": time.perf_counter() - t0,
                 "steps": sum(1 for h in history if "loss" in h),
                 "diverged": diverged, "fidelity_before": before}
        lm.model.eval()

    t0 = time.perf_counter()
    save(lm.model, out, extra=provenance(lm))
    t_save = time.perf_counter() - t0

    after = inspect(lm.model)
    clustered = [r for r in after.rows if r.scheme in CODEBOOK_KINDS]
    code_values = sum(math.prod(r.shape) for r in clustered)
    code_bytes = sum(r.stored_bytes for r in clustered)
    file_bytes = out.stat().st_size
    seconds = {"load": t_load, "cluster": t_cluster, "save": t_save}
    if tuned is not None:
        seconds["finetune"] = tuned["seconds"]
    return {
        "model": spec,
        "output": str(out),
        "config": config.to_dict(),
        "calibrated": calibrate,
        "total_params": dense.total_params,
        "dense_bytes": dense.dense_bytes,
        "file_bytes": file_bytes,
        "ratio": dense.dense_bytes / file_bytes,
        "clustered_tensors": len(clustered),
        "bits_per_weight": 8 * code_bytes / code_values if code_values else None,
        "seconds": seconds,
        **({"finetune": tuned} if tuned is not None else {}),
        "fidelity": fidelity.score(lm.model) if fidelity else None,
    }


def evaluate(path: str | Path, reference: str = MINILM) -> dict[str, Any]:
    """Fidelity of a saved file against the model it came from (held-out inputs)."""
    ref = open_model(reference)
    cand = open_model(str(path))
    if ref.tokenizer is not None and cand.tokenizer is None:
        cand.tokenizer = ref.tokenizer
    fid = Fidelity(ref)
    rep = inspect(path)
    return {"file": str(path), "reference": reference, "file_bytes": rep.file_bytes,
            "dense_bytes": inspect(ref.model).dense_bytes, "fidelity": fid.score(cand.model)}


def tie(spec: str = MINILM, config: Any = None, output: str | Path | None = None, *,
        cut: float | None = None, distill_steps: int = 0, distill_seconds: float | None = None,
        data: str | Path | None = None, lr: float = 1e-4, augment: bool = True,
        measure: bool = True, progress: bool | None = None) -> dict[str, Any]:
    """Load a model, tie parts of it (``TieConfig``, or with ``cut=f`` the plan that the
    redundancy analysis suggests to remove a fraction f of the parameters), optionally
    distill it back toward the original on unlabeled text, save it, measure it. Returns
    the summary.

    Distillation data: ``data`` (a text file or a directory of .txt files), else the
    built-in calibration sentences; never the evaluation sentences. ``augment``: also
    feed spliced / word-dropped variants of them (see ``distill_``).

    Example:
        >>> r = tie("minilm", TieConfig(strategy="cycle", unique=3))  # doctest: +SKIP
        >>> r["unique_params_after"] < r["unique_params_before"]  # doctest: +SKIP
        True
    """
    if cut is not None and config is not None:
        raise ConfigError("give a tie config or cut=f (a suggested plan), not both")
    if cut is None:
        config = config or TieConfig(strategy="cycle")
    out = check_output_path(output if output else f"{Path(spec).stem if spec != MINILM else MINILM}"
                                                   "-tied.safetensors")
    t0 = time.perf_counter()
    lm = open_model(spec)
    t_load = time.perf_counter() - t0
    before = inspect(lm.model)
    fidelity = Fidelity(lm) if measure else None
    texts = _distill_texts(data) if (distill_steps or distill_seconds) else None
    teacher = copy.deepcopy(lm.model) if texts is not None else None

    t0 = time.perf_counter()
    plan = suggest(lm, cut=cut) if cut is not None else None
    config = plan.config if plan is not None else config
    tie_(lm.model, config)
    t_tie = time.perf_counter() - t0
    tied_fidelity = fidelity.score(lm.model) if (fidelity and teacher is not None) else None

    t_distill = 0.0
    if texts is not None and teacher is not None:
        t0 = time.perf_counter()
        distill_(lm.model, teacher, texts, steps=distill_steps or None, lr=lr,
                 time_budget=distill_seconds, tokenizer=lm.tokenizer, augment=augment,
                 progress=progress)
        t_distill = time.perf_counter() - t0
        lm.model.eval()

    t0 = time.perf_counter()
    save(lm.model, out, extra=provenance(lm))
    t_save = time.perf_counter() - t0
    after = inspect(lm.model)
    file_bytes = out.stat().st_size
    return {
        "model": spec,
        "output": str(out),
        "config": config.to_dict(),
        **({"plan": plan.to_dict(), "plan_text": plan.describe()} if plan is not None else {}),
        "unique_params_before": before.unique_params,
        "unique_params_after": after.unique_params,
        "stored_bytes_before": before.stored_bytes,
        "stored_bytes_after": after.stored_bytes,
        "dense_bytes": before.dense_bytes,
        "file_bytes": file_bytes,
        "ratio": before.dense_bytes / file_bytes,
        "seconds": {"load": t_load, "tie": t_tie, "distill": t_distill, "save": t_save},
        "fidelity_before_distill": tied_fidelity,
        "fidelity": fidelity.score(lm.model) if fidelity else None,
    }


def _distill_texts(data: str | Path | None) -> list[str]:
    if data is None:
        return calibration_sentences()
    return read_texts(data, max_samples=4096)


def suggest(lm: LoadedModel, *, unique: int | None = None, cut: float | None = None,
            stack: str | None = None) -> TiePlan:
    """The tie plan that the redundancy analysis suggests for ``lm``, measured on the first
    32 built-in calibration sentences when the model has a tokenizer (else on weights)."""
    return suggest_plan(lm.model, unique=unique, cut=cut, inputs=_probe(lm), stack=stack,
                        tokenizer=lm.tokenizer)


def _probe(lm: LoadedModel) -> list[str] | None:
    return calibration_sentences()[:32] if lm.tokenizer is not None else None


def similarity(spec: str = MINILM, *, stack: str | None = None, unique: int | None = None,
               cut: float | None = None, plot: str | Path | None = None) -> dict[str, Any]:
    """Redundancy analysis of a model's repeated blocks on the built-in calibration
    sentences (when the model has a tokenizer), with a suggested tie plan when ``unique``
    or ``cut`` is given and a heatmap PNG when ``plot`` is given."""
    lm = open_model(spec)
    report = block_similarity(lm.model, _probe(lm), stack=stack, tokenizer=lm.tokenizer)
    result: dict[str, Any] = {"model": spec, "similarity": report.to_dict()}
    if plot:
        result["plot"] = plot_similarity(report, str(plot))
    if unique is not None or cut is not None:
        plan = suggest(lm, unique=unique, cut=cut, stack=stack)
        result["plan"] = plan.to_dict()
        result["plan_text"] = plan.describe()
    return result
