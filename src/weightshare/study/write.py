"""A study's files: ``<name>.json`` (every figure), ``<name>.md`` (the report), PNG plots.

The JSON always has the same top-level keys (``KEYS``), whatever the study and mode,
so that scripts and tests can rely on them.
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Any

import torch

from .context import Result

KEYS = ("study", "title", "quick", "seeds", "verdict", "claims", "figures", "tables", "plots",
        "notes", "setup", "command", "out", "environment", "seconds")


def environment() -> dict[str, Any]:
    """Where the numbers come from: library versions, threads, CPUs."""
    from .. import __version__

    return {"weightshare": __version__, "torch": torch.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "cpus": _cpus(), "machine": platform.machine()}


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its finished children (user + system)."""
    import resource

    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                 resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _cpus() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def to_json(name: str, title: str, quick: bool, seeds: tuple[int, ...], result: Result,
            command: str, out: str, seconds: float, cpu: float | None = None
            ) -> dict[str, Any]:
    """The study's JSON document: ``verdict`` maps each claim id to its word, ``claims``
    holds each claim's sentence, verdict and comparisons; ``seconds`` is wall time,
    ``environment["cpu_seconds"]`` the CPU time (this process and its children: on a
    machine shared with other jobs, wall time overstates the work)."""
    return _clean({
        "study": name, "title": title, "quick": quick, "seeds": list(seeds),
        "verdict": {c.id: c.decided().word for c in result.claims},
        "claims": [c.to_dict() for c in result.claims],
        "figures": _clean(result.figures),
        "tables": [t.to_dict() for t in result.tables],
        "plots": list(result.plots), "notes": list(result.notes),
        "setup": _clean(result.setup), "command": command, "out": out,
        "environment": {**environment(), "cpu_seconds": cpu}, "seconds": seconds,
    })


def _clean(obj: Any) -> Any:
    """JSON-ready: NaN/inf become None (JSON has no NaN), tuples lists, tensors numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _clean(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "to_dict"):
        return _clean(obj.to_dict())
    return obj


def markdown(doc: dict[str, Any], result: Result) -> str:
    """The short report: each claim with its verdict and comparisons, the tables, the
    plots, the notes, the command and the setup."""
    lines = [f"# {doc['title']}", ""]
    if doc["quick"]:
        lines += ["> **Quick run** (`--quick`): reduced sizes and steps for tests; its "
                  "numbers say nothing about the claims.", ""]
    for claim in result.claims:
        v = claim.decided()
        lines += [f"**Claim: {claim.text}** Verdict: **{v.word}** ({v.reason}).", ""]
        lines += [f"* {c.sentence()}: {c.outcome.replace('_', ' ')}" for c in claim.comparisons]
        lines.append("")
    for t in result.tables:
        lines += [t.markdown(), ""]
    for p in result.plots:
        lines += [f"![{p}]({p})", ""]
    if result.notes:
        lines += ["**Notes.**", ""] + [f"* {n}" for n in result.notes] + [""]
    env = doc["environment"]
    lines += [f"Command: `{doc['command']}`", "",
              f"Seeds {', '.join(str(s) for s in doc['seeds'])}; {doc['seconds']:.0f} s "
              f"({_cpu(env)}) on "
              f"{env['cpus']} CPU(s), {env['threads']} torch thread(s), torch {env['torch']}, "
              f"weightshare {env['weightshare']}. Spread = std(A) + std(B) over the seeds; a "
              "claim is supported only where the difference exceeds it.", ""]
    return "\n".join(lines)


def _cpu(env: dict[str, Any]) -> str:
    cpu = env.get("cpu_seconds")
    return "CPU time not recorded" if cpu is None else f"{cpu:.0f} CPU s"


def write_files(folder: Path, name: str, doc: dict[str, Any], result: Result) -> list[Path]:
    """Write ``<name>.json`` and ``<name>.md`` into ``folder`` (plots are already there)."""
    js = folder / f"{name}.json"
    js.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    md = folder / f"{name}.md"
    md.write_text(markdown(doc, result))
    return [js, md] + [folder / p for p in result.plots]
