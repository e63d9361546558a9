"""Every study's --quick version runs in seconds and writes its JSON, PNG plots and report
with every key present (on the real data when it is there; skipped otherwise)."""

from __future__ import annotations

import json

import pytest

import weightshare as ws
from tests.zoo import SHARED_DATA
from weightshare.study.stats import OUTCOMES, VERDICTS
from weightshare.study.write import KEYS

HAVE = {"mnist": (SHARED_DATA / "mnist.npz").is_file(),
        "shakespeare": (SHARED_DATA / "shakespeare").is_dir()}


def test_names_in_order():
    assert ws.study.names() == ("params", "limited-data", "training-speed", "convergence",
                                "expressiveness", "recurrence", "hashing")


@pytest.mark.parametrize("name", ws.study.names())
def test_quick_study(name, tmp_path):
    missing = [k for k in ws.study.get(name).needs if not HAVE[k]]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found under {SHARED_DATA} (set WEIGHTSHARE_DATA)")
    doc = ws.study.run(name, data=SHARED_DATA, quick=True, out=tmp_path, progress=False)
    assert set(doc) == set(KEYS) and doc["quick"] is True and doc["seeds"] == [0, 1, 2]
    assert json.loads((tmp_path / f"{name}.json").read_text()) == doc
    md = (tmp_path / f"{name}.md").read_text()
    assert "Quick run" in md
    assert doc["plots"] and doc["tables"] and doc["figures"] and doc["claims"]
    for plot in doc["plots"]:
        assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG"
        assert f"]({plot})" in md
    for claim in doc["claims"]:
        assert claim["comparisons"] and claim["verdict"]["word"] in VERDICTS
        assert doc["verdict"][claim["id"]] == claim["verdict"]["word"]
        assert f"Verdict: **{claim['verdict']['word']}**" in md
        for c in claim["comparisons"]:
            assert c["outcome"] in OUTCOMES
            assert {"a", "b", "metric", "a_stats", "b_stats", "difference", "spread"} <= set(c)


def test_run_signature():
    import inspect

    assert list(inspect.signature(ws.study.run).parameters)[:5] == [
        "name", "data", "seeds", "quick", "out"]
