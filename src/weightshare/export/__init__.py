"""A way out: a weightshare file (or a shared model) to a format others run.

* ``hf``: a standard transformers directory (config, tokenizer, safetensors) that
  ``from_pretrained`` loads with exactly the shared model's outputs;
* ``sentence-transformers``: the same plus the pooling modules, for
  ``SentenceTransformer(dir)``;
* ``coreml``: a Core ML ML program whose clustered weights stay palettized (look-up
  tables + low-bit indices);
* ``onnx``: a dense ONNX graph, checked with onnxruntime.

:func:`export` is the job ``weightshare export FILE --to FORMAT OUT`` runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, SaveError
from .hf import check_out_dir, dense_model, to_hf, to_sentence_transformers

FORMATS = ("hf", "sentence-transformers", "coreml", "onnx")


def check_export(to: str, out: str | os.PathLike) -> None:
    """The format and output path, checked before the model loads."""
    if to not in FORMATS:
        raise ConfigError(f"unknown export format {to!r}; use one of {', '.join(FORMATS)}")
    if to in ("hf", "sentence-transformers"):
        check_out_dir(out)
    elif Path(out).exists():
        raise SaveError(f"{out} exists; choose a new name")
    elif not Path(out).parent.is_dir():
        raise SaveError(f"directory {Path(out).parent} does not exist; create it first")


def export(path: str | os.PathLike, to: str, out: str | os.PathLike) -> dict[str, Any]:
    """Export the weightshare file ``path`` (or a model directory) to ``to`` at ``out``.

    Example:
        >>> r = export("m-4bit.safetensors", "hf", "m-hf")  # doctest: +SKIP
        >>> r["format"], r["duplicated_ties"]  # doctest: +SKIP
        ('hf', 0)
    """
    from ..models.source import resolve

    check_export(to, out)
    source = resolve(path)
    if to in ("coreml", "onnx", "hf", "sentence-transformers") and not source.hf_class:
        raise ConfigError(f"{path} holds a plain torch model; export works on transformers "
                          "models (use ws.materialize_ and torch.onnx.export directly)")
    if to == "sentence-transformers" and source.kind != "sentence-embedding":
        raise ConfigError(f"{path} is a {source.kind} model, not a sentence-embedding one; "
                          "use --to hf")
    t0 = time.perf_counter()
    lm = source.load()
    vocab = int((lm.hf_config or {}).get("vocab_size") or 2)
    causal = lm.kind == "causal-lm"
    if to == "hf":
        result = to_hf(lm.model, out, lm.tokenizer)
    elif to == "sentence-transformers":
        base = _base_dir(source.base)
        result = to_sentence_transformers(lm.model, out, lm.tokenizer, base)
    elif to == "onnx":
        from .onnx import to_onnx

        result = to_onnx(lm.model, out, causal=causal, vocab=vocab)
    else:
        from .coreml import to_coreml

        result = to_coreml(lm.model, out, causal=causal, vocab=vocab)
    result.update(model=str(path), seconds=time.perf_counter() - t0)
    if source.form == "file":
        result["file_bytes"] = Path(path).stat().st_size
    return result


def _base_dir(base: str | None) -> str | None:
    from ..models.hf import MINILM_NAME, minilm_dir

    if base == MINILM_NAME:
        return str(minilm_dir())
    return base if base and Path(base).is_dir() else None


__all__ = ["FORMATS", "check_export", "dense_model", "export", "to_hf",
           "to_sentence_transformers"]
