"""One pattern language: the same pattern selects the same weights in cluster_, tie_ and
the CLI, and a tied weight is one target."""

from __future__ import annotations

import json

import pytest
import torch

import weightshare as ws
from weightshare.cli import main
from weightshare.core.select import matches, select_targets
from weightshare.errors import ConfigError, SelectionError
from weightshare.io import read_metadata

PATTERN = r"layer\.[02]\.attention\.self\.query"
EXPECTED = [f"encoder.layer.{i}.attention.self.query.weight" for i in (0, 2)]


def tiny_bert(seed: int = 0):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                     intermediate_size=37, vocab_size=99)
    return transformers.BertModel(config).eval()


def test_a_pattern_is_searched_in_the_name():
    assert matches("attention", "encoder.layer.0.attention.self.query")
    assert not matches("^attention", "encoder.layer.0.attention.self.query")
    assert matches(r"query$", "encoder.layer.0.attention.self.query")


def test_same_pattern_same_weights_in_cluster_tie_and_cli(tmp_path, capsys):
    clustered = ws.cluster_(tiny_bert(), ws.ClusterConfig(bits=2, include=(PATTERN,), min_size=0))
    assert sorted(f for f, *_ in ws.core.iter_shared(clustered)) == EXPECTED

    tied = ws.tie_(tiny_bert(), ws.TieConfig(groups=[PATTERN]))
    assert [g for g in ws.find_ties(tied) if g[0].endswith("weight")] == [EXPECTED]

    model_dir = tmp_path / "bert"
    tiny_bert().save_pretrained(model_dir)
    out = tmp_path / "q.safetensors"
    main(["compress", str(model_dir), "--include", PATTERN, "--min-size", "0", "--bits", "2",
          "--no-eval", "-o", str(out), "--json"])  # returns on success, exits 1 on error
    assert json.loads(capsys.readouterr().out)["clustered_tensors"] == 2
    assert sorted(read_metadata(out)["schemes"]) == EXPECTED


def test_a_tied_weight_is_one_target_selected_by_any_of_its_names():
    from tests.zoo import TinyLM

    torch.manual_seed(0)
    lm = TinyLM()
    (target,) = select_targets(lm, include=("head",))
    assert target.name == "emb" and [n for n, _ in target.aliases] == ["head"]
    with pytest.raises(SelectionError, match="no weight left"):
        select_targets(lm, include=("head",), exclude=("emb",))  # one tensor, excluded
    ws.cluster_(lm, ws.ClusterConfig(bits=3, include=("head",), min_size=0))
    assert lm.head.parametrizations.weight.original is lm.emb.parametrizations.weight.original


def test_bad_patterns_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        ws.ClusterConfig(include=("(",)) and select_targets(torch.nn.Linear(2, 2), ("(",))
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        select_targets(torch.nn.Linear(2, 2), include=("(",))
