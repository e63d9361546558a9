"""Read the user's own text for calibration or evaluation: a file, or a directory of files.

A file with one sample per line gives one sample per non-empty line. Running text (prose,
plays: most paragraphs wrapped over several lines, blank lines between paragraphs) is
joined per paragraph and split into sentences; sentences that are too short are dropped
and too long ones cut, so every sample has a reasonable length.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from weightshare.errors import ConfigError, DataError

SPLITS = ("auto", "lines", "paragraphs", "sentences")

# A sentence ends at ".", "!" or "?" (optionally followed by closing quotes or brackets)
# followed by whitespace. Abbreviations ("Mr. Smith") split too: harmless for calibration.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


def _paragraphs(text: str) -> list[list[str]]:
    """Blank-line-separated blocks, each a list of its stripped non-empty lines."""
    blocks = []
    for block in _BLANK_LINE.split(text):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if lines:
            blocks.append(lines)
    return blocks


def _sentences(paragraph: str, min_words: int, max_words: int) -> list[str]:
    out = []
    for piece in _SENTENCE_END.split(paragraph):
        words = piece.split()
        if len(words) < min_words:
            continue  # speaker names, headings, page numbers
        for start in range(0, len(words), max_words):
            chunk = words[start:start + max_words]
            if len(chunk) >= min_words:
                out.append(" ".join(chunk))
    return out


def split_text(
    text: str, split: str = "auto", min_words: int = 3, max_words: int = 64
) -> list[str]:
    """Split one text into samples; see ``read_texts`` for what ``split`` means.

    >>> split_text("first sample\\nsecond sample")
    ['first sample', 'second sample']
    >>> split_text("ROMEO.\\nWhat light\\nthrough yonder window?\\n\\nJULIET.\\nAy me, alas.")
    ['What light through yonder window?', 'Ay me, alas.']
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if min_words < 1 or max_words < min_words:
        raise ConfigError(f"need 1 <= min_words <= max_words, got min_words={min_words}, "
                          f"max_words={max_words}; widen the range")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    blocks = _paragraphs(text)
    if split == "auto":
        # Running text: several blank-line separated paragraphs, most of them wrapped over
        # more than one line. Anything else (no blank lines, one line per block) is one
        # sample per line.
        wrapped = sum(len(block) > 1 for block in blocks)
        split = "sentences" if len(blocks) >= 2 and 2 * wrapped > len(blocks) else "lines"
    if split == "lines":
        return [line for block in blocks for line in block]
    paragraphs = [" ".join(" ".join(block).split()) for block in blocks]
    if split == "paragraphs":
        return paragraphs
    sentences: list[str] = []
    for paragraph in paragraphs:
        sentences.extend(_sentences(paragraph, min_words, max_words))
    return sentences


def _text_files(directory: Path) -> list[Path]:
    files: list[Path] = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(Path(root) / n for n in names if n.endswith(".txt") and not n.startswith("."))
    return sorted(files)


def _read_file(path: Path) -> str:
    try:
        # utf-8-sig drops a byte-order mark; undecodable bytes become U+FFFD, not a crash.
        return path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise DataError(
            f"cannot read {str(path)!r}: {exc.strerror or exc}; check that it is a readable file"
        ) from exc


def _evenly_spaced(samples: list[str], count: int) -> list[str]:
    """``count`` samples spread over the whole list, so a cap still covers every file."""
    if count >= len(samples):
        return samples
    step = len(samples) / count
    return [samples[int(i * step)] for i in range(count)]


def read_texts(
    path: str | os.PathLike,
    split: str = "auto",
    min_words: int = 3,
    max_words: int = 64,
    max_samples: int | None = None,
) -> list[str]:
    """Read text samples from a file or from every ``.txt`` file under a directory.

    ``split``: ``"lines"`` (one sample per non-empty line), ``"paragraphs"`` (blank-line
    separated blocks), ``"sentences"`` (paragraphs split into sentences of ``min_words`` to
    ``max_words`` words) or ``"auto"`` (per file: ``"sentences"`` when it has several
    blank-line separated paragraphs and most of them span several lines, else ``"lines"``).
    ``max_samples`` keeps that many, evenly spread.

    >>> import pathlib, tempfile
    >>> tmp = pathlib.Path(tempfile.mkdtemp()) / "samples.txt"
    >>> _ = tmp.write_text("one sample\\n\\nanother sample\\n")
    >>> read_texts(tmp)
    ['one sample', 'another sample']
    """
    if max_samples is not None and max_samples < 1:
        raise ConfigError(f"max_samples must be >= 1 or None, got {max_samples}")
    path = Path(path).expanduser()
    if path.is_dir():
        files = _text_files(path)
        if not files:
            raise DataError(f"directory {str(path)!r} holds no .txt files; "
                            "pass a .txt file or a directory of them")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"no such file or directory: {str(path)!r}; "
                        "pass a .txt file or a directory of .txt files")
    samples = []
    for file in files:
        samples.extend(split_text(_read_file(file), split, min_words, max_words))
    if not samples:
        raise DataError(f"no text samples found in {str(path)!r} (split={split!r}, "
                        f"min_words={min_words}); check that the files are not empty")
    return samples if max_samples is None else _evenly_spaced(samples, max_samples)
