"""Calibration text and held-out evaluation text, always disjoint.

Every verb that both uses text (calibration, distillation) and measures on text takes
them from a :class:`TextSplit`:

* nothing given: the built-in calibration sentences and the built-in evaluation
  sentences (two disjoint sets written for this project);
* ``data`` only (``--data PATH``): the user's text, split once and the same way by every
  verb, so ``eval --data PATH`` measures on exactly the text that ``compress --data
  PATH`` held out. A directory holding several ``.txt`` files is split **by file**
  (every fifth file, in sorted order, is held out: whole documents, e.g. whole plays,
  never seen by calibration); a single file is split by position (its last fifth is
  held out);
* ``eval_data`` (``--eval-data PATH``): that text is the held-out text, all of it;
  calibration then uses ``data`` whole (or the built-in sentences).

Held-out samples that also occur in the calibration text are dropped, so the two never
share a sample.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .sentences import calibration_sentences, eval_sentences
from .text import _text_files, read_texts

HELD_OUT_EVERY = 5  # every fifth file (or the last fifth of one file) is held out


@dataclass(frozen=True)
class TextSplit:
    """Disjoint calibration and evaluation samples, and where each came from."""

    calibration: list[str]
    evaluation: list[str]
    calibration_source: str
    evaluation_source: str
    builtin_calibration: bool = False

    def describe(self) -> str:
        return f"calibration: {self.calibration_source}; held out: {self.evaluation_source}"

    def calibration_samples(self, count: int) -> list[str]:
        """``count`` calibration samples: the first ones of the built-in sentences (as
        always), spread evenly over the user's text."""
        if self.builtin_calibration:
            return self.calibration[:count]
        return spread(self.calibration, count)


def _files_text(files: list[Path]) -> list[str]:
    return [s for f in files for s in read_texts(f)]


def _split_path(path: Path) -> tuple[list[str], list[str], str, str]:
    if path.is_dir():
        files = _text_files(path)
        if len(files) >= 2:
            held = [f for i, f in enumerate(files) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
            held = held or files[-1:]
            kept = [f for f in files if f not in held]
            names = ", ".join(f.stem for f in held[:4]) + (" ..." if len(held) > 4 else "")
            return (_files_text(kept), _files_text(held),
                    f"{len(kept)} files of {path}",
                    f"{len(held)} other files of {path} ({names})")
    samples = read_texts(path)
    if len(samples) < 2:
        raise DataError(f"{str(path)!r} holds {len(samples)} text sample; pass more text (a "
                        "held-out part is measured on), or --eval-data for the held-out text")
    cut = len(samples) - max(1, len(samples) // HELD_OUT_EVERY)
    return (samples[:cut], samples[cut:], f"the first {cut} samples of {path}",
            f"the last {len(samples) - cut} samples of {path}")


def split_texts(data: str | os.PathLike | None = None,
                eval_data: str | os.PathLike | None = None) -> TextSplit:
    """The calibration / held-out split for ``data`` and ``eval_data`` (module docstring).

    Example:
        >>> s = split_texts()
        >>> len(s.evaluation), bool(set(s.calibration) & set(s.evaluation))
        (642, False)
    """
    if data is None:
        cal, cal_src = calibration_sentences(), "built-in calibration sentences"
    if eval_data is not None:
        if data is not None:
            cal, cal_src = read_texts(data), f"all of {data}"
        ev, ev_src = read_texts(eval_data), f"{eval_data}"
    elif data is not None:
        cal, ev, cal_src, ev_src = _split_path(Path(data).expanduser())
    else:
        ev, ev_src = eval_sentences(), "built-in evaluation sentences"
    seen = set(cal)
    kept = [s for s in ev if s not in seen]
    if not kept:
        raise DataError(f"every held-out sample of {ev_src} also occurs in the calibration text; "
                        "pass held-out text that calibration never sees (--eval-data)")
    if len(kept) < len(ev):
        ev_src += f", less {len(ev) - len(kept)} sample(s) that calibration also has"
    return TextSplit(cal, kept, cal_src, ev_src, builtin_calibration=data is None)


def spread(samples: list[str], count: int) -> list[str]:
    """``count`` samples spread evenly over the list (all of them when fewer).

    Example:
        >>> spread(["a", "b", "c", "d"], 2)
        ['a', 'c']
    """
    if count >= len(samples):
        return list(samples)
    step = len(samples) / count
    return [samples[int(i * step)] for i in range(count)]
