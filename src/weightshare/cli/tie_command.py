"""The `tie` verb, and the redundancy analysis that `inspect --similarity` prints."""

from __future__ import annotations

import click

from ..errors import ConfigError
from ..tying.config import INITS, STRATEGIES, TieConfig
from .commands import _fmt_fidelity
from .main import cli, common_options, emit


def _tie_text(r: dict) -> str:
    s = r["seconds"]
    mib = 2**20
    lines = [
        f"model:   {r['model']}",
        f"output:  {r['output']}",
        f"params:  {r['unique_params_before']:,} -> {r['unique_params_after']:,} stored "
        f"({1 - r['unique_params_after'] / r['unique_params_before']:.1%} fewer)",
        f"bytes:   {r['stored_bytes_before'] / mib:.2f} MiB -> {r['stored_bytes_after'] / mib:.2f}"
        f" MiB stored; file {r['file_bytes'] / mib:.2f} MiB",
        f"time:    load {s['load']:.2f} s, tie {s['tie']:.2f} s, distill {s['distill']:.1f} s, "
        f"save {s['save']:.2f} s",
    ]
    if r.get("plan_text"):
        lines.insert(2, r["plan_text"])
    if r.get("fidelity_before_distill"):
        lines.append("before distillation: " + _fmt_fidelity(r["fidelity_before_distill"]))
    lines.append(_fmt_fidelity(r["fidelity"]))
    return "\n".join(lines)


@cli.command()
@click.argument("model", required=False, default="minilm")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=None,
              help=TieConfig.help("strategy"))
@click.option("--cut", type=float, default=None, metavar="F",
              help="Instead of --strategy: tie what the redundancy analysis suggests to remove "
                   "a fraction F of the parameters (e.g. 0.10).")
@click.option("--unique", "-m", type=int, default=None, help=TieConfig.help("unique"))
@click.option("--stack", default=None, help=TieConfig.help("stack"))
@click.option("--scope", default=None, metavar="PAT", help=TieConfig.help("scope"))
@click.option("--layers", default=None, help=TieConfig.help("layers"))
@click.option("--init", type=click.Choice(INITS), default="first", show_default=True,
              help=TieConfig.help("init"))
@click.option("--rank", default="0", show_default=True, help=TieConfig.help("rank"))
@click.option("--embeddings", is_flag=True, help=TieConfig.help("embeddings"))
@click.option("--distill-steps", type=int, default=0, show_default=True,
              help="Distill the tied model toward the original for this many steps.")
@click.option("--distill-seconds", type=float, default=None,
              help="Or for this many seconds (whichever ends first).")
@click.option("--lr", type=float, default=1e-4, show_default=True,
              help="Learning rate of the distillation.")
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="Also distill on spliced / word-dropped variants of the sentences.")
@click.option("--data", type=click.Path(exists=True), default=None,
              help="Unlabeled text for distillation: a .txt file or a directory of them "
                   "[default: the built-in calibration sentences].")
@click.option("--no-eval", is_flag=True, help="Skip the fidelity measurement.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Output file [default: MODEL-tied.safetensors].")
@common_options
def tie(model: str, strategy: str | None, cut: float | None, unique: int | None,
        stack: str | None, scope: str | None, layers: str | None, init: str, rank: str,
        embeddings: bool, distill_steps: int, distill_seconds: float | None, lr: float,
        augment: bool, data: str | None, no_eval: bool, output: str | None, as_json: bool,
        quiet: bool) -> None:
    """Share whole blocks (or parts of them) across the layers of MODEL and save the result."""
    from ..pipeline import tie as run

    if (strategy is None) == (cut is None):
        raise ConfigError("give either --strategy (with --unique, --scope ...) or --cut F "
                          "(the suggested plan for a fraction F of the parameters)")
    config = None if cut is not None else TieConfig(
        strategy=strategy, unique=unique, stack=stack, scope=scope, layers=layers, init=init,
        rank=rank, embeddings=embeddings)
    result = run(model, config, output, cut=cut, distill_steps=distill_steps,
                 distill_seconds=distill_seconds, data=data, lr=lr, augment=augment,
                 measure=not no_eval, progress=None if not quiet else False)
    emit(result, as_json, quiet, _tie_text)


def similarity_text(r: dict) -> str:
    sim = r["similarity"]
    n = len(sim["blocks"])
    head = "      " + "".join(f"{i:>7}" for i in sim["indices"])

    def table(title: str, m: list[list[float]] | None) -> list[str]:
        if m is None:
            return []
        return [title, head] + [f"{sim['indices'][i]:>6}" + "".join(
            "      -" if v != v else f"{v:7.3f}" for v in m[i]) for i in range(n)]

    lines = [f"stack {sim['stack']}: {n} blocks"]
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
