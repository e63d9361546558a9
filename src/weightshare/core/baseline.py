"""The one honest baseline: the bytes of the model *as the user had it*.

Every ratio weightshare prints (``inspect`` of a model, a directory or a file,
``compress``, ``tie``) divides this number by what sharing stores. It is:

* every tensor a checkpoint of the model holds (parameters and persistent buffers,
  integer buffers included: a file stores them too, so both sides count them), **each
  shared tensor once** (GPT-2's lm_head is its input embedding: one tensor),
* at **its own dtype** (a bf16 checkpoint counts 2 bytes a value, not 4),
* measured **before weightshare shared anything**: the first sharing call on a model
  (``cluster_``, ``tie_``, ``share_``) records it on the model, ``save`` writes it into
  the file and ``load`` reads it back, so a tied or clustered model is still compared
  with the model it came from. A model with no record (built by hand, or from an old
  file) is measured as it is now: each tensor once, shared weights at their dense size.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from torch import nn

from .protocol import DTYPE_BYTES, dtype_name, iter_shared

BASELINE_ATTR = "_weightshare_baseline"
BASELINE_KEY = "baseline"  # its key in a file's metadata "extra"


def measure_baseline(model: nn.Module) -> dict[str, Any]:
    """``{"bytes", "params", "dtype"}`` of ``model`` now: each tensor once, at its dtype.

    ``dtype`` names the dtype that holds most of the floating-point bytes.

    Example:
        >>> import torch
        >>> m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)).to(torch.bfloat16)
        >>> m[1].weight = m[0].weight
        >>> measure_baseline(m)
        {'bytes': 48, 'params': 24, 'dtype': 'bfloat16'}
    """
    seen: set[int] = set()
    total = params = 0
    by_dtype: Counter[str] = Counter()
    for name, t in model.state_dict(keep_vars=True).items():
        if ".parametrizations." in f".{name}" or id(t) in seen:
            continue  # shared weights are counted below at their dense size
        seen.add(id(t))
        nbytes = t.numel() * t.element_size()
        total += nbytes
        if t.is_floating_point():
            params += t.numel()
            by_dtype[dtype_name(t.dtype)] += nbytes
    for _fqn, _m, _a, weight, original in iter_shared(model):
        key = id(weight)
        if key in seen:
            continue
        seen.add(key)
        numel = math.prod(type(weight).dense_shape(weight.scheme(original)))
        size = DTYPE_BYTES.get(dtype_name(original.dtype), 4) if original.is_floating_point() \
            else 4
        total += numel * size
        params += numel
        by_dtype[dtype_name(original.dtype)] += numel * size
    dtype = by_dtype.most_common(1)[0][0] if by_dtype else "float32"
    return {"bytes": total, "params": params, "dtype": dtype}


def record_baseline(model: nn.Module) -> dict[str, Any]:
    """Record the baseline on ``model`` unless one is recorded already; returns it.
    Called by every sharing method before it changes the model."""
    found = _recorded(model)
    if found is None:
        found = measure_baseline(model)
        object.__setattr__(model, BASELINE_ATTR, found)
    return dict(found)


def baseline(model: nn.Module) -> dict[str, Any]:
    """The recorded baseline of ``model``, or its measure now when none is recorded."""
    found = _recorded(model)
    return dict(found) if found is not None else measure_baseline(model)


def set_baseline(model: nn.Module, value: Any) -> None:
    """Record ``value`` (from a file's metadata) as the baseline, when it is well formed."""
    if valid_baseline(value):
        object.__setattr__(model, BASELINE_ATTR, dict(value))


def baseline_extra(model: nn.Module) -> dict[str, Any]:
    """``{"baseline": ...}`` for a file's metadata when the model has a recorded one."""
    found = _recorded(model)
    return {BASELINE_KEY: dict(found)} if found is not None else {}


def _recorded(model: nn.Module) -> dict[str, Any] | None:
    found = getattr(model, BASELINE_ATTR, None)
    return found if valid_baseline(found) else None


def valid_baseline(value: Any) -> bool:
    """Whether ``value`` is a well-formed baseline record (files are not trusted)."""
    return (isinstance(value, dict) and isinstance(value.get("bytes"), int)
            and not isinstance(value.get("bytes"), bool) and value["bytes"] >= 0
            and isinstance(value.get("params"), int) and value["params"] >= 0
            and isinstance(value.get("dtype"), str) and value["dtype"] in DTYPE_BYTES)


def dtype_label(dtype: str) -> str:
    """Short name for output: ``float32`` -> ``fp32``, ``bfloat16`` -> ``bf16``."""
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16",
            "float64": "fp64"}.get(dtype, dtype)
