"""``weightshare tie``: share whole blocks (or parts of them) across layers."""

from __future__ import annotations

import click

from ..errors import ConfigError
from ..methods.tie.config import INITS, STRATEGIES, TieConfig
from ..pipeline import tie as run
from .common import (
    common_options,
    emit,
    field_default,
    field_help,
    fmt_fidelity,
    fmt_size,
    param_default,
    text_options,
)


def _tie_text(r: dict) -> str:
    s = r["seconds"]
    mib = 2**20
    lines = [
        f"model:   {r['model']}",
        f"output:  {r['output']}",
        f"params:  {r['unique_params_before']:,} -> {r['unique_params_after']:,} stored "
        f"({1 - r['unique_params_after'] / r['unique_params_before']:.1%} fewer)",
        f"bytes:   {r['stored_bytes_before'] / mib:.2f} MiB -> {r['stored_bytes_after'] / mib:.2f}"
        f" MiB stored; size {fmt_size(r)}",
        f"time:    load {s['load']:.2f} s, tie {s['tie']:.2f} s, distill {s['distill']:.1f} s, "
        f"save {s['save']:.2f} s",
    ]
    if r.get("plan_text"):
        lines.insert(2, r["plan_text"])
    if r.get("fidelity_before_distill"):
        lines.append("before distillation: " + fmt_fidelity(r["fidelity_before_distill"]))
    lines.append(fmt_fidelity(r["fidelity"], "--no-eval"))
    return "\n".join(lines)


@click.command()
@click.argument("model", required=False, default="minilm")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=None,
              help=field_help(TieConfig, "strategy"))
@click.option("--cut", type=float, default=None, metavar="F",
              help="Instead of --strategy: tie what the redundancy analysis suggests to remove "
                   "a fraction F of the parameters (e.g. 0.10).")
@click.option("--unique", "-m", type=int, default=None, help=field_help(TieConfig, "unique"))
@click.option("--stack", default=None, help=field_help(TieConfig, "stack"))
@click.option("--scope", default=None, metavar="PAT", help=field_help(TieConfig, "scope"))
@click.option("--layers", default=None, help=field_help(TieConfig, "layers"))
@click.option("--init", type=click.Choice(INITS), default=field_default(TieConfig, "init"),
              help=field_help(TieConfig, "init"))
@click.option("--rank", default=str(field_default(TieConfig, "rank")), show_default=True,
              help=field_help(TieConfig, "rank"))
@click.option("--embeddings", is_flag=True, help=field_help(TieConfig, "embeddings"))
@click.option("--distill-steps", type=int, default=param_default(run, "distill_steps"),
              show_default=True,
              help="Distill the tied model toward the original for this many steps.")
@click.option("--distill-seconds", type=float, default=None,
              help="Or for this many seconds (whichever ends first).")
@click.option("--lr", type=float, default=param_default(run, "lr"), show_default=True,
              help="Learning rate of the distillation.")
@click.option("--augment/--no-augment", default=param_default(run, "augment"),
              show_default=True,
              help="Also distill on spliced / word-dropped variants of the sentences.")
@text_options
@click.option("--embed-tokenizer", is_flag=True,
              help="Carry the tokenizer files in the output file.")
@click.option("--no-eval", is_flag=True, help="Skip the fidelity measurement.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Output file [default: MODEL-tied.safetensors].")
@common_options
def tie(model: str, strategy: str | None, cut: float | None, unique: int | None,
        stack: str | None, scope: str | None, layers: str | None, init: str | None, rank: str,
        embeddings: bool, distill_steps: int, distill_seconds: float | None, lr: float,
        augment: bool, data: str | None, eval_data: str | None, embed_tokenizer: bool,
        no_eval: bool, output: str | None, as_json: bool, quiet: bool) -> None:
    """Share whole blocks (or parts of them) across the layers of MODEL and save the result."""
    if (strategy is None) == (cut is None):
        raise ConfigError("give either --strategy (with --unique, --scope ...) or --cut F "
                          "(the suggested plan for a fraction F of the parameters)")
    config = None if cut is not None else TieConfig(
        strategy=strategy, unique=unique, stack=stack, scope=scope, layers=layers, init=init,
        rank=rank, embeddings=embeddings)
    result = run(model, config, output, cut=cut, distill_steps=distill_steps,
                 distill_seconds=distill_seconds, data=data, lr=lr, augment=augment,
                 measure=not no_eval, progress=None if not quiet else False,
                 eval_data=eval_data, embed_tokenizer=embed_tokenizer)
    emit(result, as_json, quiet, _tie_text)
