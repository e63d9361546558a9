"""Recipes: the combinations of ``ClusterConfig`` fields a user should reach for.

Placeholder values until measured; see docs/codebooks.md.
"""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError

RECIPES = ("fast", "balanced", "quality")


def recipe_fields(name: str, bits: float) -> dict[str, Any]:
    """ClusterConfig fields of recipe ``name`` at ``bits`` per weight."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; use one of {', '.join(RECIPES)}")
    if isinstance(bits, bool) or not isinstance(bits, (int, float)) or bits not in (2, 3, 4, 5,
                                                                                     6, 7, 8):
        raise ConfigError(f"recipes exist for 2..8 bits per weight, got {bits!r}")
    b = int(bits)
    if name == "fast":
        return {"bits": b, "scales": "per_channel"}
    if name == "balanced":
        return {"bits": b, "scales": "per_channel", "error_feedback": True}
    return {"bits": b, "scales": "per_channel", "error_feedback": True, "sequential": True}
