"""Command-line entry point: parse flags, call the Python API, print.

Errors a user can cause print one line on stderr and exit 1; ``WEIGHTSHARE_DEBUG=1``
shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from ..errors import WeightShareError

DEBUG_ENV = "WEIGHTSHARE_DEBUG"


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="weightshare")
def cli() -> None:
    """weightshare: weight sharing for any PyTorch model, measured.

    MODEL is a transformers model directory or hub id, a weightshare .safetensors
    file, or `minilm` (the packaged all-MiniLM-L6-v2, the default).
    """


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; map every known error to one line on stderr and exit status 1."""
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        cli.main(args=argv, prog_name="weightshare", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # bad flag, missing argument, bad choice
        if debug:
            raise
        hint = ""
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            hint = f" (see `{ctx.command_path} --help`)"
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(1)
    except click.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except WeightShareError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)


# the verbs register themselves on `cli`
from . import commands, tie_command  # noqa: E402,F401
