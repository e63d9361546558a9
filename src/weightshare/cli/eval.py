"""``weightshare eval``: a saved file's fidelity against its original model."""

from __future__ import annotations

import click

from ..pipeline import evaluate
from .common import common_options, emit, fmt_fidelity, fmt_size, text_options


def _text(r: dict) -> str:
    return "\n".join([f"file:      {r['file']}",
                      f"reference: {r['reference']} ({r['reference_from']})",
                      f"size:      {fmt_size(r)}", fmt_fidelity(r["fidelity"])])


@click.command(name="eval")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--reference", default=None,
              help="The original model to compare against (same forms as MODEL) "
                   "[default: the base model the file records].")
@text_options
@common_options
def eval_cmd(path: str, reference: str | None, data: str | None, eval_data: str | None,
             as_json: bool, quiet: bool) -> None:
    """Measure a saved file's fidelity against its original model on held-out inputs."""
    emit(evaluate(path, reference, data=data, eval_data=eval_data), as_json, quiet, _text)
