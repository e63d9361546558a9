"""Built-in sentences (counts, disjointness, variety) and read_texts on user files."""

from __future__ import annotations

from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.zoo import SHARED_DATA as DATA_DIR  # $WEIGHTSHARE_DATA, else ../shared/data
from weightshare.data.sentences import calibration_sentences, eval_sentences
from weightshare.data.text import read_texts, split_text
from weightshare.errors import ConfigError, DataError

SHAKESPEARE = DATA_DIR / "shakespeare"


def test_sentence_counts():
    assert len(eval_sentences()) >= 600
    assert len(calibration_sentences()) == 2021


def test_no_calibration_sentence_paraphrases_an_eval_sentence():
    def runs(s: str, n: int = 5) -> set[str]:
        w = s.lower().split()
        return {" ".join(w[i:i + n]) for i in range(len(w) - n + 1)}

    evals = set().union(*(runs(s) for s in eval_sentences()))
    added = calibration_sentences()[256:]  # the first 256 were written with the eval set
    assert not [s for s in added if runs(s) & evals]


@pytest.mark.parametrize("sentences", [eval_sentences(), calibration_sentences()])
def test_sentences_are_unique_clean_and_sized(sentences):
    assert len({s.lower() for s in sentences}) == len(sentences)
    for s in sentences:
        assert s == s.strip() and "\n" not in s and "  " not in s
        assert 2 <= len(s.split()) <= 60, s


def test_sets_are_disjoint():
    evals = {s.lower() for s in eval_sentences()}
    assert not evals & {s.lower() for s in calibration_sentences()}


def test_eval_sentences_are_varied():
    sentences = eval_sentences()
    words = [len(s.split()) for s in sentences]
    assert sum(w <= 3 for w in words) >= 10  # very short
    assert sum(w >= 40 for w in words) >= 8  # long
    assert sum(s.startswith(("#", "//", "/*")) for s in sentences) >= 20  # code comments
    assert sum("SELECT" in s or "git " in s for s in sentences) >= 3  # SQL / shell in prose
    assert sum(s.endswith("?") for s in sentences) >= 50
    assert sum(any(ch.isdigit() for ch in s) for s in sentences) >= 60


def test_returns_fresh_lists():
    first = eval_sentences()
    first.clear()
    assert eval_sentences()


def test_sentences_ship_as_package_data():
    files = resources.files("weightshare.data")
    for name in ("eval_sentences.txt", "calibration_sentences.txt"):
        assert files.joinpath(name).is_file()


def test_read_lines_file(tmp_path):
    path = tmp_path / "samples.txt"
    path.write_text("first sample here\n\n  second sample  \nthird\n", encoding="utf-8")
    assert read_texts(path) == ["first sample here", "second sample", "third"]


def test_single_line_blocks_stay_lines(tmp_path):
    path = tmp_path / "spaced.txt"
    path.write_text("Is it raining? Bring a coat.\n\nSee you soon.\n\nok\n", encoding="utf-8")
    assert read_texts(path) == ["Is it raining? Bring a coat.", "See you soon.", "ok"]


def test_read_paragraphs_become_sentences(tmp_path):
    path = tmp_path / "prose.txt"
    path.write_text(
        "HAMLET.\nTo be, or not to be, that is the question.\nWhether 'tis nobler\n"
        "in the mind to suffer?\n\nOPHELIA.\nGood my lord.\n", encoding="utf-8"
    )
    assert read_texts(path) == [
        "To be, or not to be, that is the question.",
        "Whether 'tis nobler in the mind to suffer?",
        "Good my lord.",
    ]
    assert read_texts(path, split="paragraphs")[0].startswith("HAMLET. To be")
    assert read_texts(path, split="lines")[0] == "HAMLET."


def test_long_sentences_are_cut(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text(" ".join(f"w{i}" for i in range(150)) + "\nmore\n", encoding="utf-8")
    samples = read_texts(path, split="sentences", max_words=64)
    assert [len(s.split()) for s in samples] == [64, 64, 23]


def test_crlf_and_bom(tmp_path):
    path = tmp_path / "windows.txt"
    path.write_bytes("\ufeffalpha beta\r\ngamma delta\r\n".encode())
    assert read_texts(path) == ["alpha beta", "gamma delta"]


def test_read_directory(tmp_path):
    (tmp_path / "b.txt").write_text("from b\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("from sub a\n", encoding="utf-8")
    (tmp_path / ".hidden.txt").write_text("hidden\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("markdown\n", encoding="utf-8")
    assert read_texts(tmp_path) == ["from b", "from sub a"]


def test_max_samples_spreads_over_files(tmp_path):
    path = tmp_path / "many.txt"
    path.write_text("\n".join(f"line {i}" for i in range(100)), encoding="utf-8")
    samples = read_texts(path, max_samples=4)
    assert samples == ["line 0", "line 25", "line 50", "line 75"]


@pytest.mark.parametrize("make", ["missing", "empty_file", "blank_file", "empty_dir", "no_txt"])
def test_read_errors(tmp_path, make):
    target = tmp_path / "target"
    if make == "empty_file":
        target.write_text("", encoding="utf-8")
    elif make == "blank_file":
        target.write_text("\n  \n\n", encoding="utf-8")
    elif make == "empty_dir":
        target.mkdir()
    elif make == "no_txt":
        target.mkdir()
        (target / "data.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(DataError, match="target"):
        read_texts(target)


def test_bad_options(tmp_path):
    (tmp_path / "a.txt").write_text("x y z\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="split"):
        read_texts(tmp_path, split="words")
    with pytest.raises(ConfigError, match="min_words"):
        read_texts(tmp_path, min_words=10, max_words=5)
    with pytest.raises(ConfigError, match="max_samples"):
        read_texts(tmp_path, max_samples=0)


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab .!?\n"), max_size=300),
       st.integers(1, 4), st.integers(4, 12))
def test_sentence_lengths_stay_in_range(text, min_words, max_words):
    for sample in split_text(text, "sentences", min_words, max_words):
        assert min_words <= len(sample.split()) <= max_words


@pytest.mark.skipif(not SHAKESPEARE.is_dir(), reason=f"shared data not found at {SHAKESPEARE}")
def test_read_shakespeare_directory():
    samples = read_texts(SHAKESPEARE)
    assert len(samples) > 10_000
    words = [len(s.split()) for s in samples]
    assert min(words) >= 3 and max(words) <= 64
    assert 8 <= sum(words) / len(words) <= 30
    assert len(read_texts(SHAKESPEARE, max_samples=500)) == 500
