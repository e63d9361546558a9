"""Built-in evaluation and calibration sentences, and readers for user text."""

from weightshare.data.sentences import calibration_sentences, eval_sentences
from weightshare.data.text import read_texts

__all__ = ["calibration_sentences", "eval_sentences", "read_texts"]
