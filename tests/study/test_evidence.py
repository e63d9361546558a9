"""benchmarks/evidence.py: docs/evidence.md is written from the template and the JSON files
(every number from a study's results, a study without results named as not run)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import weightshare as ws
from tests.study.test_runner import toys  # noqa: F401 - the fixture

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "evidence.py"


def _evidence():
    spec = importlib.util.spec_from_file_location("evidence", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_page_from_template_and_results(toys, tmp_path):  # noqa: F811
    ev = _evidence()
    results = tmp_path / "results"
    doc = ws.study.run("toy", out=results / "toy", progress=False)
    template = tmp_path / "template.md"
    template.write_text("# E\n\n__SUMMARY__\n\n## toy\n\n__STUDY toy__\n\n## gone\n\n"
                        "__STUDY gone__\n")
    out = tmp_path / "docs" / "evidence.md"
    out.parent.mkdir()
    missing = ev.write(ev.load(results), results, template, out, out.parent / "evidence")
    text = out.read_text()
    assert missing == ["gone"]
    assert "| [toy](#toy) | a is lower than b. | **supported** | 3 |" in text
    assert "Verdict: **supported**" in text and "(not run)" in text
    assert "![toy.png](evidence/toy.png)" in text
    assert (out.parent / "evidence" / "toy.png").read_bytes()[:4] == b"\x89PNG"
    assert doc["command"] in text and "__" not in text.replace("__init__", "")
    # one study in detail, and the summary alone, as the script prints them
    assert "spread" in ev.detail(doc) and "**supported**" in ev.summary({"toy": doc})
