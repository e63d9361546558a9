"""Files of format version 1 (weightshare 0.1.0, tests/fixtures/format_v1, written before
the plug-in refactor) keep loading, with the same weights."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import weightshare as ws
from weightshare.io import read_metadata

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "format_v1"
sys.path.insert(0, str(FIXTURES))
from models import FixtureLM, inputs  # noqa: E402

EXPECTED = load_file(str(FIXTURES / "expected_outputs.safetensors"))


@pytest.mark.parametrize("name", ["codebook_ties", "relaxed"])
def test_version_1_files_load_with_the_same_weights(name, tmp_path):
    path = FIXTURES / f"{name}.safetensors"
    model = ws.load(path, FixtureLM())
    for mname, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Embedding)):
            assert torch.equal(module.weight, EXPECTED[f"{name}/{mname}.weight"]), mname
    # outputs agree to float rounding (the expected ones come from another process)
    assert torch.allclose(model(inputs()), EXPECTED[name], atol=1e-6, rtol=0)
    assert ws.verify_ties(model) == []
    # inspect reads it, and saving it again writes the current version, which round-trips
    assert ws.inspect(path).total_params == ws.inspect(model).total_params
    again = ws.save(model, tmp_path / "v2.safetensors")
    assert read_metadata(again)["format_version"] == 3
    reloaded = ws.load(again, FixtureLM())
    assert torch.equal(reloaded(inputs()), model(inputs()))
    assert ws.find_ties(reloaded) == ws.find_ties(model)


def test_version_1_ties_come_back():
    model = ws.load(FIXTURES / "codebook_ties.safetensors", FixtureLM())
    ties = ws.find_ties(model)
    assert ["emb.weight", "head.weight"] in ties
    # the cross-layer codebook: proj used blocks.0.attn's codebook in the v1 file
    assert model.proj.parametrizations.weight.original is \
        model.blocks[0].attn.parametrizations.weight.original
    relaxed = ws.load(FIXTURES / "relaxed.safetensors", FixtureLM())
    base = relaxed.blocks[0].attn.parametrizations.weight.original
    assert all(b.attn.parametrizations.weight.original is base for b in relaxed.blocks)
