"""Built-in English sentences, shipped as package data and read with importlib.resources.

Two disjoint sets written for this project: ``eval_sentences()`` (held out, for measuring
fidelity) and ``calibration_sentences()`` (for calibrating codebooks and distilling).
Never measure on the calibration set. Both mix news, science, sport, cooking, travel,
chat, support questions, legal and financial prose, medicine, history, code comments,
shell and SQL in prose, instructions, reviews, poetry-like lines, numbers and units,
jargon, very short and very long sentences, and a few near-paraphrase pairs so that top-1
retrieval is meaningful.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

EVAL_FILE = "eval_sentences.txt"
CALIBRATION_FILE = "calibration_sentences.txt"


@cache
def _read(name: str) -> tuple[str, ...]:
    text = resources.files("weightshare.data").joinpath(name).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def eval_sentences() -> list[str]:
    """The held-out evaluation sentences (642), one string each, in a fixed order.

    >>> sentences = eval_sentences()
    >>> len(sentences) >= 600 and not set(sentences) & set(calibration_sentences())
    True
    """
    return list(_read(EVAL_FILE))


def calibration_sentences() -> list[str]:
    """The calibration sentences (2,021), disjoint from ``eval_sentences()``: unlabeled
    inputs for calibrating codebooks (the first 32) and for distillation (all of them).
    The first 256 were written with the evaluation set; the rest were added for
    distillation and share no five-word run with any evaluation sentence.

    >>> len(calibration_sentences())
    2021
    """
    return list(_read(CALIBRATION_FILE))
