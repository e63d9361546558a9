"""docs/plugins.md's worked example runs as written (so the page stays true)."""

from __future__ import annotations

import re
from pathlib import Path

from weightshare.core.registry import known_kinds, unregister

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def test_the_worked_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 2
    scope: dict = {}
    try:
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), scope)
        assert "sign" in known_kinds()
        shown = re.findall(r"```\n(parameters:.*?)```", DOC.read_text(), flags=re.S)[0]
        assert capsys.readouterr().out.strip() == shown.strip()  # the page shows real output
    finally:
        unregister(scope["SignConfig"])
