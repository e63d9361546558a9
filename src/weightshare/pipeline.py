"""The main jobs, as Python functions the CLI calls: check -> load -> share -> measure -> save.

Each returns a JSON-serialisable dict (the CLI's ``--json`` output). Every job checks
everything it can before the weights load (``preflight.py``), takes its text from one
calibration / held-out split (``data/split.py``), measures what fits the model
(``analysis/measure.py``) against one baseline (``core/baseline.py``), and writes files
that remember their base model, so every verb can be chained on them.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from pathlib import Path
from typing import Any

from .analysis.measure import Fidelity, max_positions
from .analysis.report import Report, inspect
from .analysis.similarity import block_similarity, plot_similarity
from .analysis.suggest import TiePlan, suggest_plan
from .core.batches import as_batches
from .data.split import TextSplit, split_texts, spread
from .errors import ConfigError, ModelLoadError
from .io import save
from .methods.codebook import ClusterConfig, cluster_
from .methods.codebook.finetune import finetune_summary
from .methods.tie import TieConfig, tie_
from .methods.tie.blocks import select_stack
from .models import LoadedModel
from .models.source import ModelSource, check_same_model, open_model, resolve
from .models.tokenizer import tokenizer_files
from .preflight import (
    check_calibration,
    check_cluster,
    check_cluster_config,
    check_fraction,
    check_output,
    check_path,
    check_quality_flags,
    check_tie,
    cluster_plan,
    need_tokenizer,
)
from .train.distill import distill_

MINILM = "minilm"
CALIBRATION_SAMPLES = 32
ESTIMATING_SAMPLES = 128  # for options that estimate more than a mean square per input
CODEBOOK_KINDS = ("codebook", "vector_codebook")

__all__ = ["calibration_batches", "compress", "evaluate", "open_model", "provenance",
           "similarity", "suggest", "tie"]


def provenance(lm: LoadedModel, embed_tokenizer: bool = False) -> dict[str, Any]:
    """What a saved file records about where its model came from: ``base`` (the original
    directory, hub id or ``minilm``, so that eval finds its reference and every verb its
    tokenizer), ``kind`` and, with ``embed_tokenizer``, the tokenizer files themselves."""
    out: dict[str, Any] = {"kind": lm.kind}
    if lm.base:
        out["base"] = lm.base
    if embed_tokenizer:
        files = _tokenizer_files(lm)
        if not files:
            raise ModelLoadError(f"{lm.name} has no tokenizer files to carry in the file; drop "
                                 "--embed-tokenizer")
        out["tokenizer_files"] = files
    return out


def _tokenizer_files(lm: LoadedModel) -> dict[str, str]:
    import tempfile

    if lm.source_dir and Path(lm.source_dir).is_dir():
        files = tokenizer_files(lm.source_dir)
        if files:
            return files
    if lm.tokenizer is None:
        return {}
    with tempfile.TemporaryDirectory(prefix="weightshare-tok-") as tmp:
        lm.tokenizer.save_pretrained(tmp)
        return tokenizer_files(tmp)


def calibration_batches(lm: LoadedModel, texts: TextSplit | None = None,
                        count: int = CALIBRATION_SAMPLES, batch_size: int = 32) -> list[dict]:
    """Tokenised calibration samples (never the held-out ones): the first ``count``
    built-in calibration sentences, or ``count`` samples spread over the user's text.

    Data-aware clustering needs only the mean square of each input feature, which a
    few hundred token vectors estimate well: 32 samples by default."""
    if lm.tokenizer is None:
        raise ModelLoadError(f"{lm.name} has no tokenizer, so text cannot be used for "
                             "calibration; pass calibration batches through the Python API")
    texts = texts or split_texts()
    return as_batches(texts.calibration_samples(count), lm.tokenizer, batch_size=batch_size,
                      max_length=min(128, max_positions(lm.model)))


def default_output(spec: str, suffix: str) -> Path:
    stem = Path(spec).stem if spec != MINILM else MINILM
    return Path(f"{stem}-{suffix}.safetensors")


def _texts(data: str | Path | None, eval_data: str | Path | None) -> TextSplit:
    check_path("--data", data)
    check_path("--eval-data", eval_data)
    return split_texts(data, eval_data)


def _baseline_dict(rep: Report) -> dict[str, Any]:
    return {"dense_bytes": rep.dense_bytes, "dense_dtype": rep.dense_dtype}


def compress(spec: str = MINILM, config: ClusterConfig | None = None,
             output: str | Path | None = None, *, calibrate: bool | None = None,
             measure: bool = True, progress: bool | None = None, data: str | Path | None = None,
             eval_data: str | Path | None = None, embed_tokenizer: bool = False,
             calibration_samples: int | None = None, finetune_seconds: float | None = None,
             finetune_steps: int | None = None, finetune_lr: float | None = None,
             finetune_embeddings: bool = False, entropy: bool = False) -> dict[str, Any]:
    """Load a model, cluster it to codebooks, save it, measure it. Returns the summary.

    ``calibrate`` (default: when the model has a tokenizer) makes the clustering
    data-aware on calibration text: the built-in calibration sentences, or the user's
    ``data`` (a text file or a directory); fidelity is measured on held-out text that
    calibration never sees (``data/split.py``): ``calibration_samples`` (32, or 128 for
    error feedback, Fisher or a budget). ``finetune_*``: then ``finetune_codebooks_``
    (``finetune_embeddings``, ``finetune_lr``: its ``train_embeddings``, ``lr``). ``entropy``:
    entropy-code the codes in the file (smaller; decoded exactly on loading).

    Example:
        >>> summary = compress("minilm", ClusterConfig(bits=4), "m.safetensors")  # doctest: +SKIP
        >>> summary["ratio"] > 7.5  # doctest: +SKIP
        True
    """
    config = config or ClusterConfig()
    check_cluster_config(config)
    finetune = check_quality_flags(calibration_samples, finetune_seconds, finetune_steps,
                                   finetune_embeddings, finetune_lr)
    out = check_output(output if output else default_output(spec, f"{config.bits}bit"))
    texts = _texts(data, eval_data)
    source = resolve(spec)
    tokenizer = source.tokenizer()
    if calibrate and tokenizer is None:
        need_tokenizer(source, "calibration on text", "pass --no-calibrate")
    changes = check_cluster(source, config)
    notes = {"calibration": "" if calibrate is not False else "--no-calibrate",
             "fidelity": "" if measure else "--no-eval"}
    if calibrate is None:
        calibrate = tokenizer is not None
        if not calibrate:
            notes["calibration"] = f"{source.spec} has no tokenizer" + (
                f" ({source.tokenizer_note})" if source.tokenizer_note else "")
    check_calibration(source, config, calibrate, finetune)

    t0 = time.perf_counter()
    lm = source.load()
    t_load = time.perf_counter() - t0
    dense = inspect(lm.model)
    fidelity = Fidelity(lm, texts) if measure else None
    teacher = copy.deepcopy(lm.model) if finetune else None

    t0 = time.perf_counter()
    estimating = config.error_feedback or config.weighting == "fisher" or config.budget
    count = calibration_samples or (ESTIMATING_SAMPLES if estimating else CALIBRATION_SAMPLES)
    calibration = calibration_batches(lm, texts, count=count) if calibrate else None
    if changes is None:  # no skeleton: the same plan on the loaded model, before any work
        changes = cluster_plan(lm.model, config)
    with warnings.catch_warnings():  # the fallback is reported in the summary instead
        warnings.simplefilter("ignore", UserWarning)
        cluster_(lm.model, config, calibration, progress=progress)
    t_cluster = time.perf_counter() - t0

    tuned = None if teacher is None else finetune_summary(
        lm.model, teacher, texts.calibration, fidelity.score(lm.model) if fidelity else None,
        seconds=finetune_seconds, steps=finetune_steps, tokenizer=lm.tokenizer, progress=progress,
        train_embeddings=finetune_embeddings, **({"lr": finetune_lr} if finetune_lr else {}))

    t0 = time.perf_counter()
    save(lm.model, out, extra=provenance(lm, embed_tokenizer), entropy=entropy)
    t_save = time.perf_counter() - t0

    after = inspect(lm.model)
    clustered = [r for r in after.rows if r.scheme in CODEBOOK_KINDS]
    code_values = sum(math.prod(r.shape) for r in clustered)
    code_bytes = sum(r.stored_bytes for r in clustered)
    file_bytes = out.stat().st_size
    seconds = {"load": t_load, "cluster": t_cluster, "save": t_save,
               **({"finetune": tuned["seconds"]} if tuned else {})}
    return {
        "model": spec,
        "output": str(out),
        "config": config.to_dict(),
        "calibrated": bool(calibrate),
        "calibration": ({"samples": sum(len(b["input_ids"]) for b in calibration),
                         "source": texts.calibration_source} if calibration else None),
        "notes": {k: v for k, v in notes.items() if v},
        "group_fallback": [str(c) for c in changes],
        "total_params": dense.total_params,
        **_baseline_dict(dense),
        "file_bytes": file_bytes,
        "ratio": dense.dense_bytes / file_bytes,
        "clustered_tensors": len(clustered),
        "bits_per_weight": 8 * code_bytes / code_values if code_values else None,
        "entropy": entropy,
        "codes": {"count": after.codes.codes, "fixed_bytes": after.codes.fixed_bytes,
                  "coded_bytes": after.codes.coded_bytes,
                  "entropy_bytes": after.codes.entropy_bytes},
        "seconds": seconds,
        **({"finetune": tuned} if tuned is not None else {}),
        "fidelity": fidelity.score(lm.model) if fidelity else None,
    }


def evaluate(path: str | Path, reference: str | None = None, *, data: str | Path | None = None,
             eval_data: str | Path | None = None) -> dict[str, Any]:
    """Fidelity of a saved file against the model it came from, on held-out inputs.

    ``reference`` defaults to the base model the file records; a reference of another
    architecture or vocabulary is refused before anything loads. ``data`` /
    ``eval_data``: measure on the held-out part of the same text the file was calibrated
    with (the split is the same in every verb), or on this held-out text.
    """
    texts = _texts(data, eval_data)
    cand_src = resolve(path)
    if cand_src.form != "file":
        raise ConfigError(f"eval takes a weightshare .safetensors file, got {path}; compress or "
                          "tie the model first")
    ref_spec = reference or cand_src.base
    if not ref_spec:
        raise ModelLoadError(f"{path} records no base model; pass the original with "
                             "--reference MODEL")
    ref_src = resolve(ref_spec)
    if ref_src.form == "file":
        raise ConfigError(f"--reference {ref_spec} is a weightshare file; pass the original "
                          "model (a directory, hub id or minilm)")
    check_same_model(ref_src, cand_src)
    ref = ref_src.load()
    _check_same_structure(ref, cand_src)
    cand = cand_src.load(runtime="packed")  # inference only: codes stay packed
    if cand.tokenizer is None:
        cand.tokenizer = ref.tokenizer
    fid = Fidelity(ref, texts)
    rep = inspect(path)
    return {"file": str(path), "reference": ref_spec,
            "reference_from": "--reference" if reference else "the file's base",
            "file_bytes": rep.file_bytes, **_baseline_dict(rep),
            "ratio": rep.ratio, "fidelity": fid.score(cand.model)}


def _check_same_structure(ref: LoadedModel, cand: ModelSource) -> None:
    """The reference's hf config agrees with the file's on the sizes that shape weights."""
    if ref.hf_config is None or cand.hf_config is None:
        return
    for key in ("hidden_size", "n_embd", "num_hidden_layers", "n_layer", "intermediate_size",
                "num_attention_heads", "num_key_value_heads", "vocab_size"):
        a, b = ref.hf_config.get(key), cand.hf_config.get(key)
        if a is not None and b is not None and a != b:
            raise ModelLoadError(f"the reference {ref.name} has {key}={a} but {cand.spec} was "
                                 f"made from a model with {key}={b}; pass the model the file "
                                 "was made from (--reference)")


def tie(spec: str = MINILM, config: Any = None, output: str | Path | None = None, *,
        cut: float | None = None, distill_steps: int = 0, distill_seconds: float | None = None,
        data: str | Path | None = None, lr: float = 1e-4, augment: bool = True,
        measure: bool = True, progress: bool | None = None,
        eval_data: str | Path | None = None, embed_tokenizer: bool = False) -> dict[str, Any]:
    """Load a model, tie parts of it (``TieConfig``, or with ``cut=f`` the plan that the
    redundancy analysis suggests to remove a fraction f of the parameters), optionally
    distill it back toward the original on unlabeled text, save it, measure it. Returns
    the summary.

    Distillation text: the calibration part of ``data`` (a text file or a directory of
    .txt files; see ``data/split.py``), else the built-in calibration sentences; never
    the held-out text that fidelity is measured on. ``augment``: also feed spliced /
    word-dropped variants of them (see ``distill_``).

    Example:
        >>> r = tie("minilm", TieConfig(strategy="cycle", unique=3))  # doctest: +SKIP
        >>> r["unique_params_after"] < r["unique_params_before"]  # doctest: +SKIP
        True
    """
    if cut is not None and config is not None:
        raise ConfigError("give a tie config or cut=f (a suggested plan), not both")
    check_fraction("cut", cut)
    if distill_steps < 0 or (distill_seconds is not None and distill_seconds < 0):
        raise ConfigError("distill steps and seconds must be >= 0")
    if not lr > 0:
        raise ConfigError(f"lr must be > 0, got {lr}")
    if cut is None:
        config = config or TieConfig(strategy="cycle")
    out = check_output(output if output else default_output(spec, "tied"))
    texts = _texts(data, eval_data)
    source = resolve(spec)
    distill = bool(distill_steps or distill_seconds)
    if distill:
        need_tokenizer(source, "distillation on text", "pass a model directory with its "
                       "tokenizer files, or distill through the Python API with your own "
                       "batches")
    check_tie(source, config)

    t0 = time.perf_counter()
    lm = source.load()
    t_load = time.perf_counter() - t0
    before = inspect(lm.model)
    fidelity = Fidelity(lm, texts) if measure else None
    teacher = copy.deepcopy(lm.model) if distill else None

    t0 = time.perf_counter()
    plan = suggest(lm, cut=cut) if cut is not None else None
    config = plan.config if plan is not None else config
    tie_(lm.model, config)
    t_tie = time.perf_counter() - t0
    tied_fidelity = fidelity.score(lm.model) if (fidelity and teacher is not None) else None

    t_distill = 0.0
    if teacher is not None:
        t0 = time.perf_counter()
        distill_(lm.model, teacher, spread(texts.calibration, 4096), steps=distill_steps or None,
                 lr=lr, time_budget=distill_seconds, tokenizer=lm.tokenizer, augment=augment,
                 progress=progress)
        t_distill = time.perf_counter() - t0
        lm.model.eval()
        del teacher

    t0 = time.perf_counter()
    save(lm.model, out, extra=provenance(lm, embed_tokenizer))
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
        **_baseline_dict(before),
        "file_bytes": file_bytes,
        "ratio": before.dense_bytes / file_bytes,
        "distill_text": texts.calibration_source if distill else None,
        "seconds": {"load": t_load, "tie": t_tie, "distill": t_distill, "save": t_save},
        "fidelity_before_distill": tied_fidelity,
        "fidelity": fidelity.score(lm.model) if fidelity else None,
    }


def suggest(lm: LoadedModel, *, unique: int | None = None, cut: float | None = None,
            stack: str | None = None, samples: int = CALIBRATION_SAMPLES) -> TiePlan:
    """The tie plan that the redundancy analysis suggests for ``lm``, measured on the first
    ``samples`` built-in calibration sentences when the model has a tokenizer (else on
    weights)."""
    return suggest_plan(lm.model, unique=unique, cut=cut, inputs=_probe(lm, samples),
                        stack=stack, tokenizer=lm.tokenizer)


def _probe(lm: LoadedModel, samples: int) -> list[str] | None:
    return split_texts().calibration_samples(samples) if lm.tokenizer is not None else None


def similarity(spec: str = MINILM, *, stack: str | None = None, unique: int | None = None,
               cut: float | None = None, plot: str | Path | None = None, samples: int = 4,
               window: int | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Redundancy analysis of a model's repeated blocks on ``samples`` built-in calibration
    sentences (when the model has a tokenizer), with a suggested tie plan when ``unique``
    or ``cut`` is given and a heatmap PNG when ``plot`` is given.

    The tie loss costs one forward of the model per pair of blocks: ``window`` (default:
    all pairs up to 6 blocks, pairs at most 3 apart beyond) and ``samples`` keep it cheap
    (BERT-base: 60 pairs on 4 sentences)."""
    check_fraction("cut", cut)
    if samples < 1:
        raise ConfigError(f"samples must be >= 1, got {samples}")
    if window is not None and window < 1:
        raise ConfigError(f"window must be >= 1 block, got {window}")
    if unique is not None and unique < 1:
        raise ConfigError(f"unique must be a positive number of blocks, got {unique}")
    if plot:
        check_output(plot)
    lm = resolve(spec).load()
    if window is None:
        blocks = len(select_stack(lm.model, stack).blocks)
        window = None if blocks <= 6 else 3
    report = block_similarity(lm.model, _probe(lm, samples), stack=stack,
                              tokenizer=lm.tokenizer, progress=progress, window=window)
    result: dict[str, Any] = {"model": spec, "samples": samples if lm.tokenizer else 0,
                              "window": window, "similarity": report.to_dict()}
    if plot:
        result["plot"] = plot_similarity(report, str(plot))
    if unique is not None or cut is not None:
        plan = suggest(lm, unique=unique, cut=cut, stack=stack, samples=samples)
        result["plan"] = plan.to_dict()
        result["plan_text"] = plan.describe()
    return result
