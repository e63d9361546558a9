"""Granularity fallback: a group size that does not divide a tensor's rows.

``per_group`` with ``group_size`` g needs g to divide the output channels of every
selected weight. Real models break that: BERT's 30,522-token vocabulary (2 x 3 x 5087),
a 2-row token-type embedding. Rather than refuse the whole run, such a tensor gets the
divisor of its rows nearest to g (by ratio; the smaller one on a tie, i.e. more
codebooks); when that divisor is all the rows it is one codebook for the tensor. Every
change is reported (:class:`GroupChange`). ``ClusterConfig(strict=True)`` (``--strict``)
refuses instead, as before.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from ...core.protocol import dense_weight
from ...core.select import Target
from ...errors import ShapeError
from .config import ClusterConfig


@dataclass(frozen=True)
class GroupChange:
    """A tensor whose group size was changed, and why."""

    fqn: str
    rows: int
    asked: int
    used: int

    def __str__(self) -> str:
        what = "one codebook for the tensor" if self.used == self.rows else \
            f"group_size {self.used}"
        return (f"{self.fqn}: {what} ({self.asked} does not divide its {self.rows} "
                "output channels)")


def nearest_divisor(rows: int, size: int) -> int:
    """The divisor of ``rows`` nearest to ``size`` by ratio (the smaller on a tie).

    Example:
        >>> nearest_divisor(30522, 16), nearest_divisor(2, 16), nearest_divisor(768, 16)
        (6, 2, 16)
    """
    divisors: set[int] = set()
    for d in range(1, math.isqrt(rows) + 1):
        if rows % d == 0:
            divisors.update((d, rows // d))
    return min(sorted(divisors), key=lambda d: abs(math.log(d / size)))


def group_sizes(targets: Sequence[Target], config: ClusterConfig
                ) -> tuple[dict[str, int], list[GroupChange]]:
    """Rows per codebook for every target under ``config`` (module name -> rows), and the
    tensors whose group size differs from ``config.group_size``.

    Raises ShapeError for the first such tensor when ``config.strict``.
    """
    sizes: dict[str, int] = {}
    changes: list[GroupChange] = []
    for t in targets:
        rows = dense_weight(t.module).shape[t.axis]
        if config.granularity != "per_group" or rows % config.group_size == 0:
            continue
        if config.strict:
            raise ShapeError(f"group_size {config.group_size} does not divide the {rows} output "
                             f"channels of {t.fqn}; choose a divisor of {rows} or exclude it "
                             "(or drop strict / --strict to use the nearest divisor)")
        used = nearest_divisor(rows, config.group_size)
        sizes[t.name] = used
        changes.append(GroupChange(t.fqn, rows, config.group_size, used))
    return sizes, changes


def warn_changes(changes: Sequence[GroupChange]) -> None:
    """One warning naming the tensors whose grouping changed (Python API users)."""
    if changes:
        shown = "; ".join(str(c) for c in changes[:3])
        more = f" (+{len(changes) - 3} more)" if len(changes) > 3 else ""
        warnings.warn(f"per_group fallback for {len(changes)} tensor(s): {shown}{more}",
                      stacklevel=3)
