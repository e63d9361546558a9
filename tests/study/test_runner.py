"""ws.study.run: checks before running, files written together, nothing half-written; the
CLI verb's exit codes and messages."""

from __future__ import annotations

import json

import pytest

import weightshare as ws
from tests.cli.test_cli import run as cli
from weightshare.errors import ConfigError, DataError, SaveError
from weightshare.study import Claim, Result, Study, Table, compare, registry
from weightshare.study.write import KEYS


def _toy(ctx):
    ctx.progress.start(len(ctx.seeds))
    a, b = [], []
    for seed in ctx.seeds:
        g = ctx.seed(seed)
        import torch

        a.append(1.0 + 0.01 * float(torch.rand(1, generator=g)))
        b.append(2.0 + 0.01 * float(torch.rand(1, generator=g)))
        ctx.progress.update(1)
    with ctx.figure("toy.png") as ax:
        ax.plot([0, 1], [0, 1])
    return Result({"a": a, "b": b, "nan": float("nan")},
                  [Claim("toy", "a is lower than b.", [compare("m", a, b, better="lower")])],
                  [Table("t", ["x", "y"], [["1", "2"]])], ["toy.png"], ["a note"])


def _broken(ctx):
    with ctx.figure("half.png") as ax:
        ax.plot([0], [0])
    raise DataError("the study failed half way")


@pytest.fixture
def toys():
    added = {"toy": Study("toy", "Toy", "a toy claim", (), _toy),
             "broken": Study("broken", "Broken", "fails", (), _broken)}
    registry._load()
    registry._STUDIES.update(added)
    yield
    for name in added:
        registry._STUDIES.pop(name)


def test_files_and_keys(toys, tmp_path):
    doc = ws.study.run("toy", out=tmp_path, progress=False)
    assert set(doc) == set(KEYS)
    assert doc["verdict"] == {"toy": "supported"} and doc["figures"]["nan"] is None
    assert doc["seconds"] > 0 and doc["environment"]["cpu_seconds"] >= 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.json", "toy.md", "toy.png"]
    assert json.loads((tmp_path / "toy.json").read_text()) == doc
    assert (tmp_path / "toy.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "toy.md").read_text()
    assert "Verdict: **supported**" in md and "![toy.png](toy.png)" in md and "Quick" not in md
    assert "weightshare study toy --out" in doc["command"]


def test_two_seeds_give_no_verdict_and_quick_says_so(toys, tmp_path):
    doc = ws.study.run("toy", seeds=2, quick=True, out=tmp_path, progress=False)
    assert doc["verdict"] == {"toy": "inconclusive"} and doc["quick"] is True
    assert "Quick run" in (tmp_path / "toy.md").read_text()


def test_a_failing_study_leaves_nothing(toys, tmp_path):
    with pytest.raises(DataError, match="half way"):
        ws.study.run("broken", out=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, error, match", [
    ({"name": "nope"}, ConfigError, "unknown study 'nope'; choose one of params"),
    ({"name": "params", "seeds": 0}, ConfigError, "seeds"),
    ({"name": "params", "threads": 0}, ConfigError, "threads"),
    ({"name": "limited-data"}, DataError, "needs MNIST.*--data"),
    ({"name": "expressiveness", "data": "/no/such/dir"}, DataError, "does not exist"),
])
def test_checked_before_running(kwargs, error, match, tmp_path):
    with pytest.raises(error, match=match):
        ws.study.run(out=tmp_path, progress=False, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_out_is_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(SaveError, match="is a file"):
        ws.study.run("params", out=f, progress=False)


def test_data_without_the_dataset(tmp_path):
    with pytest.raises(DataError, match="none found"):
        ws.study.run("hashing", data=tmp_path, out=tmp_path / "o", progress=False)


def test_cli(toys, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WEIGHTSHARE_DATA", raising=False)
    code, _, err = cli(["study", "nope"], capsys)
    assert code == 1 and err.startswith("error:") and "params" in err
    code, _, err = cli(["study", "limited-data", "--out", str(tmp_path)], capsys)
    assert code == 1 and err.count("\n") == 1 and "--data" in err
    code, out, err = cli(["study", "params", "--quick", "--out", str(tmp_path), "--json"],
                         capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert set(KEYS) <= set(doc) and doc["out"] == str(tmp_path)
    code, out, _ = cli(["study", "params", "--quick", "--out", str(tmp_path)], capsys)
    assert code == 0 and "SUPPORTED" in out and "params.json" in out
    code, out, _ = cli(["study", "--help"], capsys)
    assert code == 0 and "hashing" in out and "limited-data" in out
