"""``training-speed``: does sharing make training faster or lighter?

For each pair of ``study/pairs.py`` (conv vs locally connected twin; all-shared vs untied
transformer): the time of one training step, the steps and the training seconds to reach
a held-out target, and the peak training memory measured by the operating system in a
fresh process per model.
"""

from __future__ import annotations

import math

from ..context import Claim, Context, Result, Table
from ..memory import isolated
from ..pairs import SIDES, memory_probe, pairs
from ..registry import Study, register
from ..stats import compare, summarize

MIB = 2**20


def run(ctx: Context) -> Result:
    all_pairs = pairs(ctx)
    # caps and targets sized for 15 minutes on one thread of a shared 2-core machine
    cap = {"vision": ctx.pick(10, 600), "language": ctx.pick(10, 500)}
    every = {"vision": ctx.pick(5, 50), "language": ctx.pick(5, 50)}
    probe_steps = ctx.pick(2, 5)
    ctx.progress.start(sum(cap[p.key] for p in all_pairs) * 2 * len(ctx.seeds))
    figures: dict[str, dict] = {}
    step_c, target_c, memory_c = [], [], []
    rows = []
    for pair in all_pairs:
        runs: dict[str, list[dict]] = {s: [] for s in SIDES}
        memory: dict[str, list[dict]] = {s: [] for s in SIDES}
        for seed in ctx.seeds:
            for side in SIDES:
                r = pair.train_side(ctx, side, seed, cap[pair.key], every[pair.key],
                                    stop_at_target=True)
                runs[side].append(r.to_dict())
                if ctx.quick:  # a fresh process takes seconds: in this one, once
                    if seed == ctx.seeds[0]:
                        memory[side].append(memory_probe(pair.key, side, str(ctx.data), True,
                                                         probe_steps))
                    continue
                memory[side].append(isolated(memory_probe, pair.key, side, str(ctx.data),
                                             ctx.quick, probe_steps))

        def get(side: str, field: str, runs: dict = runs) -> list[float]:
            out = []
            for r in runs[side]:
                v = r[field]
                out.append(math.nan if v is None else float(v))
            return out

        def to_target(side: str, field: str, runs: dict = runs) -> list[float]:
            # a missed target: unknown (NaN) for the shared model, whose advantage is
            # claimed; at least the whole run for the unshared one (a conservative bound)
            out = get(side, field)
            if side == "unshared":
                total = get(side, "train_seconds" if field == "target_seconds" else "steps")
                out = [t if v != v else v for v, t in zip(out, total)]
            return out

        def mem(side: str, field: str, memory: dict = memory) -> list[float]:
            return [m[field] / MIB for m in memory[side]]

        names = pair.names
        step_c.append(compare("time per step (s)", get("shared", "median_step_seconds"),
                              get("unshared", "median_step_seconds"), better="lower",
                              a=names["shared"], b=names["unshared"], condition=pair.key))
        target_c.append(compare("training seconds to target",
                                to_target("shared", "target_seconds"),
                                to_target("unshared", "target_seconds"), better="lower",
                                a=names["shared"], b=names["unshared"], condition=pair.key))
        memory_c.append(compare("peak training RSS (MiB)", mem("shared", "peak_bytes"),
                                mem("unshared", "peak_bytes"), better="lower",
                                a=names["shared"], b=names["unshared"], condition=pair.key))
        target = f"held-out {pair.target.metric} <= {pair.target.value:g}"
        for side in SIDES:
            reached = sum(v == v for v in get(side, "target_seconds"))
            rows.append([pair.key, names[side],
                         summarize(get(side, "median_step_seconds")).fmt(1, 1000),
                         summarize(get(side, "target_step")).fmt(0) + f" ({reached}/"
                         f"{len(ctx.seeds)} reached)",
                         summarize(get(side, "target_seconds")).fmt(1),
                         summarize(mem(side, "peak_bytes")).fmt(1),
                         f"{summarize(mem(side, 'state_bytes')).mean:.1f}"])
        figures[pair.key] = {"names": names, "target": target, "cap_steps": cap[pair.key],
                             "eval_every": every[pair.key], "runs": runs, "memory": memory}
    table = Table("Speed and memory (mean ± std over seeds; time per step is the median step "
                  "of a run)",
                  ["pair", "model", "ms / step", "steps to target", "train s to target",
                   "peak RSS MiB", "params+grads+Adam MiB"], rows)
    plot = "training_speed.png"
    with ctx.figure(plot, ncols=2) as axes:
        for ax, pair in zip(axes, all_pairs):
            for side in SIDES:
                for k, r in enumerate(figures[pair.key]["runs"][side]):
                    ev = r["evals"]
                    ax.plot([e["seconds"] for e in ev], [e[pair.target.metric] for e in ev],
                            color="C0" if side == "shared" else "C1", alpha=0.8,
                            label=pair.names[side] if k == 0 else None)
            ax.axhline(pair.target.value, color="grey", ls="--", lw=1, label="target")
            ax.set_xlabel("training seconds")
            ax.set_ylabel(f"held-out {pair.target.metric}")
            ax.set_title(f"{pair.key}: time to target")
            ax.legend(fontsize=8)
    targets = "; ".join(f"{k}: {v['target']} within {v['cap_steps']} steps, evaluated every "
                        f"{v['eval_every']} steps" for k, v in figures.items())
    notes = [f"Targets: {targets}. A shared model that misses its target counts as NaN "
             "(n/a; the comparison fails); an unshared model that misses it counts as its "
             "whole run (a lower bound, which favours it).",
             "Training seconds exclude the held-out evaluations along the way.",
             "Peak RSS: resident memory measured by the OS in a fresh process, peak during "
             f"{probe_steps} training steps minus the level before the model was built "
             "(parameters, gradients, Adam state, activations and allocator overhead); the "
             "last column is what parameters + gradients + Adam's two moments alone take.",
             "Within a pair both models compute the same thing per example, so the "
             "language pair isolates what the parameter count itself costs in speed."]
    return Result(figures=figures,
                  claims=[Claim("faster-steps", "Sharing makes each training step faster.",
                                step_c),
                          Claim("faster-to-target", "Sharing reaches a given held-out quality "
                                "in less training time.", target_c),
                          Claim("less-memory", "Sharing lowers peak training memory.",
                                memory_c)],
                  tables=[table], plots=[plot], notes=notes,
                  setup={"cap_steps": cap, "eval_every": every, "probe_steps": probe_steps})


STUDY = register(Study(
    "training-speed", "Training speed and memory: shared vs unshared",
    "sharing speeds up training and lowers memory", ("mnist", "shakespeare"), run))
