"""Files of format version 2 (tests/fixtures/format_v2, written at commit 9e7684c by
``v2_make.py`` there) keep loading, with the same weights and outputs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import weightshare as ws

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "format_v2"
sys.path.insert(0, str(FIXTURES))
from v2_models import FixtureLM, bert_inputs, inputs  # noqa: E402

EXPECTED = load_file(str(FIXTURES / "expected_outputs.safetensors"))


def same_weights(name: str, model: torch.nn.Module) -> None:
    for mname, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Embedding)):
            assert torch.equal(module.weight, EXPECTED[f"{name}/{mname}.weight"]), mname


@pytest.mark.parametrize("name", ["codebook_ties", "relaxed"])
def test_version_2_files_load_with_the_same_weights(name, tmp_path):
    path = FIXTURES / f"{name}.safetensors"
    model = ws.load(path, FixtureLM())
    same_weights(name, model)
    assert torch.allclose(model(inputs()), EXPECTED[name], atol=1e-6, rtol=0)
    assert ws.verify_ties(model) == []
    assert ws.inspect(path).total_params == ws.inspect(model).total_params
    reloaded = ws.load(ws.save(model, tmp_path / "again.safetensors"), FixtureLM())
    assert torch.equal(reloaded(inputs()), model(inputs()))
    assert ws.find_ties(reloaded) == ws.find_ties(model)


def test_version_2_transformers_file_loads_without_a_skeleton():
    pytest.importorskip("transformers")
    model = ws.load(FIXTURES / "bert.safetensors")
    same_weights("bert", model)
    out = model(**bert_inputs()).last_hidden_state
    assert torch.allclose(out, EXPECTED["bert"], atol=1e-5, rtol=0)
    assert ["encoder.layer.0.attention.self.query.weight",
            "encoder.layer.1.attention.self.query.weight"] in ws.find_ties(model)
