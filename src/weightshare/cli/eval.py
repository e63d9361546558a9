"""``weightshare eval``: a saved file's fidelity against its original model."""

from __future__ import annotations

import click

from ..pipeline import evaluate
from .common import common_options, emit, fmt_fidelity


def _text(r: dict) -> str:
    return "\n".join([f"file:      {r['file']} ({r['file_bytes'] / 2**20:.2f} MiB)",
                      f"reference: {r['reference']}", fmt_fidelity(r["fidelity"])])


@click.command(name="eval")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--reference", default="minilm", show_default=True,
              help="The original model to compare against (same forms as MODEL).")
@common_options
def eval_cmd(path: str, reference: str, as_json: bool, quiet: bool) -> None:
    """Measure a saved file's fidelity against its original model on held-out inputs."""
    emit(evaluate(path, reference), as_json, quiet, _text)
