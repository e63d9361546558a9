"""``weightshare compress``: cluster a model's weights to codebooks and save the file."""

from __future__ import annotations

import click

from ..methods.codebook.config import GRANULARITIES, INITS, METHODS, ClusterConfig
from ..pipeline import compress as run
from .common import (
    common_options,
    emit,
    field_default,
    field_help,
    fmt_fidelity,
    fmt_size,
    text_options,
)


def _default(name: str):  # noqa: ANN202 - click option keyword arguments
    return {"default": field_default(ClusterConfig, name), "show_default": True,
            "help": field_help(ClusterConfig, name)}


def _coded(r: dict) -> str:
    c = r.get("codes") or {}
    if not c.get("count") or c.get("coded_bytes") is None:
        return ""
    per = 8 / c["count"]  # bytes -> bits per code
    return (f"\n         codes entropy-coded {per * c['coded_bytes']:.3f} bits/weight (Shannon "
            f"limit {per * c['entropy_bytes']:.3f})"
            + ("; the file stores them coded" if r.get("entropy") else ""))


def _text(r: dict) -> str:
    s = r["seconds"]
    notes = r.get("notes", {})
    cal = r.get("calibration")
    lines = [
        f"model:   {r['model']}  ({r['total_params']:,} parameters)",
        f"output:  {r['output']}",
        f"size:    {fmt_size(r)}",
        f"codes:   {r['clustered_tensors']} tensors at {r['bits_per_weight']:.3f} bits/weight "
        "(codes + codebooks)" + _coded(r),
        "calibration: " + (f"{cal['samples']} samples of {cal['source']}" if cal
                           else f"off ({notes.get('calibration', 'not asked')})"),
    ]
    fallback = r.get("group_fallback") or []
    if fallback:
        lines.append(f"grouping: {len(fallback)} tensor(s) changed (use --strict to refuse): "
                     + "; ".join(fallback[:4]) + (" ..." if len(fallback) > 4 else ""))
    lines += [
        f"time:    load {s['load']:.2f} s, cluster {s['cluster']:.2f} s, save {s['save']:.2f} s",
        fmt_fidelity(r["fidelity"], notes.get("fidelity", "")),
    ]
    return "\n".join(lines)


@click.command()
@click.argument("model", required=False, default="minilm")
@click.option("--bits", type=int, **_default("bits"))
@click.option("--granularity", type=click.Choice(GRANULARITIES), **_default("granularity"))
@click.option("--group-size", type=int, **_default("group_size"))
@click.option("--method", type=click.Choice(METHODS), **_default("method"))
@click.option("--init", type=click.Choice(INITS), **_default("init"))
@click.option("--include", multiple=True, metavar="PAT", help=field_help(ClusterConfig, "include"))
@click.option("--exclude", multiple=True, metavar="PAT", help=field_help(ClusterConfig, "exclude"))
@click.option("--min-size", type=int, **_default("min_size"))
@click.option("--calibrate/--no-calibrate", default=None,
              help="Data-aware clustering: weight each value by its input's mean square, "
                   "measured on calibration text (built-in sentences or --data; never the "
                   "held-out text). [default: on when the model has a tokenizer]")
@click.option("--codebook-dtype", type=click.Choice(["float32"]), default=None,
              help=field_help(ClusterConfig, "codebook_dtype"))
@click.option("--strict", is_flag=True, help=field_help(ClusterConfig, "strict"))
@click.option("--entropy", is_flag=True,
              help="Entropy-code the codes in the file (smaller; decoded exactly on loading).")
@click.option("--no-eval", is_flag=True, help="Skip the fidelity measurement.")
@text_options
@click.option("--embed-tokenizer", is_flag=True,
              help="Carry the tokenizer files in the output file (it then needs no base "
                   "directory to be chained or evaluated).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Output file [default: MODEL-<bits>bit.safetensors].")
@common_options
def compress(model: str, bits: int, granularity: str, group_size: int, method: str, init: str,
             include: tuple[str, ...], exclude: tuple[str, ...], min_size: int,
             calibrate: bool | None, codebook_dtype: str | None, strict: bool, entropy: bool,
             no_eval: bool,
             data: str | None, eval_data: str | None, embed_tokenizer: bool, output: str | None,
             as_json: bool, quiet: bool) -> None:
    """Cluster MODEL's weights to 2^bits shared values and save a weightshare file."""
    config = ClusterConfig(bits=bits, granularity=granularity, group_size=group_size,
                           method=method, init=init, include=include, exclude=exclude,
                           min_size=min_size, strict=strict, codebook_dtype=codebook_dtype)
    result = run(model, config, output, calibrate=calibrate, measure=not no_eval,
                 progress=None if not quiet else False, data=data, eval_data=eval_data,
                 embed_tokenizer=embed_tokenizer, entropy=entropy)
    emit(result, as_json, quiet, _text)
