"""``convergence``: does sharing help a model converge, per step and per second?

The same two pairs as ``training-speed`` (conv vs locally connected twin; all-shared vs
untied transformer), each trained a fixed number of steps with the held-out loss
measured along the way: loss curves against steps and against training seconds.
"""

from __future__ import annotations

import math

from ..context import Claim, Context, Result, Table
from ..pairs import SIDES, pairs
from ..registry import Study, register
from ..stats import compare, summarize
from ..trainer import Run, at_seconds


def _at_step(run: dict, step: int) -> float:
    for e in run["evals"]:
        if e["step"] >= step:
            return float(e["loss"])
    return math.nan


def run(ctx: Context) -> Result:
    all_pairs = pairs(ctx)
    steps = {"vision": ctx.pick(10, 500), "language": ctx.pick(10, 500)}  # 15 min, 1 thread
    every = {"vision": ctx.pick(5, 50), "language": ctx.pick(5, 50)}
    ctx.progress.start(sum(steps[p.key] for p in all_pairs) * 2 * len(ctx.seeds))
    figures: dict[str, dict] = {}
    per_step, per_second, rows = [], [], []
    for pair in all_pairs:
        runs: dict[str, list[dict]] = {s: [] for s in SIDES}
        for seed in ctx.seeds:
            for side in SIDES:
                runs[side].append(pair.train_side(ctx, side, seed, steps[pair.key],
                                                  every[pair.key]).to_dict())
        quarter = max(every[pair.key], steps[pair.key] // 4)
        # equal wall time: every run's curve is read where all runs have one, from the
        # latest first evaluation to the earliest last one (the shortest run's seconds); a
        # side's mean time would fall past the end of its faster seeds' curves
        every_run = runs["shared"] + runs["unshared"]
        first = max(r["evals"][0]["seconds"] for r in every_run)
        budget = min(r["evals"][-1]["seconds"] for r in every_run)

        def loss_at_seconds(side: str, t: float, runs: dict = runs) -> list[float]:
            out = []
            for r in runs[side]:
                holder = Run(r["label"], r["seed"])
                holder.evals = r["evals"]
                out.append(at_seconds(holder, t))
            return out

        names = pair.names
        for step in (quarter, steps[pair.key]):
            per_step.append(compare(
                "held-out loss", [_at_step(r, step) for r in runs["shared"]],
                [_at_step(r, step) for r in runs["unshared"]], better="lower",
                a=names["shared"], b=names["unshared"], condition=f"{pair.key}, step {step}"))
        for t in (min(budget, max(first, 0.25 * budget)), budget):
            per_second.append(compare(
                "held-out loss", loss_at_seconds("shared", t), loss_at_seconds("unshared", t),
                better="lower", a=names["shared"], b=names["unshared"],
                condition=f"{pair.key}, {t:.0f} s"))
        for side in SIDES:
            rows.append([pair.key, names[side],
                         summarize([_at_step(r, quarter) for r in runs[side]]).fmt(4),
                         summarize([_at_step(r, steps[pair.key]) for r in runs[side]]).fmt(4),
                         summarize(loss_at_seconds(side, budget)).fmt(4),
                         summarize([r["train_seconds"] for r in runs[side]]).fmt(1)])
        figures[pair.key] = {"names": names, "steps": steps[pair.key],
                             "eval_every": every[pair.key], "equal_seconds": budget,
                             "runs": runs}
    table = Table("Held-out loss at equal steps and at equal training time (mean ± std)",
                  ["pair", "model", "at 1/4 of the steps", "at the last step",
                   "at equal seconds (the shortest run's)", "train seconds"], rows)
    plot = "convergence.png"
    with ctx.figure(plot, ncols=4, width=4.2) as axes:
        for k, pair in enumerate(all_pairs):
            for j, x_key in enumerate(("step", "seconds")):
                ax = axes[2 * k + j]
                for side in SIDES:
                    for i, r in enumerate(figures[pair.key]["runs"][side]):
                        ax.plot([e[x_key] for e in r["evals"]], [e["loss"] for e in r["evals"]],
                                color="C0" if side == "shared" else "C1", alpha=0.8,
                                label=pair.names[side] if i == 0 else None)
                ax.set_xlabel("steps" if x_key == "step" else "training seconds")
                ax.set_ylabel(pair.metric_name, fontsize=8)
                ax.set_title(f"{pair.key}: loss vs {'steps' if x_key == 'step' else 'time'}")
                ax.set_yscale("log")
                ax.legend(fontsize=7)
    notes = ["Loss curves are the held-out loss (MNIST: 1,000 test images; Shakespeare: "
             "windows of the validation plays) evaluated every "
             f"{every['vision']} / {every['language']} steps; training seconds exclude those "
             "evaluations.",
             "Equal-time comparisons read each run's curve (linearly interpolated) at the "
             "training seconds of the shortest run (where every curve still has a value) "
             "and at a quarter of them (or at the latest first evaluation, if later)."]
    return Result(figures=figures,
                  claims=[Claim("per-step", "Sharing helps convergence: a lower held-out loss "
                                "after the same number of steps.", per_step),
                          Claim("per-second", "Sharing helps convergence in wall time: a lower "
                                "held-out loss after the same training time.", per_second)],
                  tables=[table], plots=[plot], notes=notes,
                  setup={"steps": steps, "eval_every": every})


STUDY = register(Study(
    "convergence", "Convergence: loss against steps and against time, shared vs unshared",
    "sharing helps convergence", ("mnist", "shakespeare"), run))
