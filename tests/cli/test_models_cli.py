"""Any model a user brings, through every verb: causal LMs without a padding token,
chained files, eval's reference, flags checked before loading, the per-group fallback,
one baseline."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_cli import run
from tests.hf_dirs import bert_dir, gpt2_dir, gpt2_no_tokenizer_dir, llama_bf16_dir, llama_dir

__all__ = ["bert_dir", "gpt2_dir", "gpt2_no_tokenizer_dir", "llama_bf16_dir", "llama_dir"]


def jrun(argv, capsys):
    code, out, err = run(argv + ["--json"], capsys)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("fixture", ["gpt2_dir", "llama_dir"])
def test_pad_less_causal_lm_through_every_verb(fixture, request, tmp_path, capsys):
    model = str(request.getfixturevalue(fixture))
    packed = tmp_path / "c.safetensors"
    r = jrun(["compress", model, "--bits", "4", "--min-size", "0", "-o", str(packed)], capsys)
    assert r["calibrated"] and r["calibration"]["samples"] == 32
    fid = r["fidelity"]
    assert fid["metric"] == "language-model" and 0 < fid["kl"] < 1
    assert fid["perplexity"] > 0 and fid["perplexity_reference"] > 0
    assert 0 < fid["top1_agreement"] <= 1 and "held-out tokens" in fid["measured"]
    code, _, err = run(["compress", model, "--no-calibrate", "-o", str(tmp_path / "n.safetensors"),
                        "--min-size", "0"], capsys)
    assert code == 0, err
    tied = tmp_path / "t.safetensors"
    r = jrun(["tie", model, "--strategy", "all", "-o", str(tied)], capsys)
    assert r["fidelity"]["metric"] == "language-model"
    r = jrun(["inspect", model, "--similarity", "--samples", "4"], capsys)
    assert r["samples"] == 4 and len(r["similarity"]["blocks"]) == 2
    # chained: compress the tied file, then eval it against the base it records
    both = tmp_path / "tc.safetensors"
    jrun(["compress", str(tied), "--min-size", "0", "-o", str(both)], capsys)
    r = jrun(["eval", str(both)], capsys)
    assert r["reference_from"] == "the file's base" and r["fidelity"]["metric"] == "language-model"
    assert r["fidelity"]["perplexity_reference"] == pytest.approx(fid["perplexity_reference"])


def test_eval_refuses_another_architecture(gpt2_dir, llama_dir, tmp_path, capsys):
    out = tmp_path / "g.safetensors"
    jrun(["compress", str(gpt2_dir), "--no-eval", "-o", str(out)], capsys)
    code, _, err = run(["eval", str(out), "--reference", str(llama_dir)], capsys)
    assert code == 1 and "architecture" in err and err.count("\n") == 1
    code, _, err = run(["eval", str(out), "--reference", str(out)], capsys)
    assert code == 1 and "weightshare file" in err


def test_file_without_base_asks_for_a_reference(tmp_path, capsys):
    import torch

    import weightshare as ws
    from weightshare.models.offline import build_model

    path = tmp_path / "m.safetensors"
    ws.save(build_model("gpt2"), path)
    code, _, err = run(["eval", str(path)], capsys)
    assert code == 1 and "--reference" in err
    assert torch.is_tensor(ws.load(path).lm_head.weight)


def test_embedded_tokenizer_travels_with_the_file(gpt2_dir, tmp_path, capsys):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(gpt2_dir, base)
    out = tmp_path / "e.safetensors"
    jrun(["compress", str(base), "--embed-tokenizer", "--no-eval", "-o", str(out)], capsys)
    shutil.rmtree(base)  # the base is gone: the file still has its tokenizer
    r = jrun(["compress", str(out), "--bits", "3", "-o", str(tmp_path / "x.safetensors")], capsys)
    assert r["calibrated"] and r["fidelity"]["metric"] == "language-model"


def test_distillation_without_tokenizer_is_refused_before_work(gpt2_no_tokenizer_dir, capsys,
                                                               monkeypatch):
    from weightshare.models.source import ModelSource

    monkeypatch.setattr(ModelSource, "load", lambda self: pytest.fail("loaded the weights"))
    code, _, err = run(["tie", str(gpt2_no_tokenizer_dir), "--strategy", "all",
                        "--distill-steps", "2"], capsys)
    assert code == 1 and "needs a tokenizer" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["tie", "{m}", "--cut", "2"], "cut must be a fraction"),
    (["tie", "{m}", "--strategy", "cycle", "--unique", "100"], "unique=100"),
    (["tie", "{m}", "--strategy", "cycle", "--layers", "9..12"], "not blocks"),
    (["tie", "{m}", "--strategy", "cycle", "--scope", "nomatch"], "nomatch"),
    (["compress", "{m}", "--include", "("], "not a valid regular expression"),
    (["compress", "{m}", "--include", "nothing_like_this"], "matches no module"),
    (["compress", "{m}", "--granularity", "per_group", "--group-size", "5", "--strict",
      "--min-size", "0"], "does not divide"),
    (["compress", "{m}", "--data", "no/such/text"], "no such file"),
    (["inspect", "{m}", "--similarity", "--samples", "0"], "samples"),
    (["export", "{m}", "--to", "hf", "no/such/dir/out"], "does not exist"),
])
def test_flags_are_checked_before_the_weights_load(argv, message, gpt2_dir, capsys, monkeypatch,
                                                   tmp_path):
    from weightshare.models.source import ModelSource

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ModelSource, "load", lambda self: pytest.fail("loaded the weights"))
    code, _, err = run([a.replace("{m}", str(gpt2_dir)) for a in argv], capsys)
    assert code == 1 and message in err and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())


def test_group_fallback_is_reported(bert_dir, tmp_path, capsys):
    r = jrun(["compress", str(bert_dir), "--granularity", "per_group", "--min-size", "0",
              "--no-eval", "-o", str(tmp_path / "b.safetensors")], capsys)
    assert any("token_type_embeddings" in c and "one codebook" in c for c in r["group_fallback"])
    code, out, _ = run(["compress", str(bert_dir), "--granularity", "per_group", "--min-size",
                        "0", "--no-eval", "-o", str(tmp_path / "c.safetensors")], capsys)
    assert code == 0 and "grouping: 1 tensor(s) changed" in out and "--no-eval" in out


def test_one_baseline_across_inspect_compress_and_tie(gpt2_dir, tmp_path, capsys):
    import weightshare as ws
    from weightshare.models import load_model

    lm = load_model(str(gpt2_dir))
    # GPT-2's head is its input embedding: counted once, and the directory holds it once
    assert lm.model.lm_head.weight is lm.model.transformer.wte.weight
    dense = ws.inspect(lm.model).dense_bytes
    d = jrun(["inspect", str(gpt2_dir)], capsys)
    assert d["dense_bytes"] == dense and d["ratio"] == pytest.approx(1.0)
    out = tmp_path / "c.safetensors"
    c = jrun(["compress", str(gpt2_dir), "--no-eval", "-o", str(out)], capsys)
    f = jrun(["inspect", str(out)], capsys)
    assert c["dense_bytes"] == f["dense_bytes"] == dense
    assert c["ratio"] == pytest.approx(f["ratio"])
    t = jrun(["tie", str(gpt2_dir), "--strategy", "all", "--no-eval", "-o",
              str(tmp_path / "t.safetensors")], capsys)
    assert t["dense_bytes"] == dense
    assert jrun(["inspect", str(tmp_path / "t.safetensors")], capsys)["dense_bytes"] == dense
    ws.cluster_(lm.model, ws.ClusterConfig(min_size=0))
    assert ws.inspect(lm.model).dense_bytes == dense


def test_bf16_checkpoint_is_compared_at_bf16(llama_bf16_dir, tmp_path, capsys):
    out = tmp_path / "l.safetensors"
    r = jrun(["compress", str(llama_bf16_dir), "--min-size", "0", "-o", str(out)], capsys)
    assert r["dense_dtype"] == "bfloat16"
    import weightshare as ws
    from weightshare.models import load_model

    lm = load_model(str(llama_bf16_dir))
    params = sum(t.numel() for t in lm.model.state_dict().values() if t.is_floating_point())
    assert r["dense_bytes"] == 2 * params  # 2 bytes a value: the checkpoint as it is
    assert r["fidelity"]["metric"] == "language-model"
    code, text, _ = run(["inspect", str(out), "--summary"], capsys)
    assert "dense bf16" in text
    loaded = ws.load(out)
    assert {p.dtype for p in loaded.parameters()} == {__import__("torch").bfloat16}
