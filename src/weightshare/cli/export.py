"""``weightshare export``: a weightshare file to a format others run (``weightshare.export``)."""

from __future__ import annotations

import click

from ..export import FORMATS, check_export
from ..export import export as run
from .common import common_options, emit


def _text(r: dict) -> str:
    mib = 2**20
    lines = [f"model:   {r['model']}", f"output:  {r['output']} ({r['format']}, "
             f"{r['bytes'] / mib:.2f} MiB)"]
    if r.get("file_bytes"):
        lines.append(f"file:    {r['file_bytes'] / mib:.2f} MiB weightshare file -> "
                     f"{r['bytes'] / mib:.2f} MiB {r['format']}")
    if r["format"] in ("hf", "sentence-transformers"):
        lines.append(f"weights: dense {r['dtype']}, the shared model's exact values"
                     + (f"; {r['duplicated_ties']} tied tensor(s) written once per place "
                        "(the transformers class does not tie them)"
                        if r["duplicated_ties"] else ""))
    if r["format"] == "coreml":
        bits = sorted({t["bits"] for t in r["tables"]})
        lines.append(f"palettized: {r['palettized']} weight(s) as look-up tables + "
                     f"{'/'.join(map(str, bits)) or '-'}-bit indices (runs on macOS)")
    if r["format"] == "onnx":
        diff = r.get("max_abs_difference")
        lines.append(f"graph:   dense, {r['exporter']}; onnxruntime vs torch max |diff| "
                     + ("not checked (onnxruntime not installed)" if diff is None
                        else f"{diff:.3g}"))
    lines.append(f"time:    {r['seconds']:.2f} s")
    return "\n".join(lines)


@click.command(name="export")
@click.argument("path", type=click.Path(dir_okay=True))
@click.option("--to", "to", type=click.Choice(FORMATS), required=True,
              help="hf: transformers directory; sentence-transformers: the same with pooling "
                   "modules; coreml: palettized ML program (.mlpackage); onnx: dense graph.")
@click.argument("out", type=click.Path())
@common_options
def export_cmd(path: str, to: str, out: str, as_json: bool, quiet: bool) -> None:
    """Export PATH (a weightshare file) to OUT in another format."""
    check_export(to, out)
    emit(run(path, to, out), as_json, quiet, _text)
