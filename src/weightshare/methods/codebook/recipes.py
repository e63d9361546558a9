"""Recipes: the combinations of ``ClusterConfig`` fields a user should reach for.

Measured on all-MiniLM-L6-v2 (docs/codebooks.md; docs/benchmarks.md, Codebook quality):

* ``fast``: exact per-tensor k-means weighted by each input's mean square (32
  calibration sentences): seconds, the fidelity of coremltools' post-training
  palettizer or better.
* ``balanced``: error feedback (GPTQ-style, in act order) + 0.1% exact outliers, with
  the code width of each layer chosen so that everything stored fits ``bits`` per
  weight (``budget``), on 128 calibration sentences.
* ``quality``: the same on 512 calibration sentences (the layer-input Hessians of
  1,536-wide layers need thousands of tokens); the most accurate post-training
  combination found. From 3 bits per weight up, codebooks per group of 16 rows where
  the budget finds them worth their bits (every layer may keep one codebook instead):
  same cosine, better retrieval (4 bits: top-1 0.857 vs 0.838; 3 bits: 0.724 vs
  0.698); at 2 bits one codebook per tensor measured better (cosine 0.8570 vs 0.8540).
  Below 3 bits per weight, word embeddings are coded as vectors (8 weights per 8-bit
  code: 1 bit per weight), which beats 1-bit scalar codes by far.
"""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError

RECIPES = ("fast", "balanced", "quality")
# calibration sentences each recipe was measured with (the CLI's default for it)
CALIBRATION_SAMPLES = {"fast": 32, "balanced": 128, "quality": 512}
GROUPED_FROM = 3  # bits per weight from which quality uses per-group codebooks
GROUP_SIZE = 16


def recipe_fields(name: str, bits: float) -> dict[str, Any]:
    """ClusterConfig fields of recipe ``name`` at ``bits`` per weight.

    Example:
        >>> recipe_fields("fast", 4)
        {'bits': 4}
        >>> recipe_fields("quality", 4)["granularity"], recipe_fields("quality", 2.5)
        ('per_group', {'bits': 2, 'budget': 2.5, 'error_feedback': True, 'outliers': 0.001})
    """
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; use one of {', '.join(RECIPES)}")
    if isinstance(bits, bool) or not isinstance(bits, (int, float)) or not 2 <= bits <= 8:
        raise ConfigError(f"recipes take 2 to 8 bits per weight, got {bits!r}")
    code_bits = max(1, min(8, round(bits)))
    if name == "fast":
        return {"bits": code_bits}
    fields: dict[str, Any] = {"bits": code_bits, "budget": float(bits),
                              "error_feedback": True, "outliers": 0.001}
    if name == "quality" and bits >= GROUPED_FROM:
        fields.update(granularity="per_group", group_size=GROUP_SIZE)
    return fields
