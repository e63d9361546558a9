"""``expressiveness``: what cross-layer sharing costs a language model, and whether a deep
shared model beats a shallow untied one of the same size.

A character-level transformer on Shakespeare (validation = whole plays never trained on)
in every variant of ``study/lm.py``, each trained the same number of steps on the same
batches: validation loss against unique parameters (the Pareto plot).
"""

from __future__ import annotations

from ...analysis.report import inspect
from .. import lm
from ..context import Claim, Context, Result, Table
from ..registry import Study, register
from ..stats import Comparison, compare, summarize
from ..trainer import train

VARIANTS = ("untied", "cycle3", "all", "relaxed-r4", "relaxed-r16", "shallow1", "shallow3")
QUICK_VARIANTS = ("untied", "cycle3", "all", "relaxed-r2", "shallow1", "shallow3")


def run(ctx: Context) -> Result:
    size = ctx.pick(lm.QUICK, lm.FULL)
    steps = ctx.pick(30, 600)  # 21 runs in 15 minutes on one thread of a shared machine
    batch = ctx.pick(8, 16)
    lr = 2e-3
    corpus = lm.corpus(ctx.shakespeare_path())
    train_data = corpus.train(size.context)
    valid = corpus.held_out(size.context, ctx.pick(64, 512))
    variants = ctx.pick(QUICK_VARIANTS, VARIANTS)
    ctx.progress.start(steps * len(variants) * len(ctx.seeds))

    rows: dict[str, dict] = {}
    for variant in variants:
        probe = lm.build(variant, corpus.vocab_size, size, 0)
        report = inspect(probe)
        rows[variant] = {"label": lm.label(variant, size), "unique_params": report.unique_params,
                         "total_params": report.total_params, "runs": []}
    for seed in ctx.seeds:  # seeds outermost: a run cut short still has every variant
        for variant in variants:
            model = lm.build(variant, corpus.vocab_size, size, seed)
            r = train(ctx, rows[variant]["label"], model, train_data, steps=steps, seed=seed,
                      batch_size=batch, lr=lr, held_out=valid, eval_every=0)
            rows[variant]["runs"].append(r.to_dict())
    for row in rows.values():
        row["valid_loss"] = summarize([r["final"]["loss"] for r in row["runs"]]).to_dict()
        row["train_seconds"] = summarize([r["train_seconds"] for r in row["runs"]]).to_dict()

    def losses(v: str) -> list[float]:
        return [r["final"]["loss"] for r in rows[v]["runs"]]

    def vs(a: str, b: str, cond: str = "") -> Comparison:
        return compare("validation loss", losses(a), losses(b), better="lower",
                       a=rows[a]["label"], b=rows[b]["label"], condition=cond)

    n = size.layers
    price = Claim("price", f"At equal depth ({n} blocks), sharing blocks costs quality: the "
                  "fewer unique blocks, the higher the validation loss.",
                  [vs("untied", "cycle3", "untied vs cycle-3"),
                   vs("untied", "all", "untied vs all-shared"),
                   vs("cycle3", "all", "cycle-3 vs all-shared")])
    deep = Claim("deep-shared", "At equal unique parameters, a deep shared model beats a "
                 "shallow untied one (the ALBERT / MobileLLM claim).",
                 [vs("all", "shallow1", "1 block of parameters"),
                  vs("cycle3", "shallow3", "3 blocks of parameters")])
    relaxed_variants = [v for v in variants if v.startswith("relaxed")]
    relaxed = Claim("relaxed", "Relaxed sharing sits between: per-block low-rank deltas on an "
                    "all-shared stack lower its validation loss.",
                    [vs(v, "all", f"rank {v[len('relaxed-r'):]}")
                     for v in relaxed_variants])

    table = Table("Validation loss (nats/char) vs unique parameters",
                  ["model", "unique params", "total params", "validation loss",
                   "train s/run"],
                  [[row["label"], f"{row['unique_params']:,}", f"{row['total_params']:,}",
                    summarize(losses(v)).fmt(4), f"{row['train_seconds']['mean']:.0f}"]
                   for v, row in rows.items()])
    plot = "expressiveness.png"
    with ctx.figure(plot) as ax:
        deep_vs = [v for v in variants if not v.startswith("shallow")]
        for group, marker, name in ((deep_vs, "o", f"{n} blocks (shared or not)"),
                                    ([v for v in variants if v.startswith("shallow")], "s",
                                     "shallow untied")):
            xs = [rows[v]["unique_params"] for v in group]
            st = [summarize(losses(v)) for v in group]
            ax.errorbar(xs, [s.mean for s in st], yerr=[s.std for s in st], fmt=marker,
                        capsize=3, label=name)
            for v, x, s in zip(group, xs, st):
                ax.annotate(rows[v]["label"], (x, s.mean), textcoords="offset points",
                            xytext=(4, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("unique parameters")
        ax.set_ylabel("validation loss (nats/char, held-out plays)")
        ax.set_title(f"Char transformer, {steps} steps x {batch} x {size.context} chars")
        ax.legend()
    notes = [f"Validation plays (never trained on): {', '.join(corpus.valid_files)}; "
             f"{valid[0].shape[0]} windows of {size.context} characters at fixed offsets.",
             "Every model sees the same batches in the same order for the same number of "
             "steps (equal data, not equal compute: a deep model costs more per step than a "
             "shallow one of the same size).",
             "Relaxed variants start with every delta at zero (LoRA's start), i.e. from the "
             "all-shared model; the project's default (SVD of each block's residual) is meant "
             "for tying a trained model after the fact."]
    return Result(
        figures={"variants": rows},
        claims=[price, deep, relaxed], tables=[table], plots=[plot], notes=notes,
        setup={"size": size.__dict__, "steps": steps, "batch": batch, "lr": lr,
               "vocab": corpus.vocab_size, "train_chars": int(corpus.corpus.train.numel()),
               "valid_chars_evaluated": int(valid[0].numel())})


STUDY = register(Study(
    "expressiveness", "Expressiveness: what cross-layer sharing costs a language model",
    "the price of sharing is expressiveness; deep shared beats shallow untied at equal size",
    ("shakespeare",), run))
