"""Summarise the committed study results (benchmarks/results/study/NAME/NAME.json): one line
per claim with its verdict, one study in detail, or docs/evidence.md written whole.

    python benchmarks/evidence.py                 # the summary table (markdown)
    python benchmarks/evidence.py --study hashing # one study's claims, comparisons, tables
    python benchmarks/evidence.py --write         # docs/evidence.md from its template and
                                                  # the results; plots to docs/evidence/

The studies themselves run with ``weightshare study NAME`` (see docs/evidence.md). The
template (benchmarks/evidence_template.md) holds the prose written by hand after reading
the results; ``__SUMMARY__`` and ``__STUDY name__`` lines are replaced by what the JSON
files say, so that no number in the page is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "study"
TEMPLATE = ROOT / "benchmarks" / "evidence_template.md"
DOC = ROOT / "docs" / "evidence.md"
PLOTS = ROOT / "docs" / "evidence"
STUDY_LINE = re.compile(r"^__STUDY ([a-z-]+)__$", re.M)


def load(results: Path) -> dict[str, dict]:
    docs = {}
    for path in sorted(results.glob("*/*.json")):
        doc = json.loads(path.read_text())
        docs[doc["study"]] = doc
    return docs


def summary(docs: dict[str, dict], order: list[str] | None = None) -> str:
    lines = ["| study | claim | verdict | seeds | wall min | CPU min |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    for name in order or list(docs):
        doc = docs.get(name)
        if doc is None:
            lines.append(f"| {name} | (not run) | — | — | — | — |")
            continue
        for claim in doc["claims"]:
            lines.append(f"| [{name}](#{name}) | {claim['claim']} | "
                         f"**{claim['verdict']['word']}** | {len(doc['seeds'])} | "
                         f"{_minutes(doc['seconds'])} | {_cpu_minutes(doc)} |")
    return "\n".join(lines)


def _cpu_minutes(doc: dict) -> str:
    cpu = doc["environment"].get("cpu_seconds")
    return "n/a" if cpu is None else _minutes(cpu)


def _minutes(seconds: float) -> str:
    return "< 0.1" if seconds < 3 else f"{seconds / 60:.1f}"


def _number(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def _comparison(c: dict) -> str:
    a, b = c["a_stats"], c["b_stats"]
    where = f" at {c['condition']}" if c["condition"] else ""
    fmt = lambda s: f"{_number(s['mean'])} ± {_number(s['std'])}"  # noqa: E731
    return (f"{c['a']} vs {c['b']}{where}, {c['metric']} ({c['better']} is better): "
            f"{fmt(a)} vs {fmt(b)}; difference {_number(c['difference'])}, spread "
            f"{_number(c['spread'])}: **{c['outcome'].replace('_', ' ')}**")


def detail(doc: dict, plots: str | None = None) -> str:
    """One study: every claim with its verdict and comparisons, the tables, the plots
    (under ``plots``/, when given), the notes and the command."""
    lines = []
    for claim in doc["claims"]:
        v = claim["verdict"]
        lines += [f"**Claim: {claim['claim']}** Verdict: **{v['word']}** ({v['reason']}).", ""]
        lines += [f"* {_comparison(c)}" for c in claim["comparisons"]]
        lines.append("")
    for table in doc["tables"]:
        lines += [f"**{table['title']}**", "", "| " + " | ".join(table["header"]) + " |",
                  "| --- |" + " ---: |" * (len(table["header"]) - 1)]
        lines += ["| " + " | ".join(row) + " |" for row in table["rows"]]
        lines.append("")
    if plots is not None:
        lines += [f"![{p}]({plots}/{p})" for p in doc["plots"]] + [""]
    if doc["notes"]:
        lines += ["Notes:", ""] + [f"* {n}" for n in doc["notes"]] + [""]
    env = doc["environment"]
    lines += [f"Command: `{doc['command']}` — seeds {', '.join(map(str, doc['seeds']))}, "
              f"{doc['seconds'] / 60:.1f} minutes wall ({_cpu_minutes(doc)} CPU), "
              f"{env['threads']} torch thread(s) on a "
              f"shared {env['cpus']}-CPU machine, torch {env['torch']}. Raw figures: "
              f"[`{doc['study']}.json`](../benchmarks/results/study/{doc['study']}/"
              f"{doc['study']}.json)."]
    return "\n".join(lines)


def write(docs: dict[str, dict], results: Path, template: Path, out: Path,
          plots: Path) -> list[str]:
    """docs/evidence.md from the template; returns the studies the template names that
    have no results (their section says so)."""
    text = template.read_text()
    names = STUDY_LINE.findall(text)
    missing = [n for n in names if n not in docs]
    plots.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name in docs:
            for p in docs[name]["plots"]:
                shutil.copyfile(results / name / p, plots / p)

    def section(m: re.Match) -> str:
        name = m.group(1)
        if name not in docs:
            return (f"*Not run for this page: no `benchmarks/results/study/{name}/{name}.json` "
                    f"yet (`weightshare study {name} --data DATA --out "
                    f"benchmarks/results/study/{name}`).*")
        return detail(docs[name], plots=plots.relative_to(out.parent).as_posix())

    text = STUDY_LINE.sub(section, text)
    text = text.replace("__SUMMARY__", summary(docs, names))
    out.write_text(text)
    return missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--study", default=None)
    parser.add_argument("--write", action="store_true",
                        help=f"write {DOC.relative_to(ROOT)} from {TEMPLATE.relative_to(ROOT)}")
    args = parser.parse_args()
    docs = load(args.results)
    if not docs:
        raise SystemExit(f"no study results under {args.results}; run `weightshare study NAME "
                         f"--out {args.results}/NAME` first")
    if args.write:
        missing = write(docs, args.results, TEMPLATE, DOC, PLOTS)
        print(f"wrote {DOC}" + (f"; no results yet for {', '.join(missing)}" if missing
                                else ""))
        return
    print(detail(docs[args.study]) if args.study else summary(docs))


if __name__ == "__main__":
    main()
