"""Language-model fidelity and the calibration / held-out split."""

from __future__ import annotations

import math

import pytest
import torch

from tests.hf_dirs import gpt2_dir
from weightshare.analysis.fidelity import perplexity
from weightshare.analysis.lm_fidelity import LMReference, lm_fidelity, token_windows
from weightshare.data.split import split_texts
from weightshare.errors import DataError

__all__ = ["gpt2_dir"]


def test_lm_fidelity_against_itself_and_a_perturbed_copy(gpt2_dir):
    import copy

    import weightshare as ws
    from weightshare.data.sentences import eval_sentences
    from weightshare.models import load_model

    lm = load_model(str(gpt2_dir))
    texts = eval_sentences()[:80]
    same = lm_fidelity(lm.model, lm.model, texts, lm.tokenizer, seq_len=32, max_tokens=1024)
    assert same["kl"] == 0.0 and same["top1_agreement"] == 1.0
    assert same["perplexity"] == pytest.approx(same["perplexity_reference"], rel=1e-12)
    windows = token_windows(texts, lm.tokenizer, 32, 1024)
    assert same["tokens"] == windows.numel() - len(windows)
    assert same["perplexity_reference"] == pytest.approx(perplexity(lm.model, windows), rel=1e-6)
    shared = ws.cluster_(copy.deepcopy(lm.model), ws.ClusterConfig(bits=2, min_size=0))
    worse = lm_fidelity(lm.model, shared, texts, lm.tokenizer, seq_len=32, max_tokens=1024)
    assert worse["kl"] > 0 and worse["top1_agreement"] < 1


def test_kl_budget_limits_the_stored_positions(gpt2_dir):
    from weightshare.data.sentences import eval_sentences
    from weightshare.models import load_model

    lm = load_model(str(gpt2_dir))
    windows = token_windows(eval_sentences()[:80], lm.tokenizer, 16, 512)
    vocab = lm.model.config.vocab_size
    ref = LMReference(lm.model, windows, batch_size=4, kl_budget_bytes=4 * 15 * vocab * 4)
    r = ref.score(lm.model)
    assert r["kl_tokens"] == 4 * 15 < r["tokens"] and r["kl"] == 0.0
    assert math.isfinite(r["perplexity"])


def test_windows_need_text():
    class Tok:
        eos_token_id = None

        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [[] for _ in texts]}

    with pytest.raises(DataError, match="fewer than 2 tokens"):
        token_windows(["x"], Tok())


def test_split_by_file_and_by_position(tmp_path):
    plays = tmp_path / "plays"
    plays.mkdir()
    for i in range(10):
        (plays / f"play{i}.txt").write_text("\n".join(f"line {j} of play {i} here" for j in
                                                     range(20)))
    s = split_texts(plays)
    assert "play4" in s.evaluation_source and "play9" in s.evaluation_source
    assert all("play 4 " in t or "play 9 " in t for t in s.evaluation)
    assert not set(s.calibration) & set(s.evaluation)
    one = plays / "play0.txt"
    s = split_texts(one)
    assert s.calibration[-1] == "line 15 of play 0 here" and len(s.evaluation) == 4
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("line 1 of play 1 here\nline 2 of play 1 here\na new line of text\n")
    s = split_texts(plays, eval_data=mixed)  # samples calibration has are dropped
    assert s.evaluation == ["a new line of text"] and "less 2 sample(s)" in s.evaluation_source
    with pytest.raises(DataError, match="also occurs"):
        split_texts(one, eval_data=one)
    assert split_texts().builtin_calibration and not split_texts(one).builtin_calibration
    assert s.calibration_samples(3) == [s.calibration[0], s.calibration[len(s.calibration) // 3],
                                        s.calibration[2 * len(s.calibration) // 3]]


def test_fidelity_says_what_it_measured(gpt2_dir):
    from weightshare.analysis.measure import Fidelity
    from weightshare.models import load_model

    lm = load_model(str(gpt2_dir))
    r = Fidelity(lm, max_tokens=256).score(lm.model)
    assert r["metric"] == "language-model" and "256 held-out tokens" not in r["measured"]
    assert "held-out tokens (built-in evaluation sentences)" in r["measured"]
    lm.tokenizer = None
    r = Fidelity(lm).score(lm.model)
    assert r["relative_error"] == 0.0 and "seeded random token ids" in r["measured"]
    assert torch.is_tensor(lm.model.lm_head.weight)
