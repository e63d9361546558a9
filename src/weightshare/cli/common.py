"""What every verb shares: --json / --quiet, printing, defaults read from the configs."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
from collections.abc import Callable
from typing import Any

import click


def common_options(func: Callable) -> Callable:
    """--json and --quiet, shared by every verb."""

    @click.option("--json", "as_json", is_flag=True,
                  help="Print one JSON object on stdout (keys documented in the README).")
    @click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors (and --json).")
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


def emit(result: dict, as_json: bool, quiet: bool, text: Callable[[dict], str]) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=None, default=str))
    elif not quiet:
        click.echo(text(result))


def field_default(config_type: type, name: str) -> Any:
    """The default of a config field: CLI defaults are read from the configs, never typed
    again."""
    for f in dataclasses.fields(config_type):
        if f.name == name:
            return f.default
    raise KeyError(f"{config_type.__name__} has no field {name!r}")


def param_default(func: Callable, name: str) -> Any:
    """The default of a keyword of a Python API function (for flags that are no config
    field), so the CLI and the API cannot disagree."""
    return inspect.signature(func).parameters[name].default


def field_help(config_type: type, name: str) -> str:
    """The one-line help text of a config field, which the CLI reuses."""
    for f in dataclasses.fields(config_type):
        if f.name == name:
            return str(f.metadata.get("help", ""))
    raise KeyError(f"{config_type.__name__} has no field {name!r}")


def fmt_fidelity(fid: dict | None, why_not: str = "") -> str:
    """One line of fidelity, then one line saying what was measured on what."""
    if not fid:
        return "fidelity: not measured" + (f" ({why_not})" if why_not else "")
    measured = f"\n  measured: {fid['measured']}" if fid.get("measured") else ""
    if "perplexity" in fid:
        kl = "-" if fid.get("kl") is None else f"{fid['kl']:.4f}"
        return (f"fidelity: perplexity {fid['perplexity_reference']:.3f} original -> "
                f"{fid['perplexity']:.3f} shared, KL {kl} nats/token, top-1 next-token "
                f"agreement {fid['top1_agreement']:.3f}" + measured)
    if "cosine_mean" in fid:
        return (f"fidelity (held-out sentences): cosine mean {fid['cosine_mean']:.4f}, "
                f"min {fid['cosine_min']:.4f}, top-1 agreement {fid['top1_agreement']:.3f}"
                + measured)
    return f"fidelity: relative output error {fid['relative_error']:.4g}" + measured


def fmt_size(r: dict) -> str:
    """``86.64 MiB fp32 -> 10.96 MiB file (7.90x smaller)``: the baseline in its dtype."""
    from ..core.baseline import dtype_label

    mib = 2**20
    return (f"{r['dense_bytes'] / mib:.2f} MiB {dtype_label(r.get('dense_dtype', 'float32'))} "
            f"-> {r['file_bytes'] / mib:.2f} MiB file ({r['ratio']:.2f}x smaller)")


def text_options(func: Callable) -> Callable:
    """--data and --eval-data, shared by the verbs that calibrate or measure on text."""

    @click.option("--data", type=click.Path(), default=None, metavar="PATH",
                  help="Your text (a .txt file or a directory of them): calibration or "
                       "distillation uses part of it, fidelity is measured on the rest (a "
                       "directory: every fifth file held out; a file: its last fifth) "
                       "[default: built-in sentences].")
    @click.option("--eval-data", type=click.Path(), default=None, metavar="PATH",
                  help="Held-out text to measure on, all of it (then --data is used whole "
                       "for calibration).")
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper
