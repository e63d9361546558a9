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


def fmt_fidelity(fid: dict | None) -> str:
    if not fid:
        return "fidelity: not measured"
    if "cosine_mean" in fid:
        return (f"fidelity (held-out sentences): cosine mean {fid['cosine_mean']:.4f}, "
                f"min {fid['cosine_min']:.4f}, top-1 agreement {fid['top1_agreement']:.3f}")
    return f"fidelity: relative output error {fid['relative_error']:.4g}"
