"""A suggested tie plan: which blocks (or parts of blocks) to tie, from a similarity report.

The loss of one tie "block j uses block i's weights in scope s" is ``cost[s][i, j]``:
the measured end-to-end tie loss (1 - output cosine, ``similarity.py``) when
calibration inputs are given, otherwise 1 - weight cosine. Each tie keeps one
member's weights (a cluster's medoid), because the mean of unrelated weight
matrices is a worse function than either of them.

Two questions, two searches:

* ``unique=M``: partition the blocks into M slots (whole blocks, or one scope),
  greedily merging the two clusters whose merge adds the least medoid cost
  (agglomerative clustering; free of any order, so it finds plans that none of the
  fixed strategies spells).
* ``cut=f``: remove at least a fraction f of the model's parameters, each step adding
  the tie with the least loss per useful parameter saved (savings past the target
  count for nothing), choosing its scope (a whole block or one child: attention,
  feed-forward parts, ...) and its layers. Ties interact (errors compound), so with
  inputs each step re-measures the ``recheck`` most promising candidates together
  with the ties already chosen and takes the best measured one. A source is never
  itself an alias in the same scope. Greedy is myopic, so the best whole-block
  partition that reaches the cut is measured too, and the better plan wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.batches import as_batches
from ..errors import ConfigError, TieError
from ..methods.tie.blocks import select_stack
from ..methods.tie.config import TieConfig, TieGroup
from .similarity import WHOLE, OutputProbe, SimilarityReport, block_similarity

Tie = tuple[str, int, int]  # (scope, alias block position, source block position)


@dataclass
class TiePlan:
    """A suggested tie: ``config`` applies it with ``tie_``; the rest explains it."""

    config: TieConfig
    predicted_cost: float  # sum of the chosen ties' single-tie costs
    params_saved: int
    fraction_saved: float  # of the model's unique parameters
    ties: list[tuple[str, int, int, float]] = field(default_factory=list)
    # (scope, alias block index, source block index, single-tie cost)
    measure: str = "tie_loss"
    measured_loss: float | None = None  # 1 - output cosine of the whole plan, on the inputs

    def describe(self) -> str:
        measured = "" if self.measured_loss is None else \
            f", measured loss of the whole plan {self.measured_loss:.3f}"
        lines = [f"tie plan: {len(self.ties)} tie(s), {self.params_saved:,} parameters saved "
                 f"({self.fraction_saved:.1%}), sum of single-tie costs {self.predicted_cost:.3f} "
                 f"({self.measure}){measured}"]
        for scope, alias, source, cost in self.ties:
            lines.append(f"  {scope:<14} block {alias:>3} <- block {source:<3} cost {cost:.3f}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "predicted_cost": self.predicted_cost,
                "params_saved": self.params_saved, "fraction_saved": self.fraction_saved,
                "ties": [list(t) for t in self.ties], "measure": self.measure,
                "measured_loss": self.measured_loss}


@torch.no_grad()
def suggest_plan(model: nn.Module, unique: int | None = None, cut: float | None = None,
                 inputs: Any = None, stack: str | None = None, scope: str | None = None,
                 tokenizer: Any = None, max_batches: int = 1, recheck: int = 6) -> TiePlan:
    """Suggest what to tie: keep ``unique`` blocks, or remove a ``cut`` fraction of parameters.

    ``inputs``: a few calibration sentences/batches (never evaluation data); without
    them the plan follows weight cosine only. ``scope`` restricts the plan to one scope
    of ``block_scopes`` (``"block"``, ``"attention"``, ...).

    Example:
        >>> import torch
        >>> from weightshare import tie_
        >>> m = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(4)])
        >>> plan = suggest_plan(m, unique=2, inputs=torch.randn(32, 8))
        >>> len(plan.ties)
        2
        >>> _ = tie_(m, plan.config)
    """
    if (unique is None) == (cut is None):
        raise ConfigError("suggest_plan needs exactly one target: unique=M blocks or cut=f "
                          "(fraction of parameters to remove, e.g. 0.1)")
    if cut is not None and not 0 < float(cut) < 1:
        raise ConfigError(f"cut must be a fraction of the parameters in (0, 1), got {cut!r}")
    st = select_stack(model, stack)
    batches = None if inputs is None else as_batches(inputs, tokenizer)[:max_batches]
    if unique is not None:
        loss_scopes: Any = (scope or WHOLE,)
    else:
        loss_scopes = (scope,) if scope else "all"
    report = block_similarity(model, batches, stack=st.name, max_batches=max_batches,
                              loss_scopes=loss_scopes)
    if scope is not None and scope not in report.scopes:
        raise ConfigError(f"scope {scope!r} is not one of {list(report.scopes)}")
    measure = "tie_loss" if report.tie_loss else "1 - weight_cosine"
    costs = report.tie_loss if report.tie_loss else \
        {s: (1 - c).clamp(min=0) for s, c in report.weight_cosine.items()}
    costs = {s: torch.nan_to_num(c, nan=float("inf")) for s, c in costs.items()}
    probe = OutputProbe(model, st, batches) if batches is not None else None
    total = sum(p.numel() for p in model.parameters())
    if unique is not None:
        n = len(report.blocks)
        if not 1 <= unique <= n:
            raise TieError(f"unique={unique} does not fit stack {report.stack!r} of {n} blocks; "
                           f"use 1 <= unique <= {n}")
        s = scope or WHOLE
        ties = [(s, j, src) for src, members in _agglomerate(costs[s], unique)
                for j in members if j != src]
    else:
        scopes = [scope] if scope else list(costs)
        assert cut is not None  # exactly one of unique and cut, checked above
        target = float(cut) * total
        ties = _greedy_cut(costs, report, scopes, target, probe, recheck)
        if WHOLE in scopes and len(scopes) > 1:
            # greedy is myopic: also try the best partition into whole blocks that reaches
            # the cut, and keep whichever loses less
            merges = math.ceil(target / max(report.scope_numel[WHOLE], 1))
            if merges < len(report.blocks):
                alt = [(WHOLE, j, src) for src, members
                       in _agglomerate(costs[WHOLE], len(report.blocks) - merges)
                       for j in members if j != src]
                if _plan_loss(alt, costs, probe, report) < _plan_loss(ties, costs, probe, report):
                    ties = alt
    if not ties:
        raise TieError("the plan ties nothing; ask fewer unique blocks or a larger cut")
    saved = sum(report.scope_numel[s] for s, *_ in ties)
    measured = None if probe is None else probe.loss(probe.override(ties, report.scopes))
    rows = [(s, report.indices[j], report.indices[i], float(costs[s][i, j])) for s, j, i in ties]
    return TiePlan(_plan_config(report, ties), sum(r[3] for r in rows), saved,
                   saved / max(total, 1), rows, measure, measured)


def _plan_loss(ties: list[Tie], costs: dict[str, torch.Tensor], probe: OutputProbe | None,
               report: SimilarityReport) -> float:
    if probe is None:
        return sum(float(costs[s][i, j]) for s, j, i in ties)
    return probe.loss(probe.override(ties, report.scopes))


def _agglomerate(cost: torch.Tensor, m: int) -> list[tuple[int, list[int]]]:
    """Merge clusters until m remain; each cluster is (medoid, members)."""
    clusters: list[list[int]] = [[i] for i in range(cost.shape[0])]

    def medoid(members: list[int]) -> tuple[float, int]:
        return min((sum(float(cost[s, j]) for j in members if j != s), s) for s in members)

    while len(clusters) > m:
        best = None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                merged = medoid(clusters[a] + clusters[b])[0]
                delta = merged - medoid(clusters[a])[0] - medoid(clusters[b])[0]
                if best is None or delta < best[0]:
                    best = (delta, a, b)
        _, a, b = best  # type: ignore[misc]
        clusters[a] = sorted(clusters[a] + clusters[b])
        del clusters[b]
    return [(medoid(c)[1], c) for c in clusters]


def _parts(report: SimilarityReport, s: str) -> list[str]:
    """The child scopes a scope covers (the whole block covers them all)."""
    children = [k for k in report.scopes if k != WHOLE]
    return (children or [WHOLE]) if s == WHOLE else [s]


def _greedy_cut(costs: dict[str, torch.Tensor], report: SimilarityReport, scopes: list[str],
                target: float, probe: OutputProbe | None, recheck: int) -> list[Tie]:
    numel = report.scope_numel
    n = len(report.blocks)
    alias: set[tuple[str, int]] = set()
    source: set[tuple[str, int]] = set()
    chosen: list[Tie] = []
    saved, current = 0, 0.0

    def valid(t: Tie) -> bool:
        s, j, i = t
        return all((c, j) not in alias and (c, j) not in source and (c, i) not in alias
                   for c in _parts(report, s))

    def useful(s: str, saved: int) -> float:
        # savings past the target are worth nothing: a small tie that just fills the
        # remainder beats a big one that overshoots at a higher loss
        return max(min(numel[s], target - saved), 1)

    while saved < target:
        cands = sorted((float(costs[s][i, j]) / useful(s, saved), (s, j, i))
                       for s in scopes for i in range(n) for j in range(n)
                       if i != j and numel[s] > 0 and math.isfinite(float(costs[s][i, j]))
                       and valid((s, j, i)))
        if not cands:
            break
        if probe is None or recheck <= 1:
            pick, loss = cands[0][1], current
        else:  # measure the best few together with the ties already chosen
            measured = []
            for _, t in cands[:recheck]:
                loss = probe.loss(probe.override(chosen + [t], report.scopes))
                measured.append(((loss - current) / useful(t[0], saved), loss, t))
            _, loss, pick = min(measured)
        chosen.append(pick)
        current = loss
        for c in _parts(report, pick[0]):
            alias.add((c, pick[1]))
            source.add((c, pick[2]))
        saved += numel[pick[0]]
    if saved < target:
        raise TieError(f"no plan reaches the asked cut within scopes {scopes}: at most "
                       f"{saved:,} parameters; ask a smaller cut or another stack")
    return chosen


def _plan_config(report: SimilarityReport, ties: list[Tie]) -> TieConfig:
    # one group per (parameter, source block): a whole-block tie and a part tie that share
    # a source must not tie one parameter twice
    aliases: dict[tuple[str, int], list[int]] = {}
    for s, j, i in ties:
        for rel in report.scopes[s]:
            aliases.setdefault((rel, i), []).append(j)
    out = []
    for (rel, i), js in aliases.items():
        members = [report.fqns[k][rel] for k in [i, *sorted(set(js))]]
        out.append(TieGroup(tuple(members), source=members[0]))
    return TieConfig(groups=tuple(out))
