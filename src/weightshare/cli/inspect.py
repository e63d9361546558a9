"""``weightshare inspect``: what a model or file holds, and the redundancy analysis."""

from __future__ import annotations

from pathlib import Path

import click

from ..analysis.report import inspect as inspect_report
from ..errors import ConfigError
from ..methods.tie import find_blocks
from ..pipeline import open_model, similarity
from .common import common_options, emit, param_default


def similarity_text(r: dict) -> str:
    sim = r["similarity"]
    n = len(sim["blocks"])
    head = "      " + "".join(f"{i:>7}" for i in sim["indices"])

    def table(title: str, m: list[list[float]] | None) -> list[str]:
        if m is None:
            return []
        return [title, head] + [f"{sim['indices'][i]:>6}" + "".join(
            "      -" if v != v else f"{v:7.3f}" for v in m[i]) for i in range(n)]

    lines = [f"stack {sim['stack']}: {n} blocks" + (
        f", tie loss measured on {r['samples']} calibration sentences" if r.get("samples")
        else "") + (f", blocks at most {r['window']} apart" if r.get("window") else "")]
    for scope, m in sim["weight_cosine"].items():
        lines += table(f"weight cosine, {scope}:", m)
    lines += table("output CKA:", sim.get("output_cka"))
    for scope, m in (sim.get("tie_loss") or {}).items():
        lines += table(f"tie loss (1 - output cosine when block j uses block i's {scope}; "
                       "rows i, columns j):", m)
    if "plan_text" in r:
        lines += ["", r["plan_text"]]
    if "plot" in r:
        lines.append(f"heatmap: {r['plot']}")
    return "\n".join(lines)


@click.command(name="inspect")
@click.argument("model", required=False, default="minilm")
@click.option("--summary", is_flag=True, help="Print only the totals, not the per-tensor table.")
@click.option("--similarity", "with_similarity", is_flag=True,
              help="Redundancy analysis of the repeated blocks (weight cosine, output CKA, "
                   "tie loss on built-in calibration sentences).")
@click.option("--suggest-unique", type=int, default=None,
              help="With --similarity: suggest a tie plan keeping this many unique blocks.")
@click.option("--suggest-cut", type=float, default=None,
              help="With --similarity: suggest a tie plan removing this fraction of parameters.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="With --similarity: save a heatmap PNG here (needs matplotlib).")
@click.option("--samples", type=int, default=param_default(similarity, "samples"),
              show_default=True,
              help="With --similarity: calibration sentences the tie loss is measured on "
                   "(its cost grows with them and with blocks squared).")
@click.option("--window", type=int, default=None,
              help="With --similarity: measure the tie loss of blocks at most this far apart "
                   "[default: all pairs up to 6 blocks, 3 beyond].")
@common_options
def inspect_cmd(model: str, summary: bool, with_similarity: bool, suggest_unique: int | None,
                suggest_cut: float | None, plot: str | None, samples: int, window: int | None,
                as_json: bool, quiet: bool) -> None:
    """List MODEL's tensors: how each is shared, distinct values, dense and stored bytes.
    Also lists the stacks of repeated blocks that `weightshare tie` can share."""
    if with_similarity:
        emit(similarity(model, unique=suggest_unique, cut=suggest_cut, plot=plot,
                        samples=samples, window=window,
                        progress=None if not quiet else False),
             as_json, quiet, similarity_text)
        return
    if suggest_unique is not None or suggest_cut is not None or plot:
        raise ConfigError("--suggest-unique, --suggest-cut and --plot go with --similarity; add "
                          "--similarity")
    lm = None if Path(model).is_file() else open_model(model)
    report = inspect_report(model) if lm is None else inspect_report(lm.model)
    result = report.to_dict()
    stacks = [] if lm is None else find_blocks(lm.model)
    result["block_stacks"] = [{"name": s.name, "blocks": len(s.blocks)} for s in stacks]
    text = report.summary() if summary else str(report)
    if stacks:
        text += "\nrepeated blocks: " + ", ".join(f"{s.name} ({len(s.blocks)} blocks)"
                                                  for s in stacks)
    emit(result, as_json, quiet, lambda _: text)
