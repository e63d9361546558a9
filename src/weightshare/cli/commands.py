"""The verbs: compress, inspect, eval (tie lives in tie_command.py)."""

from __future__ import annotations

import click

from ..codebook.config import INITS, METHODS, ClusterConfig
from ..codebook.parametrization import GRANULARITIES
from .main import cli, common_options, emit

_HELP = {f.name: f.metadata.get("help", "") for f in ClusterConfig.__dataclass_fields__.values()}


def _fmt_fidelity(fid: dict | None) -> str:
    if not fid:
        return "fidelity: not measured"
    if "cosine_mean" in fid:
        return (f"fidelity (held-out sentences): cosine mean {fid['cosine_mean']:.4f}, "
                f"min {fid['cosine_min']:.4f}, top-1 agreement {fid['top1_agreement']:.3f}")
    return f"fidelity: relative output error {fid['relative_error']:.4g}"


def _compress_text(r: dict) -> str:
    s = r["seconds"]
    mib = 2**20
    return "\n".join([
        f"model:   {r['model']}  ({r['total_params']:,} parameters)",
        f"output:  {r['output']}",
        f"size:    {r['dense_bytes'] / mib:.2f} MiB fp32 -> {r['file_bytes'] / mib:.2f} MiB "
        f"file ({r['ratio']:.2f}x smaller)",
        f"codes:   {r['clustered_tensors']} tensors at {r['bits_per_weight']:.3f} bits/weight "
        "(codes + codebooks)",
        f"time:    load {s['load']:.2f} s, cluster {s['cluster']:.2f} s, save {s['save']:.2f} s",
        _fmt_fidelity(r["fidelity"]),
    ])


@cli.command()
@click.argument("model", required=False, default="minilm")
@click.option("--bits", type=int, default=4, show_default=True, help=_HELP["bits"])
@click.option("--granularity", type=click.Choice(GRANULARITIES), default="per_tensor",
              show_default=True, help=_HELP["granularity"])
@click.option("--group-size", type=int, default=16, show_default=True, help=_HELP["group_size"])
@click.option("--method", type=click.Choice(METHODS), default="exact", show_default=True,
              help=_HELP["method"])
@click.option("--init", type=click.Choice(INITS), default="linear", show_default=True,
              help=_HELP["init"])
@click.option("--include", multiple=True, metavar="PAT", help=_HELP["include"])
@click.option("--exclude", multiple=True, metavar="PAT", help=_HELP["exclude"])
@click.option("--min-size", type=int, default=1024, show_default=True, help=_HELP["min_size"])
@click.option("--calibrate/--no-calibrate", default=None,
              help="Data-aware clustering: weight each value by its input's mean square, "
                   "measured on built-in calibration sentences (never the evaluation ones). "
                   "[default: on when the model has a tokenizer]")
@click.option("--no-eval", is_flag=True, help="Skip the fidelity measurement.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Output file [default: MODEL-<bits>bit.safetensors].")
@common_options
def compress(model: str, bits: int, granularity: str, group_size: int, method: str, init: str,
             include: tuple[str, ...], exclude: tuple[str, ...], min_size: int,
             calibrate: bool | None, no_eval: bool, output: str | None, as_json: bool,
             quiet: bool) -> None:
    """Cluster MODEL's weights to 2^bits shared values and save a weightshare file."""
    from ..pipeline import compress as run

    config = ClusterConfig(bits=bits, granularity=granularity, group_size=group_size,
                           method=method, init=init, include=include, exclude=exclude,
                           min_size=min_size)
    result = run(model, config, output, calibrate=calibrate, measure=not no_eval,
                 progress=None if not quiet else False)
    emit(result, as_json, quiet, _compress_text)


@cli.command(name="inspect")
@click.argument("model", required=False, default="minilm")
@click.option("--summary", is_flag=True, help="Print only the totals, not the per-tensor table.")
@click.option("--similarity", is_flag=True,
              help="Redundancy analysis of the repeated blocks (weight cosine, output CKA, "
                   "tie loss on built-in calibration sentences).")
@click.option("--suggest-unique", type=int, default=None,
              help="With --similarity: suggest a tie plan keeping this many unique blocks.")
@click.option("--suggest-cut", type=float, default=None,
              help="With --similarity: suggest a tie plan removing this fraction of parameters.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="With --similarity: save a heatmap PNG here (needs matplotlib).")
@common_options
def inspect_cmd(model: str, summary: bool, similarity: bool, suggest_unique: int | None,
                suggest_cut: float | None, plot: str | None, as_json: bool, quiet: bool) -> None:
    """List MODEL's tensors: how each is shared, distinct values, dense and stored bytes.
    Also lists the stacks of repeated blocks that `weightshare tie` can share."""
    from pathlib import Path

    from ..report import inspect

    if similarity:
        from ..pipeline import similarity as run
        from .tie_command import similarity_text

        emit(run(model, unique=suggest_unique, cut=suggest_cut, plot=plot), as_json, quiet,
             similarity_text)
        return

    from ..pipeline import open_model
    from ..tying import find_blocks

    lm = None if Path(model).is_file() else open_model(model)
    report = inspect(model) if lm is None else inspect(lm.model)
    result = report.to_dict()
    stacks = [] if lm is None else find_blocks(lm.model)
    result["block_stacks"] = [{"name": s.name, "blocks": len(s.blocks)} for s in stacks]
    text = report.summary() if summary else str(report)
    if stacks:
        text += "\nrepeated blocks: " + ", ".join(f"{s.name} ({len(s.blocks)} blocks)"
                                                  for s in stacks)
    emit(result, as_json, quiet, lambda _: text)


def _eval_text(r: dict) -> str:
    return "\n".join([f"file:      {r['file']} ({r['file_bytes'] / 2**20:.2f} MiB)",
                      f"reference: {r['reference']}", _fmt_fidelity(r["fidelity"])])


@cli.command(name="eval")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--reference", default="minilm", show_default=True,
              help="The original model to compare against (same forms as MODEL).")
@common_options
def eval_cmd(path: str, reference: str, as_json: bool, quiet: bool) -> None:
    """Measure a saved file's fidelity against its original model on held-out inputs."""
    from ..pipeline import evaluate

    emit(evaluate(path, reference), as_json, quiet, _eval_text)
