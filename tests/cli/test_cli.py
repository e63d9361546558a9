"""Every CLI verb: exit codes, JSON keys, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.zoo import needs_minilm
from weightshare.cli import main


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return exc.value.code or 0, out, err


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory) -> Path:
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, vocab_size=99)
    path = tmp_path_factory.mktemp("bert")
    transformers.BertModel(cfg).save_pretrained(path)
    return path


def test_compress_json_keys_then_inspect_and_eval(tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "tiny.safetensors"
    code, stdout, err = run(["compress", str(tiny_bert_dir), "--bits", "3", "--min-size", "0",
                             "-o", str(out), "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    for key in ("model", "output", "dense_bytes", "file_bytes", "ratio", "bits_per_weight",
                "seconds", "fidelity"):
        assert key in result
    assert set(result["seconds"]) == {"load", "cluster", "save"}
    assert result["ratio"] == pytest.approx(result["dense_bytes"] / result["file_bytes"])
    assert result["file_bytes"] == out.stat().st_size
    assert 0 < result["fidelity"]["relative_error"] < 1

    code, stdout, _ = run(["inspect", str(out), "--json"], capsys)
    assert code == 0
    rep = json.loads(stdout)
    assert any(r["scheme"] == "codebook" and r["bits"] == 3 for r in rep["rows"])

    code, stdout, _ = run(["inspect", str(out)], capsys)
    assert code == 0 and "codebook" in stdout

    code, stdout, err = run(["eval", str(out), "--reference", str(tiny_bert_dir), "--json"],
                            capsys)
    assert code == 0, err
    assert json.loads(stdout)["fidelity"]["relative_error"] == pytest.approx(
        result["fidelity"]["relative_error"], rel=1e-4)


@pytest.mark.parametrize("argv, message", [
    (["compress", "--bits", "9"], "bits must be an integer from 1 to 8"),
    (["compress", "--bits", "four"], "not a valid integer"),
    (["compress", "--granularity", "per_row"], "per_row"),
    (["compress", "--frobnicate"], "No such option"),
    (["compress", "./no/such/model"], "no such model directory"),
    (["inspect", "missing.safetensors"], "no such"),
    (["eval", "missing.safetensors"], "no such file"),
    (["compress", "-o", "no_dir/x.safetensors"], "does not exist"),
    (["tie", "--strategy", "all", "-o", "no_dir/x.safetensors"], "does not exist"),
])
def test_errors_are_one_line_exit_1(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(argv, capsys)
    assert code == 1
    assert message.lower() in err.lower()
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not list(tmp_path.iterdir())  # nothing written


def test_group_size_and_patterns_errors_leave_nothing(tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    code, _, err = run(["compress", str(tiny_bert_dir), "--granularity", "per_group",
                        "--group-size", "5", "--min-size", "0", "--strict", "-o", str(out)],
                       capsys)
    assert code == 1 and "does not divide" in err and not out.exists()
    code, _, err = run(["compress", str(tiny_bert_dir), "--include", "nothing_like_this",
                        "-o", str(out)], capsys)
    assert code == 1 and "matches no module" in err and not out.exists()


def test_not_a_weightshare_file(tmp_path, capsys):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 20)
    code, _, err = run(["inspect", str(junk)], capsys)
    assert code == 1 and err.startswith("error: ")


def test_debug_env_shows_traceback(monkeypatch):
    monkeypatch.setenv("WEIGHTSHARE_DEBUG", "1")
    from weightshare.errors import ConfigError

    with pytest.raises(ConfigError):
        main(["compress", "--bits", "0"])


@needs_minilm
def test_compress_minilm_end_to_end_then_eval_the_file(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    code, stdout, err = run(["compress", "--bits", "4", "-o", str(out), "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["calibrated"] is True  # a tokenizer is there: data-aware by default
    assert result["ratio"] >= 7.5
    assert 3.9 < result["bits_per_weight"] < 4.1
    assert result["fidelity"]["cosine_mean"] > 0.94
    assert result["fidelity"]["top1_agreement"] > 0.6
    # the saved file reproduces the in-memory model exactly
    code, stdout, err = run(["eval", str(out), "--json"], capsys)
    assert code == 0, err
    reloaded = json.loads(stdout)["fidelity"]
    for key in ("cosine_mean", "cosine_min", "top1_agreement"):
        assert reloaded[key] == pytest.approx(result["fidelity"][key], abs=1e-6)


def test_tie_json_and_similarity(tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "tied.safetensors"
    code, stdout, err = run(["tie", str(tiny_bert_dir), "--strategy", "all", "-o", str(out),
                             "--json"], capsys)
    assert code == 0, err
    r = json.loads(stdout)
    for key in ("unique_params_before", "unique_params_after", "dense_bytes", "file_bytes",
                "fidelity"):
        assert key in r
    assert r["unique_params_after"] < r["unique_params_before"]
    assert r["file_bytes"] == out.stat().st_size
    code, stdout, _ = run(["inspect", str(out), "--json"], capsys)
    rows = json.loads(stdout)["rows"]
    assert any(row["scheme"] == "tied" and row["source"] for row in rows)
    # a tied model can then be clustered, and stays one tensor per shared weight
    both = tmp_path / "both.safetensors"
    code, stdout, err = run(["compress", str(out), "--bits", "4", "--min-size", "0",
                             "-o", str(both), "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["file_bytes"] < r["file_bytes"]

    code, stdout, err = run(["inspect", str(tiny_bert_dir), "--similarity", "--json"], capsys)
    assert code == 0, err
    sim = json.loads(stdout)["similarity"]
    assert sim["stack"] == "encoder.layer" and len(sim["blocks"]) == 2
    code, stdout, _ = run(["inspect", str(tiny_bert_dir)], capsys)
    assert "encoder.layer (2 blocks)" in stdout


def test_tie_suggested_plan(tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "plan.safetensors"
    code, stdout, err = run(["tie", str(tiny_bert_dir), "--cut", "0.05", "-o", str(out),
                             "--json", "--no-eval"], capsys)
    assert code == 0, err
    r = json.loads(stdout)
    assert r["plan"]["fraction_saved"] >= 0.05 and r["plan_text"].startswith("tie plan:")
    saved = r["unique_params_before"] - r["unique_params_after"]
    assert saved == r["plan"]["params_saved"]


@pytest.mark.parametrize("argv, message", [
    (["tie", "--strategy", "zigzag"], "zigzag"),
    (["tie", "--strategy", "cycle", "--unique", "9"], "unique"),
    (["tie", "--strategy", "all", "--rank", "-3"], "rank"),
    (["tie"], "give either --strategy"),
    (["tie", "--strategy", "all", "--cut", "0.1"], "give either --strategy"),
    (["tie", "--cut", "1.5"], "cut must be a fraction"),
])
def test_tie_errors_one_line(argv, message, tiny_bert_dir, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(argv[:1] + [str(tiny_bert_dir)] + argv[1:], capsys)
    assert code == 1 and message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_inspect_and_eval_a_relaxed_file(tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "relaxed.safetensors"
    code, stdout, err = run(["tie", str(tiny_bert_dir), "--strategy", "all", "--rank", "2",
                             "-o", str(out), "--json"], capsys)
    assert code == 0, err
    code, stdout, err = run(["inspect", str(out), "--json"], capsys)
    assert code == 0, err
    rows = json.loads(stdout)["rows"]
    assert any(r["scheme"] == "relaxed" for r in rows)
    code, stdout, err = run(["eval", str(out), "--reference", str(tiny_bert_dir), "--json"],
                            capsys)
    assert code == 0, err
    assert json.loads(stdout)["fidelity"]["relative_error"] >= 0


def _cli_defaults(verb: str) -> dict:
    import click

    from weightshare.cli.main import cli

    ctx = click.Context(cli.commands[verb])
    return {p.name: p.get_default(ctx) for p in cli.commands[verb].params}


def test_cli_defaults_are_the_config_defaults():
    import dataclasses

    import weightshare as ws
    from weightshare import pipeline

    compress = _cli_defaults("compress")
    checked = 0
    for field in dataclasses.fields(ws.ClusterConfig):
        if field.name in compress:
            default = compress[field.name]
            if field.name in ("include", "exclude", "shared_codebooks"):  # repeatable flags
                default = () if not isinstance(default, (list, tuple)) else tuple(default)
            assert default == field.default, field.name
            checked += 1
    assert checked >= 8
    tie = _cli_defaults("tie")
    for field in dataclasses.fields(ws.TieConfig):
        if field.name in tie:
            assert tie[field.name] in (field.default, str(field.default)), field.name
    for name in ("distill_steps", "lr", "augment"):
        assert tie[name] == inspect_default(pipeline.tie, name)


def inspect_default(func, name):
    import inspect

    return inspect.signature(func).parameters[name].default
