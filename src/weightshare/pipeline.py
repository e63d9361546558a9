"""The main jobs, as Python functions the CLI calls: load -> share -> measure -> save.

Each returns a JSON-serialisable dict (the CLI's ``--json`` output).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from .codebook import ClusterConfig, cluster_
from .errors import FormatError, ModelLoadError
from .models import LoadedModel, load_model, minilm_dir

MINILM = "minilm"


def open_model(spec: str = MINILM) -> LoadedModel:
    """A transformers directory or hub id, a weightshare file, or ``minilm`` (the default).

    Example:
        >>> lm = open_model("minilm")  # doctest: +SKIP
        >>> lm.kind
        'sentence-embedding'
    """
    path = Path(spec)
    if path.suffix == ".safetensors" and not path.is_file():
        raise FormatError(f"no such file: {spec}; check the path")
    if path.is_file():
        from .io import load, read_metadata

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
        from .data.sentences import eval_sentences
        from .fidelity import embed

        self.lm = lm
        self.sentences = eval_sentences()
        if lm.tokenizer is not None and lm.kind == "sentence-embedding":
            self.reference = embed(lm.model, lm.tokenizer, self.sentences)
        else:
            self.inputs = self._probe_inputs()
            with torch.inference_mode():
                self.reference = _first_tensor(lm.model(**self.inputs)
                                               if isinstance(self.inputs, dict)
                                               else lm.model(self.inputs)).clone()

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
        from .fidelity import embed, embedding_fidelity

        if self.lm.tokenizer is not None and self.lm.kind == "sentence-embedding":
            return embedding_fidelity(self.reference, embed(candidate, self.lm.tokenizer,
                                                            self.sentences))
        with torch.inference_mode():
            out = _first_tensor(candidate(**self.inputs) if isinstance(self.inputs, dict)
                                else candidate(self.inputs))
        err = (out - self.reference).norm() / self.reference.norm().clamp(min=1e-30)
        return {"relative_error": float(err)}


def _first_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        return next(v for v in output.values() if isinstance(v, torch.Tensor))
    return next(v for v in output if isinstance(v, torch.Tensor))


def calibration_batches(lm: LoadedModel, count: int = 128, batch_size: int = 32) -> list[dict]:
    """Tokenised calibration sentences (disjoint from the evaluation sentences)."""
    from .data.sentences import calibration_sentences

    if lm.tokenizer is None:
        raise ModelLoadError(f"{lm.name} has no tokenizer, so built-in calibration text "
                             "cannot be used; pass calibration batches through the Python API")
    texts = calibration_sentences()[:count]
    return [dict(lm.tokenizer(texts[i:i + batch_size], padding=True, truncation=True,
                              max_length=128, return_tensors="pt"))
            for i in range(0, len(texts), batch_size)]


def default_output(spec: str, bits: int) -> Path:
    stem = Path(spec).stem if spec != MINILM else MINILM
    return Path(f"{stem}-{bits}bit.safetensors")


def compress(spec: str = MINILM, config: ClusterConfig | None = None,
             output: str | Path | None = None, *, calibrate: bool = False,
             measure: bool = True, progress: bool | None = None) -> dict[str, Any]:
    """Load a model, cluster it to codebooks, save it, measure it. Returns the summary.

    Example:
        >>> summary = compress("minilm", ClusterConfig(bits=4), "m.safetensors")  # doctest: +SKIP
        >>> summary["ratio"] > 7.5
        True
    """
    from .io import save
    from .report import inspect

    config = config or ClusterConfig()
    out = Path(output) if output else default_output(spec, config.bits)
    t0 = time.perf_counter()
    lm = open_model(spec)
    t_load = time.perf_counter() - t0
    dense = inspect(lm.model)
    fidelity = Fidelity(lm) if measure else None
    calibration = calibration_batches(lm) if calibrate else None

    t0 = time.perf_counter()
    cluster_(lm.model, config, calibration, progress=progress)
    t_cluster = time.perf_counter() - t0

    t0 = time.perf_counter()
    save(lm.model, out, extra=provenance(lm))
    t_save = time.perf_counter() - t0

    after = inspect(lm.model)
    clustered = [r for r in after.rows if r.scheme == "codebook"]
    code_values = sum(_numel(r.shape) for r in clustered)
    code_bytes = sum(r.stored_bytes for r in clustered)
    file_bytes = out.stat().st_size
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
        "seconds": {"load": t_load, "cluster": t_cluster, "save": t_save},
        "fidelity": fidelity.score(lm.model) if fidelity else None,
    }


def evaluate(path: str | Path, reference: str = MINILM) -> dict[str, Any]:
    """Fidelity of a saved file against the model it came from (held-out inputs)."""
    from .report import inspect

    ref = open_model(reference)
    cand = open_model(str(path))
    if ref.tokenizer is not None and cand.tokenizer is None:
        cand.tokenizer = ref.tokenizer
    fid = Fidelity(ref)
    rep = inspect(path)
    return {"file": str(path), "reference": reference, "file_bytes": rep.file_bytes,
            "dense_bytes": ref_dense(ref), "fidelity": fid.score(cand.model)}


def ref_dense(lm: LoadedModel) -> int:
    from .report import inspect

    return inspect(lm.model).dense_bytes


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
