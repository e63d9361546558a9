"""``weightshare compress``: cluster a model's weights to codebooks and save the file."""

from __future__ import annotations

import click
from click.core import ParameterSource

from ..methods.codebook.config import (
    GRANULARITIES,
    INITS,
    METHODS,
    SCALES,
    WEIGHTINGS,
    ClusterConfig,
)
from ..methods.codebook.finetune import finetune_codebooks_
from ..methods.codebook.recipes import CALIBRATION_SAMPLES, RECIPES
from ..pipeline import compress as run
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

# flags that are ClusterConfig fields (a recipe sets them unless the flag is given)
_FIELDS = ("granularity", "group_size", "method", "init", "include", "exclude", "min_size",
           "vector_dim", "scales", "weighting", "error_feedback", "sequential", "outliers",
           "shared_codebooks", "codebook_dtype", "strict")


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
    times = ", ".join(f"{k} {v:.2f} s" for k, v in s.items())
    lines = [
        f"model:   {r['model']}  ({r['total_params']:,} parameters)",
        f"output:  {r['output']}",
        f"size:    {fmt_size(r)}",
        f"codes:   {r['clustered_tensors']} tensors at {r['bits_per_weight']:.3f} bits/weight "
        "(everything stored: codes, codebooks, scales, outliers)" + _coded(r),
        "calibration: " + (f"{cal['samples']} samples of {cal['source']}" if cal
                           else f"off ({notes.get('calibration', 'not asked')})"),
    ]
    fallback = r.get("group_fallback") or []
    if fallback:
        lines.append(f"grouping: {len(fallback)} tensor(s) changed (use --strict to refuse): "
                     + "; ".join(fallback[:4]) + (" ..." if len(fallback) > 4 else ""))
    lines.append(f"time:    {times}")
    tuned = r.get("finetune")
    if tuned is not None:
        lines.append(f"before fine-tuning: {fmt_fidelity(tuned['fidelity_before'])}")
        if tuned["diverged"]:
            d = tuned["diverged"]
            lines.append(f"fine-tuning diverged at step {d['step']}: restored the codebooks of "
                         f"step {d['restored_step']}")
    lines.append(fmt_fidelity(r["fidelity"], notes.get("fidelity", "")))
    return "\n".join(lines)


@click.command()
@click.argument("model", required=False, default="minilm")
@click.option("--recipe", type=click.Choice(RECIPES), default=None,
              help="A measured combination (docs/codebooks.md); --bits is then the budget "
                   "in bits per weight, and other flags given override the recipe.")
@click.option("--bits", type=int, **_default("bits"))
@click.option("--granularity", type=click.Choice(GRANULARITIES), **_default("granularity"))
@click.option("--group-size", type=int, **_default("group_size"))
@click.option("--method", type=click.Choice(METHODS), **_default("method"))
@click.option("--init", type=click.Choice(INITS), **_default("init"))
@click.option("--include", multiple=True, metavar="PAT", help=field_help(ClusterConfig, "include"))
@click.option("--exclude", multiple=True, metavar="PAT", help=field_help(ClusterConfig, "exclude"))
@click.option("--min-size", type=int, **_default("min_size"))
@click.option("--vector-dim", type=int, **_default("vector_dim"))
@click.option("--scales", type=click.Choice(SCALES), **_default("scales"))
@click.option("--weighting", type=click.Choice(WEIGHTINGS), **_default("weighting"))
@click.option("--error-feedback/--no-error-feedback", **_default("error_feedback"))
@click.option("--sequential/--no-sequential", **_default("sequential"))
@click.option("--outliers", type=float, **_default("outliers"))
@click.option("--shared-codebook", "shared_codebooks", multiple=True, metavar="PAT",
              help=field_help(ClusterConfig, "shared_codebooks"))
@click.option("--calibrate/--no-calibrate", default=None,
              help="Data-aware clustering on calibration text (built-in sentences or --data; "
                   "never the held-out text). [default: on when the model has a tokenizer]")
@click.option("--calibration-samples", type=int, default=None,
              help="Calibration samples to use [default: the recipe's (fast 32, balanced "
                   "128, quality 512); else 32, or 128 with error feedback, Fisher weighting "
                   "or a budget].")
@click.option("--finetune-seconds", type=float, default=None,
              help="Then train codebooks, scales, biases and norms toward the original for "
                   "this many seconds (on the calibration text: built-in sentences or --data).")
@click.option("--finetune-steps", type=int, default=None,
              help="Fine-tuning budget in optimizer steps (with or instead of seconds).")
@click.option("--finetune-lr", type=float, default=None,
              help="Learning rate of codebook fine-tuning (2e-3 measured best at 2 bits) "
                   f"[default: {param_default(finetune_codebooks_, 'lr')}].")
@click.option("--finetune-embeddings", is_flag=True,
              help="Fine-tuning also trains the embedding tables' codebooks (kept fixed by "
                   "default).")
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
@click.pass_context
def compress(ctx: click.Context, model: str, recipe: str | None, bits: int,
             calibrate: bool | None, calibration_samples: int | None,
             finetune_seconds: float | None, finetune_steps: int | None, finetune_lr: float | None,
             finetune_embeddings: bool, entropy: bool, no_eval: bool, data: str | None,
             eval_data: str | None, embed_tokenizer: bool, output: str | None, as_json: bool,
             quiet: bool, **fields: object) -> None:
    """Cluster MODEL's weights to 2^bits shared values and save a weightshare file."""
    if recipe is not None:
        given = {k: v for k, v in fields.items()
                 if ctx.get_parameter_source(k) != ParameterSource.DEFAULT}
        config = ClusterConfig.recipe(recipe, bits=bits, **given)
        if calibration_samples is None:
            calibration_samples = CALIBRATION_SAMPLES[recipe]
    else:
        config = ClusterConfig(bits=bits, **{k: fields[k] for k in _FIELDS})  # type: ignore[arg-type]
    result = run(model, config, output, calibrate=calibrate, measure=not no_eval,
                 progress=None if not quiet else False, data=data, eval_data=eval_data,
                 embed_tokenizer=embed_tokenizer, entropy=entropy,
                 calibration_samples=calibration_samples, finetune_seconds=finetune_seconds,
                 finetune_steps=finetune_steps, finetune_lr=finetune_lr,
                 finetune_embeddings=finetune_embeddings)
    emit(result, as_json, quiet, _text)
