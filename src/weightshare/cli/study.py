"""``weightshare study``: measure one claim about weight sharing, shared vs unshared."""

from __future__ import annotations

import click

from ..study import get, names
from ..study.runner import DEFAULT_SEEDS
from ..study.runner import run as run_study
from .common import common_options, emit, param_default


def _text(doc: dict) -> str:
    lines = [f"study:   {doc['study']}{' (quick)' if doc['quick'] else ''}: {doc['title']}",
             f"seeds:   {', '.join(str(s) for s in doc['seeds'])}; {doc['seconds']:.0f} s"]
    for claim in doc["claims"]:
        v = claim["verdict"]
        lines.append(f"{v['word'].upper():12} {claim['claim']}")
        lines.append(f"{'':12} ({v['reason']})")
    files = [f"{doc['study']}.json", f"{doc['study']}.md", *doc["plots"]]
    lines.append(f"files:   {doc['out']}/{{{','.join(files)}}}")
    return "\n".join(lines)


def _epilog() -> str:
    return "Studies:\n\n" + "\n\n".join(f"  {n}: {get(n).summary}" for n in names())


@click.command(name="study", epilog=_epilog())
@click.argument("name", type=click.Choice(names(), case_sensitive=False), metavar="NAME")
@click.option("--data", type=click.Path(), default=None, envvar="WEIGHTSHARE_DATA",
              help="Folder holding mnist.npz and shakespeare/ (or the one dataset the study "
                   "reads); default: $WEIGHTSHARE_DATA.")
@click.option("--seeds", type=int, default=DEFAULT_SEEDS, show_default=True,
              help="Seeds per measurement; a verdict needs >= 3.")
@click.option("--quick", is_flag=True,
              help="The reduced version (seconds, for tests); its report says so.")
@click.option("--out", type=click.Path(), default=None,
              help="Output folder for <name>.json, <name>.md and the PNG plots "
                   "[default: out/study/NAME].")
@click.option("--threads", type=int, default=param_default(run_study, "threads"),
              help="torch threads (default: torch's).")
@common_options
def study(name: str, data: str | None, seeds: int, quick: bool, out: str | None,
          threads: int | None, as_json: bool, quiet: bool) -> None:
    """Run study NAME: every figure to JSON, plots to PNG, a markdown report with a verdict
    per claim (supported only where the difference exceeds the spread over the seeds)."""
    doc = run_study(name, data=data, seeds=seeds, quick=quick, out=out,
                    progress=None if not quiet else False, threads=threads)
    emit(doc, as_json, quiet, _text)
