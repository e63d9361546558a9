"""Export to a plain transformers directory (and a sentence-transformers one).

The shared model is turned back into dense weights (``ws.materialize_``) with exactly
the values it computes with, so ``from_pretrained`` on the directory gives the shared
model's outputs bit for bit. A transformers class knows only its own ties (GPT-2's
``lm_head`` is its input embedding): those are kept, every other tie weightshare made
(cross-layer blocks) is written once per place, which is what the class expects; the
summary says how many tensors that duplicated.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.protocol import materialize_
from ..errors import SaveError

# what sentence-transformers needs beside a transformers checkpoint
ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
ST_DIRS = ("1_Pooling", "2_Normalize")


def check_out_dir(path: str | os.PathLike) -> Path:
    """An output directory that does not exist yet or is empty (never overwrite a model)."""
    out = Path(path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SaveError(f"{out} exists and is not an empty directory; choose a new directory")
    if not out.parent.is_dir():
        raise SaveError(f"directory {out.parent} does not exist; create it or choose another "
                        "output")
    return out


def dense_model(model: nn.Module) -> tuple[nn.Module, int]:
    """``model`` with plain dense weights, in place, every tie the transformers class does
    not declare undone; returns (model, tensors duplicated)."""
    materialize_(model, keep_ties=True)
    before = len({id(p) for p in model.parameters()})
    seen: set[int] = set()
    for module in model.modules():
        for attr, param in list(module._parameters.items()):
            if param is None:
                continue
            if id(param) in seen:  # a tie: its own copy now, re-tied below when declared
                module._parameters[attr] = nn.Parameter(param.detach().clone(),
                                                        requires_grad=param.requires_grad)
            seen.add(id(param))
    tie = getattr(model, "tie_weights", None)
    if callable(tie):
        tie()  # the ties the class declares (input / output embeddings) come back
    return model, len({id(p) for p in model.parameters()}) - before


def to_hf(model: nn.Module, out_dir: str | os.PathLike, tokenizer: Any = None
          ) -> dict[str, Any]:
    """Write ``model`` (a transformers model, shared or not; changed in place to dense
    weights) and ``tokenizer`` as a standard transformers directory. Returns a summary.

    Example:
        >>> import tempfile, weightshare as ws
        >>> from weightshare.models.offline import build_model
        >>> m = ws.cluster_(build_model("gpt2"), ws.ClusterConfig(bits=4, min_size=0))
        >>> r = to_hf(m, tempfile.mkdtemp() + "/out")
        >>> r["format"]
        'hf'
    """
    if not callable(getattr(type(model), "save_pretrained", None)):
        raise SaveError(f"{type(model).__name__} is not a transformers model; export it with "
                        "--to onnx, or ws.materialize_ it and save it with torch")
    out = check_out_dir(out_dir)
    model, duplicated = dense_model(model)
    model.__dict__.pop("save_pretrained", None)  # the weightshare guard: nothing is shared now
    out.mkdir(exist_ok=True)
    from ..models.hf import _quiet_transformers

    save: Any = model.save_pretrained
    with _quiet_transformers():
        save(out)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
    return {"format": "hf", "output": str(out), "files": sorted(p.name for p in out.iterdir()),
            "bytes": _dir_bytes(out), "duplicated_ties": duplicated,
            "dtype": str(next(iter(model.parameters())).dtype).removeprefix("torch.")}


def to_sentence_transformers(model: nn.Module, out_dir: str | os.PathLike, tokenizer: Any,
                             base_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """A directory ``SentenceTransformer(out_dir)`` loads: the transformers checkpoint, its
    tokenizer, and the sentence-transformers modules, copied from ``base_dir`` when it has
    them (pooling, normalisation), else mean pooling as weightshare measures it."""
    if tokenizer is None:
        raise SaveError("a sentence-transformers model needs its tokenizer; export a file whose "
                        "base model has tokenizer files (or saved with --embed-tokenizer)")
    summary = to_hf(model, out_dir, tokenizer)
    out = Path(summary["output"])
    base = Path(base_dir) if base_dir is not None else None
    copied = base is not None and (base / "modules.json").is_file()
    if copied:
        assert base is not None
        for name in ST_FILES:
            if (base / name).is_file():
                shutil.copy2(base / name, out / name)
        for name in ST_DIRS:
            if (base / name).is_dir():
                shutil.copytree(base / name, out / name)
    else:
        dim = int(getattr(getattr(model, "config", None), "hidden_size", 0))
        _write_json(out / "modules.json", [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling",
             "type": "sentence_transformers.models.Pooling"}])
        _write_json(out / "sentence_bert_config.json",
                    {"max_seq_length": 256, "do_lower_case": False})
        (out / "1_Pooling").mkdir()
        _write_json(out / "1_Pooling" / "config.json",
                    {"word_embedding_dimension": dim, "pooling_mode_mean_tokens": True,
                     "pooling_mode_cls_token": False, "pooling_mode_max_tokens": False})
    summary.update(format="sentence-transformers", modules_from=str(base) if copied else
                   "mean pooling (weightshare's)", bytes=_dir_bytes(out),
                   files=sorted(p.name for p in out.iterdir()))
    return summary


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def max_abs_logit_difference(a: nn.Module, b: nn.Module, input_ids: torch.Tensor) -> float:
    """max |a(x) - b(x)| of the main outputs (logits or hidden states) on ``input_ids``."""
    from ..core.batches import eval_mode, first_tensor

    with eval_mode(a, b):
        return float((first_tensor(a(input_ids=input_ids)).double()
                      - first_tensor(b(input_ids=input_ids)).double()).abs().max())
