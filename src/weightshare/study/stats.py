"""Seeds, spreads and verdicts: when a measured difference supports a claim.

Every figure a study reports is measured once per seed. ``summarize`` gives mean, sample
standard deviation and the values; ``compare`` asks whether one side is better than the
other by more than the seed spread; ``verdict`` turns the comparisons of a study into one
word.

The rule, stated once: side A beats side B on a metric when the mean difference in A's
favour exceeds the *spread*, ``std(A) + std(B)`` (sample standard deviations over the
seeds; the intervals mean ± std do not overlap). Fewer than ``MIN_SEEDS`` seeds give no
verdict at all.

Example:
    >>> c = compare("error", [1.0, 1.1, 0.9], [2.0, 2.1, 1.9], better="lower",
    ...             a="shared", b="unshared")
    >>> c.outcome, round(c.difference, 3), round(c.spread, 3)
    ('supported', 1.0, 0.2)
    >>> verdict([c]).word
    'supported'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError

MIN_SEEDS = 3
OUTCOMES = ("supported", "reversed", "within_spread", "incomplete", "too_few_seeds")
VERDICTS = ("supported", "refuted", "depends", "inconclusive")


@dataclass(frozen=True)
class Stats:
    """mean ± std over seeds (sample std, 0 for one value); ``values`` in seed order."""

    mean: float
    std: float
    n: int
    values: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n, "values": list(self.values)}

    def fmt(self, digits: int | None = None, scale: float = 1.0, unit: str = "") -> str:
        """``"1.234 ± 0.010"`` (``scale`` multiplies both, e.g. 100 for percent); without
        ``digits``, counts >= 1000 print whole with separators, others to 4 significant
        digits."""
        if self.n == 0 or math.isnan(self.mean):
            return "n/a"
        mean, std = self.mean * scale, self.std * scale
        if digits is None:
            if abs(mean) >= 1000:
                return f"{mean:,.0f} ± {std:,.0f}{unit}"
            return f"{mean:.4g} ± {std:.2g}{unit}"
        return f"{mean:.{digits}f} ± {std:.{digits}f}{unit}"


def summarize(values: Sequence[float]) -> Stats:
    """Mean and sample standard deviation of per-seed values (NaNs are kept: they poison
    the mean on purpose, a failed run must not vanish from a table).

    Example:
        >>> summarize([1.0, 2.0, 3.0]).std
        1.0
    """
    vals = tuple(float(v) for v in values)
    n = len(vals)
    if n == 0:
        return Stats(math.nan, math.nan, 0, ())
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    return Stats(mean, std, n, vals)


@dataclass(frozen=True)
class Comparison:
    """Is ``a`` better than ``b`` on ``metric``, beyond the seed spread?

    ``difference`` is oriented so that positive means ``a`` is better; ``outcome`` is
    ``supported`` (a better by more than the spread), ``reversed`` (b better by more than
    the spread), ``within_spread``, ``incomplete`` (a run gave no value: NaN, e.g. a
    target never reached) or ``too_few_seeds``.
    """

    metric: str
    a: str
    b: str
    better: str
    a_stats: Stats
    b_stats: Stats
    difference: float
    spread: float
    outcome: str
    condition: str = ""  # e.g. "500 images", "length 128"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["a_stats"], d["b_stats"] = self.a_stats.to_dict(), self.b_stats.to_dict()
        return d

    def sentence(self) -> str:
        where = f" at {self.condition}" if self.condition else ""
        word = {"supported": "beats", "reversed": "loses to", "within_spread": "ties with",
                "incomplete": "vs", "too_few_seeds": "vs"}[self.outcome]
        return (f"{self.a} {word} {self.b} on {self.metric}{where} "
                f"({self.a_stats.fmt()} vs {self.b_stats.fmt()}, "
                f"{self.better} is better; difference {self.difference:+.4g}, "
                f"spread {self.spread:.4g})")


def compare(metric: str, a_values: Sequence[float] | Stats, b_values: Sequence[float] | Stats,
             *, better: str, a: str = "a", b: str = "b", condition: str = "",
             min_seeds: int = MIN_SEEDS) -> Comparison:
    """Compare per-seed values of side ``a`` with side ``b`` on ``metric`` (``better``:
    ``"lower"`` or ``"higher"``); see the module docstring for the rule."""
    if better not in ("lower", "higher"):
        raise ConfigError(f"better must be 'lower' or 'higher', got {better!r}")
    sa = a_values if isinstance(a_values, Stats) else summarize(a_values)
    sb = b_values if isinstance(b_values, Stats) else summarize(b_values)
    diff = sb.mean - sa.mean if better == "lower" else sa.mean - sb.mean
    spread = sa.std + sb.std
    if min(sa.n, sb.n) < min_seeds:
        outcome = "too_few_seeds"
    elif math.isnan(diff):
        outcome = "incomplete"
    elif diff > spread:
        outcome = "supported"
    elif -diff > spread:
        outcome = "reversed"
    else:
        outcome = "within_spread"
    return Comparison(metric, a, b, better, sa, sb, diff, spread, outcome, condition)


@dataclass(frozen=True)
class Verdict:
    """One word for a claim and the reason, from its comparisons."""

    word: str
    reason: str
    supported: tuple[str, ...] = field(default=())
    not_supported: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.word, "reason": self.reason, "supported": list(self.supported),
                "not_supported": list(self.not_supported)}


def verdict(comparisons: Sequence[Comparison]) -> Verdict:
    """``supported`` when every comparison supports the claim beyond the spread;
    ``refuted`` when none does (the advantage is absent or reversed everywhere);
    ``depends`` when some do and some do not (the reason lists which);
    ``inconclusive`` with fewer than ``MIN_SEEDS`` seeds (``--quick`` runs).

    Example:
        >>> mk = lambda a, b, cond: compare("error", a, b, better="lower", condition=cond)
        >>> v = verdict([mk([1, 1.1, 0.9], [3, 3.1, 2.9], "500 images"),
        ...              mk([1, 1.1, 0.9], [1, 1.2, 0.9], "60000 images")])
        >>> v.word, v.supported, v.not_supported
        ('depends', ('500 images',), ('60000 images',))
    """
    if not comparisons:
        raise ConfigError("a verdict needs at least one comparison")
    if any(c.outcome == "too_few_seeds" for c in comparisons):
        n = min(min(c.a_stats.n, c.b_stats.n) for c in comparisons)
        return Verdict("inconclusive", f"only {n} seed(s); a verdict needs >= {MIN_SEEDS}")
    label = [c.condition or c.metric for c in comparisons]
    ok = tuple(lbl for lbl, c in zip(label, comparisons) if c.outcome == "supported")
    rev = [lbl for lbl, c in zip(label, comparisons) if c.outcome == "reversed"]
    tie = [lbl for lbl, c in zip(label, comparisons) if c.outcome == "within_spread"]
    lost = [lbl for lbl, c in zip(label, comparisons) if c.outcome == "incomplete"]
    bad = tuple(lbl for lbl in label if lbl not in ok)
    if len(ok) == len(comparisons):
        return Verdict("supported", f"all {len(ok)} comparison(s) beyond the seed spread", ok, ())
    parts = []
    if rev:
        parts.append(f"reversed beyond the spread at {', '.join(rev)}")
    if tie:
        parts.append(f"within the seed spread at {', '.join(tie)}")
    if lost:
        parts.append(f"runs without a value (e.g. target not reached) at {', '.join(lost)}")
    if not ok:
        return Verdict("refuted", "no comparison supports the claim: " + "; ".join(parts),
                       (), bad)
    return Verdict("depends", f"supported at {', '.join(ok)}; " + "; ".join(parts), ok, bad)
