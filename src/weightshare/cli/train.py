"""``weightshare train``: train a LeNet on MNIST with one kind of sharing, save the file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click
import torch

from ..io.write import check_output_path
from ..methods.soft.prior import SCALES
from ..models.lenet import MODELS
from ..train.recipes import SHARINGS, TrainConfig, run
from .common import common_options, emit, field_default, field_help


class Fraction(click.ParamType):
    """A number or a fraction written ``1/8``."""

    name = "FRACTION"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value)
        try:
            num, _, den = text.partition("/")
            return float(num) / float(den) if den else float(num)
        except (ValueError, ZeroDivisionError):
            self.fail(f"{text!r} is not a number or a fraction like 1/8", param, ctx)


def _opt(name: str, kind: type | click.ParamType) -> dict:
    default = field_default(TrainConfig, name)
    return {"type": kind, "default": default, "show_default": default is not None,
            "help": field_help(TrainConfig, name)}


def _text(r: dict) -> str:
    s = r["seconds"]
    kib = 1024
    lines = [
        f"model:   {r['model']} {r['widths']}, sharing {r['sharing']} ({', '.join(r['kinds'])})",
        f"output:  {r['output']}",
        f"test error: {100 * r['test_error']:.2f}%"
        + (f" (dense start: {100 * r['dense_test_error']:.2f}%)" if "dense_test_error" in r
           else "")
        + (f", validation error {100 * r['validation_error']:.2f}%"
           if "validation_error" in r else ""),
        f"size:    {r['dense_file_bytes'] / kib:.1f} KiB fp32 dense file -> "
        f"{r['file_bytes'] / kib:.1f} KiB file ({r['ratio']:.1f}x smaller)"
        + (f"; {r['fixed_width_bytes'] / kib:.1f} KiB at fixed width"
           if "fixed_width_bytes" in r else ""),
        f"params:  {r['params']:,} used, {r['stored_params']:,} floats stored",
        "time:    " + ", ".join(f"{k} {v:.0f} s" for k, v in s.items()),
    ]
    return "\n".join(lines)


@click.command()
@click.argument("model", type=click.Choice(MODELS))
@click.option("--data", "data_path", required=True, type=click.Path(),
              help="MNIST: an .npz (x_train, y_train, x_test, y_test) or a directory of the "
                   "four IDX files. Never downloaded.")
@click.option("--sharing", type=click.Choice(SHARINGS), default=field_default(TrainConfig,
              "sharing"), show_default=True, help=field_help(TrainConfig, "sharing"))
@click.option("--epochs", **_opt("epochs", float))
@click.option("--lr", **_opt("lr", float))
@click.option("--batch-size", **_opt("batch_size", int))
@click.option("--augment/--no-augment", default=field_default(TrainConfig, "augment"),
              show_default=True, help=field_help(TrainConfig, "augment"))
@click.option("--seed", **_opt("seed", int))
@click.option("--ratio", **_opt("ratio", Fraction()))
@click.option("--sparsity", **_opt("sparsity", float))
@click.option("--prune-epochs", **_opt("prune_epochs", float))
@click.option("--bits", **_opt("bits", int))
@click.option("--finetune-epochs", **_opt("finetune_epochs", float))
@click.option("--components", **_opt("components", int))
@click.option("--prior-weight", **_opt("prior_weight", float))
@click.option("--prior-weight-end", **_opt("prior_weight_end", float))
@click.option("--zero-mixing", **_opt("zero_mixing", float))
@click.option("--zero-std", **_opt("zero_std", float))
@click.option("--zero-std-start", **_opt("zero_std_start", float))
@click.option("--soft-biases/--no-soft-biases", default=field_default(TrainConfig, "soft_biases"),
              show_default=True, help=field_help(TrainConfig, "soft_biases"))
@click.option("--soft-epochs", **_opt("soft_epochs", float))
@click.option("--soft-scale", type=click.Choice(SCALES), default=field_default(
              TrainConfig, "soft_scale"), show_default=True,
              help=field_help(TrainConfig, "soft_scale"))
@click.option("--soft-decay", **_opt("soft_decay", float))
@click.option("--soft-refit", **_opt("soft_refit", float))
@click.option("--soft-refit-bits", **_opt("soft_refit_bits", str))
@click.option("--soft-refit-finetune", **_opt("soft_refit_finetune", float))
@click.option("--soft-every", **_opt("soft_every", int))
@click.option("--soft-harden", **_opt("soft_harden", int))
@click.option("--entropy", is_flag=True, help=field_help(TrainConfig, "entropy"))
@click.option("--validation", **_opt("validation", int))
@click.option("--init", type=click.Path(dir_okay=False), default=None,
              help="prune-cluster, soft: start from this dense file (written by --sharing "
                   "none) instead of training one first.")
@click.option("--threads", type=int, default=None,
              help="torch threads [default: torch's choice].")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Output file [default: MODEL-SHARING.safetensors].")
@common_options
def train(model: str, data_path: str, sharing: str, init: str | None, threads: int | None,
          output: str | None, as_json: bool, quiet: bool, **fields: object) -> None:
    """Train MODEL (lenet300, lenet5) on MNIST with one kind of sharing, save a weightshare
    file and report its test error, bytes and ratio to the dense fp32 file."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(model=model, sharing=sharing,
                         **{k: v for k, v in fields.items() if k in names})  # type: ignore[arg-type]
    out = check_output_path(output or f"{model}-{sharing}.safetensors")
    if init is not None and not Path(init).is_file():
        raise click.BadParameter(f"{init} is not a file", param_hint="--init")
    if threads is not None:
        torch.set_num_threads(threads)
    # run checks init and the refit's layers, then reads (and checks) the data, before
    # any training
    result = run(config, data_path, out, init=init, progress=None if not quiet else False)
    emit(result, as_json, quiet, _text)
