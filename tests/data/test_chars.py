"""The character corpus: split by file, vocabulary with an unknown id, windows."""

from __future__ import annotations

import pytest

from tests.zoo import SHARED_DATA
from weightshare.data.chars import load_chars
from weightshare.errors import DataError


@pytest.fixture
def folder(tmp_path):
    for name, text in {"a.txt": "abcabcabc\n", "b.txt": "zzz abc", "c.txt": "cab cab"}.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_split_by_file_and_unknown_characters(folder):
    c = load_chars(folder, valid_files=["b.txt"], min_count=1)
    assert c.train_files == ("a.txt", "c.txt") and c.valid_files == ("b.txt",)
    assert "z" not in c.vocab and c.vocab[0] == "\x00"
    assert c.decode(c.valid[:4]) == "\x00\x00\x00 "  # never seen in training: unknown
    assert c.decode(c.train[:9]) == "abcabcabc"


def test_windows_are_next_character_pairs(folder):
    c = load_chars(folder, valid_every=3, min_count=1)
    assert c.valid_files == ("c.txt",)
    x, y = c.windows("train", 3)
    assert x.shape == y.shape == (len(c.train) // 3 - (1 if len(c.train) % 3 == 0 else 0), 3)
    assert (x[:, 1:] == y[:, :-1]).all()
    assert c.windows("train", 3, count=2)[0].shape == (2, 3)


def test_bad_input(folder, tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        load_chars(tmp_path / "nope")
    with pytest.raises(DataError, match="not in"):
        load_chars(folder, valid_files=["x.txt"])
    with pytest.raises(DataError, match="leave some for training"):
        load_chars(folder, valid_files=["a.txt", "b.txt", "c.txt"])
    with pytest.raises(DataError, match="shorter than one window"):
        load_chars(folder, valid_files=["b.txt"]).windows("valid", 100)


@pytest.mark.skipif(not (SHARED_DATA / "shakespeare").is_dir(), reason="no Shakespeare data")
def test_shakespeare_split_by_play():
    c = load_chars(SHARED_DATA / "shakespeare")
    assert not set(c.train_files) & set(c.valid_files) and len(c.valid_files) == 4
    assert 60 < c.vocab_size < 100 and c.valid.numel() > 300_000
