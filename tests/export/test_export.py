"""Every way out: hf (from_pretrained gives the shared model's outputs exactly),
sentence-transformers (the same embeddings), Core ML (palettized at the codebook's size),
ONNX (dense, checked with onnxruntime); and save_pretrained guarded."""

from __future__ import annotations

import json

import pytest
import torch

import weightshare as ws
from tests.cli.test_cli import run
from tests.hf_dirs import bert_dir, gpt2_dir, llama_dir
from tests.zoo import needs_minilm
from weightshare.errors import SaveError

__all__ = ["bert_dir", "gpt2_dir", "llama_dir"]


def _file(model_dir, tmp_path, capsys, *extra) -> str:
    out = tmp_path / "m.safetensors"
    code, _, err = run(["compress", str(model_dir), "--min-size", "0", "--no-eval", "-o",
                        str(out), *extra], capsys)
    assert code == 0, err
    return str(out)


@pytest.mark.parametrize("fixture, auto", [("gpt2_dir", "AutoModelForCausalLM"),
                                           ("llama_dir", "AutoModelForCausalLM"),
                                           ("bert_dir", "AutoModel")])
def test_hf_round_trip_is_exact(fixture, auto, request, tmp_path, capsys):
    import transformers

    model_dir = request.getfixturevalue(fixture)
    tied = tmp_path / "t.safetensors"
    assert run(["tie", str(model_dir), "--strategy", "all", "--no-eval", "-o", str(tied)],
               capsys)[0] == 0
    path = _file(tied, tmp_path, capsys)
    shared = ws.load(path)
    ids = torch.randint(0, 200, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = getattr(shared(input_ids=ids), "logits", None)
        want = want if want is not None else shared(input_ids=ids).last_hidden_state
    code, out, err = run(["export", path, "--to", "hf", str(tmp_path / "hf"), "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["duplicated_ties"] > 0  # the cross-layer ties: written once per place
    back = getattr(transformers, auto).from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        got = back(input_ids=ids)
    got = got.logits if hasattr(got, "logits") else got.last_hidden_state
    assert float((got - want).abs().max()) == 0.0
    assert (tmp_path / "hf" / "tokenizer.json").is_file()


def test_export_refuses_an_existing_directory(gpt2_dir, tmp_path, capsys):
    path = _file(gpt2_dir, tmp_path, capsys)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    code, _, err = run(["export", path, "--to", "hf", str(tmp_path / "full")], capsys)
    assert code == 1 and "not an empty directory" in err
    code, _, err = run(["export", path, "--to", "sentence-transformers", str(tmp_path / "s")],
                       capsys)
    assert code == 1 and "not a sentence-embedding" in err


def test_save_pretrained_is_guarded(gpt2_dir, tmp_path):
    from weightshare.models import load_model

    lm = load_model(str(gpt2_dir))
    ws.cluster_(lm.model, ws.ClusterConfig(min_size=0))
    with pytest.raises(SaveError, match="export"):
        lm.model.save_pretrained(tmp_path / "x")
    assert not (tmp_path / "x").exists()
    loaded_back = ws.load(ws.save(lm.model, tmp_path / "m.safetensors"))
    with pytest.raises(SaveError, match="from_pretrained loads as random"):
        loaded_back.save_pretrained(tmp_path / "y")
    ws.materialize_(lm.model)  # plain dense again: transformers saves it as usual
    lm.model.save_pretrained(tmp_path / "z")
    assert (tmp_path / "z" / "config.json").is_file()


def test_onnx_export_matches(gpt2_dir, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = _file(gpt2_dir, tmp_path, capsys)
    code, out, err = run(["export", path, "--to", "onnx", str(tmp_path / "m.onnx"), "--json"],
                         capsys)
    assert code == 0, err
    assert json.loads(out)["max_abs_difference"] < 1e-4


def test_coreml_keeps_the_codebook_size(bert_dir, tmp_path, capsys):
    pytest.importorskip("coremltools")
    path = _file(bert_dir, tmp_path, capsys, "--bits", "3")
    code, out, err = run(["export", path, "--to", "coreml", str(tmp_path / "m.mlpackage"),
                          "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    clustered = [row for row in ws.inspect(path).rows if row.scheme == "codebook"]
    # every clustered weight the graph uses (the pooler is not: the output is the hidden
    # states) and that coremltools does not leave dense for being tiny (< 512 values)
    used = [row for row in clustered if "pooler" not in row.name
            and row.shape[0] * row.shape[1] >= 512]
    assert r["palettized"] == len(used) > 0
    for table in r["tables"]:
        assert table["entries"] <= 8 and table["bits"] <= 3  # the codebook: 2**3 entries
    stored = sum(row.stored_bytes for row in used)
    palettized = sum(t["index_bytes"] + t["table_bytes"] for t in r["tables"])
    assert palettized <= 1.2 * stored  # indices at 3 bits, not dense floats


@needs_minilm
def test_sentence_transformers_gives_the_same_embeddings(tmp_path, capsys):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    from weightshare.analysis.fidelity import embed
    from weightshare.models.source import open_model

    path = _file("minilm", tmp_path, capsys, "--no-calibrate", "--include", "encoder")
    code, _, err = run(["export", path, "--to", "sentence-transformers", str(tmp_path / "st")],
                       capsys)
    assert code == 0, err
    lm = open_model(path)
    sentences = ["a cat sat on the mat", "weight sharing keeps models small", "hello world"]
    want = torch.nn.functional.normalize(embed(lm.model, lm.tokenizer, sentences), dim=1)
    got = torch.as_tensor(SentenceTransformer(str(tmp_path / "st"), device="cpu")
                          .encode(sentences))
    assert float((got - want).abs().max()) < 1e-6
