"""The character-level transformer language models the studies compare, built with the
project's own structural sharing (``ws.tie_`` and ``TieConfig``), never by hand.

Variants (N = the depth of the deep models):

* ``untied``: N blocks, each its own weights;
* ``cycle3``: N blocks on 3 unique ones (0 1 2 0 1 2; ``TieConfig(strategy="cycle")``);
* ``all``: N blocks on one (ALBERT; ``TieConfig(strategy="all")``);
* ``relaxed-r<R>``: ``all`` plus a rank-R delta per block (``TieConfig(strategy="all",
  rank=R)``), started as LoRA starts (delta zero), so training begins from the
  all-shared model and the deltas add what sharing took away;
* ``shallow<K>``: K untied blocks, the same unique parameters as a deep shared model
  (``shallow1`` ~ ``all``, ``shallow3`` ~ ``cycle3``): the ALBERT / MobileLLM question.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data.chars import CharCorpus, load_chars, windows
from ..errors import ConfigError
from ..methods.tie import TieConfig, iter_relaxed, tie_
from ..models.chartransformer import CharTransformer


@dataclass(frozen=True)
class LMSize:
    """Width and depth of the transformer, and the window it is trained on."""

    dim: int
    layers: int
    heads: int
    context: int


FULL = LMSize(dim=64, layers=6, heads=4, context=64)
QUICK = LMSize(dim=16, layers=6, heads=2, context=16)

# the held-out windows are drawn at fixed random offsets of the validation text, the same
# for every model, seed and study
EVAL_SEED = 1234
VALIDATION = 0.1  # load_chars' default: the last tenth of the files (plays) by name


@dataclass(frozen=True)
class Text:
    """The corpus split by file (``data.chars.load_chars``), and what the reports name."""

    corpus: CharCorpus
    valid_files: tuple[str, ...]

    @property
    def vocab_size(self) -> int:
        return len(self.corpus.vocab)

    def train(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every non-overlapping training window of ``length`` characters."""
        return windows(self.corpus.train, length)

    def held_out(self, length: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` validation windows at fixed offsets (the same every call)."""
        return windows(self.corpus.validation, length, count,
                       torch.Generator().manual_seed(EVAL_SEED))


_TEXTS: dict[str, Text] = {}


def corpus(path: Path) -> Text:
    """The Shakespeare corpus split by play (read once per process)."""
    key = str(Path(path).resolve())
    if key not in _TEXTS:
        names = sorted(f.name for f in Path(path).glob("*.txt"))
        held = max(1, round(len(names) * VALIDATION))
        _TEXTS[key] = Text(load_chars(path, validation=VALIDATION), tuple(names[-held:]))
    return _TEXTS[key]


def tie_config(variant: str) -> TieConfig | None:
    """The ``TieConfig`` of a deep variant (None for untied and shallow models).

    Example:
        >>> tie_config("cycle3").strategy, tie_config("relaxed-r8").rank
        ('cycle', 8)
    """
    if variant == "untied" or variant.startswith("shallow"):
        return None
    if variant == "cycle3":
        return TieConfig(strategy="cycle", unique=3)
    if variant == "all":
        return TieConfig(strategy="all")
    if variant.startswith("relaxed-r"):
        return TieConfig(strategy="all", rank=int(variant[len("relaxed-r"):]), init="first")
    raise ConfigError(f"unknown transformer variant {variant!r}")


def build(variant: str, vocab: int, size: LMSize, seed: int) -> nn.Module:
    """A freshly initialised (seeded) char transformer of ``variant``, shared as it says."""
    torch.manual_seed(seed)
    layers = int(variant[len("shallow"):]) if variant.startswith("shallow") else size.layers
    model = CharTransformer(vocab, size.dim, layers, size.heads, size.context)
    config = tie_config(variant)
    if config is not None:
        tie_(model, config)
    if config is not None and config.rank:
        with torch.no_grad():  # LoRA's start: every delta zero, A random
            for _fqn, _module, _attr, weight in iter_relaxed(model):
                for part in ("lora_B", "delta"):
                    tensor = getattr(weight, part, None)
                    if tensor is not None:
                        tensor.zero_()
    return model


def label(variant: str, size: LMSize) -> str:
    """A reader's name: ``untied 6L``, ``cycle-3 6L``, ``all-shared 6L``, ``relaxed r8 6L``,
    ``untied 1L``."""
    n = size.layers
    if variant.startswith("shallow"):
        return f"untied {variant[len('shallow'):]}L"
    if variant.startswith("relaxed-r"):
        return f"relaxed r{variant[len('relaxed-r'):]} {n}L"
    return {"untied": f"untied {n}L", "cycle3": f"cycle-3 {n}L", "all": f"all-shared {n}L"
            }[variant]
