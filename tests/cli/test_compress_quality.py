"""``compress`` with the quality options: recipes, fine-tuning, and their one-line errors."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_cli import run
from tests.hf_dirs import bert_dir, gpt2_dir, gpt2_no_tokenizer_dir  # noqa: F401 - fixtures


def test_recipe_then_finetune_on_a_tiny_bert(bert_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "q.safetensors"
    code, stdout, err = run(["compress", str(bert_dir), "--recipe", "quality", "--bits",
                             "3", "--min-size", "0", "--calibrate", "--finetune-steps", "3",
                             "--finetune-lr", "2e-3", "--finetune-embeddings",
                             "-o", str(out), "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["config"]["error_feedback"] is True
    assert result["bits_per_weight"] > 0
    assert set(result["seconds"]) == {"load", "cluster", "finetune", "save"}
    assert result["finetune"]["steps"] == 3 and result["finetune"]["diverged"] is None
    assert out.is_file()


def test_recipe_then_finetune_on_a_pad_less_gpt2(gpt2_dir, tmp_path, capsys):  # noqa: F811
    # a causal LM whose tokenizer has no padding token, tied head, Conv1D layers
    out = tmp_path / "g.safetensors"
    code, stdout, err = run(["compress", str(gpt2_dir), "--recipe", "balanced", "--bits", "3",
                             "--min-size", "0", "--finetune-steps", "2", "-o", str(out),
                             "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["finetune"]["steps"] == 2 and out.is_file()


def test_recipe_flags_given_override_the_recipe(bert_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "f.safetensors"
    code, stdout, err = run(["compress", str(bert_dir), "--recipe", "fast", "--bits", "4",
                             "--min-size", "0", "--scales", "none", "--no-eval", "-o",
                             str(out), "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["config"]["scales"] == "none"


@pytest.mark.parametrize("argv, message", [
    (["--error-feedback", "--no-calibrate"],
     "error_feedback=true needs calibration text and --no-calibrate turned calibration off"),
    (["--weighting", "fisher", "--no-calibrate"], "needs calibration text"),
    (["--recipe", "quality", "--no-calibrate"], "needs calibration text"),
    (["--calibration-samples", "0"], "calibration_samples must be >= 1"),
    (["--vector-dim", "3"], "vector_dim must be one of 1, 2, 4, 8"),
    (["--sequential"], "set error_feedback=true too"),
    (["--outliers", "0.7"], "outliers must be a fraction"),
    (["--finetune-seconds", "0"], "budget of 0.0 seconds trains nothing"),
    (["--finetune-steps", "0"], "budget of 0 steps trains nothing"),
    (["--finetune-embeddings"], "finetune_embeddings does nothing without a fine-tuning"),
    (["--finetune-lr", "2e-3"], "finetune_lr does nothing without a fine-tuning budget"),
    (["--finetune-steps", "3", "--finetune-lr", "0"], "finetune_lr must be > 0"),
    (["--shared-codebook", "embeddings|attention", "--min-size", "0"],
     "mixes an embedding table"),
    (["--shared-codebook", "nothing_here"], "matches no selected layer"),
    (["--recipe", "best"], "invalid value for '--recipe'"),
])
def test_quality_errors_are_one_line_and_write_nothing(argv, message, bert_dir,  # noqa: F811
                                                       tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    code, _, err = run(["compress", str(bert_dir), *argv, "-o", str(out)], capsys)
    assert code == 1, err
    assert message.lower() in err.lower()
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--recipe", "quality"], "error_feedback=true needs calibration text and"),
    (["--finetune-steps", "3", "--no-calibrate"], "fine-tuning on text needs a tokenizer"),
])
def test_a_model_without_tokenizer_says_what_needs_one(
        argv, message, gpt2_no_tokenizer_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "x.safetensors"
    code, _, err = run(["compress", str(gpt2_no_tokenizer_dir), *argv, "-o", str(out)], capsys)
    assert code == 1 and message in err.lower() and "tokenizer" in err
    assert err.count("\n") == 1 and not out.exists()
