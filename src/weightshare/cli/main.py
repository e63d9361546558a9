"""Command-line entry point: the ``weightshare`` group, its verbs, and error handling.

Errors a user can cause print one line on stderr and exit 1; ``WEIGHTSHARE_DEBUG=1``
shows the traceback instead.
"""

from __future__ import annotations

import os
import sys

import click

from ..errors import WeightShareError
from .compress import compress
from .eval import eval_cmd
from .export import export_cmd
from .inspect import inspect_cmd
from .study import study
from .tie import tie
from .train import train

DEBUG_ENV = "WEIGHTSHARE_DEBUG"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="weightshare")
def cli() -> None:
    """weightshare: weight sharing for any PyTorch model, measured.

    MODEL is a transformers model directory or hub id, a weightshare .safetensors
    file, or `minilm` (the packaged all-MiniLM-L6-v2, the default).
    """


for _verb in (compress, tie, inspect_cmd, eval_cmd, export_cmd, train, study):
    cli.add_command(_verb)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; map every known error to one line on stderr and exit status 1."""
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    from ..models.memory import return_freed_memory

    return_freed_memory()  # large temporaries go back to the system (peak memory)
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
