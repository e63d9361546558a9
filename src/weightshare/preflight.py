"""Checks that run before any weight is loaded, so a bad flag fails in seconds, not after
the model has loaded (or after the work is done).

* flag values that need no model: patterns compile, fractions are fractions, paths
  exist, the output can be written (``check_flags``);
* values that need the model's *structure* only: which weights the patterns select, the
  per-group fallback, which blocks a tie strategy uses: checked on the model built on
  the meta device from its config (``ModelSource.skeleton``: no weights, no memory).
  Files and hub ids have no cheap skeleton; they are checked right after loading, before
  any work;
* what the job needs: a tokenizer for calibration, distillation or the redundancy
  analysis on text.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from .core.select import compile_patterns, select_targets
from .errors import ConfigError, DataError, ModelLoadError
from .methods.codebook import ClusterConfig
from .methods.codebook.finetune import check_budget
from .methods.codebook.groups import GroupChange, group_sizes
from .methods.codebook.method import check_shapes, data_needed, shared_sets
from .methods.tie import TieConfig
from .methods.tie.tiesets import build_tie_sets
from .models.source import ModelSource


def check_fraction(name: str, value: float | None) -> None:
    """ConfigError unless ``value`` is None or in (0, 1)."""
    if value is not None and not 0 < value < 1:
        raise ConfigError(f"{name} must be a fraction of the parameters in (0, 1), got "
                          f"{value!r}; e.g. 0.10 removes a tenth")


def check_path(flag: str, path: str | os.PathLike | None) -> None:
    """DataError when a text path given on the command line does not exist."""
    if path is not None and not Path(path).expanduser().exists():
        raise DataError(f"{flag} {path}: no such file or directory; pass a .txt file or a "
                        "directory of .txt files")


def check_cluster_config(config: ClusterConfig) -> None:
    """The patterns of a ClusterConfig compile (no model needed)."""
    compile_patterns(config.include, "include")
    compile_patterns(config.exclude, "exclude")
    compile_patterns(config.shared_codebooks, "shared_codebooks")


def cluster_plan(model: nn.Module, config: ClusterConfig) -> list[GroupChange]:
    """The targets ``config`` selects in ``model`` (a skeleton is enough) exist, their rows
    split into vectors and their shared-codebook sets can share; returns the per-group
    fallback changes (ShapeError with ``config.strict``)."""
    targets = select_targets(model, config.include, config.exclude, config.min_size,
                             what="cluster")
    check_shapes(targets, config)
    shared_sets(targets, config)
    return group_sizes(targets, config)[1]


def check_cluster(source: ModelSource, config: ClusterConfig) -> list[GroupChange] | None:
    """``cluster_plan`` on the meta skeleton of ``source``; None when it has none."""
    skeleton = source.skeleton()
    return None if skeleton is None else cluster_plan(skeleton, config)


def check_quality_flags(calibration_samples: int | None, finetune_seconds: float | None,
                        finetune_steps: int | None, finetune_embeddings: bool = False,
                        finetune_lr: float | None = None) -> bool:
    """ConfigError for a calibration count below one, a fine-tuning budget of nothing or a
    fine-tuning option without a budget; returns whether fine-tuning was asked for."""
    if calibration_samples is not None and calibration_samples < 1:
        raise ConfigError(f"calibration_samples must be >= 1, got {calibration_samples}")
    if finetune_lr is not None and not finetune_lr > 0:  # (also: pipeline treats 0 as unset)
        raise ConfigError(f"finetune_lr must be > 0, got {finetune_lr}")
    if finetune_seconds is None and finetune_steps is None:
        given = [name for name, value in (("finetune_embeddings", finetune_embeddings),
                                          ("finetune_lr", finetune_lr is not None)) if value]
        if given:
            raise ConfigError(f"{given[0]} does nothing without a fine-tuning budget: give "
                              "finetune_seconds or finetune_steps too")
        return False
    check_budget(finetune_seconds, finetune_steps)
    return True


def check_calibration(source: ModelSource, config: ClusterConfig, calibrate: bool,
                      finetune: bool = False) -> None:
    """DataError when ``config`` needs calibration data the job will not have; a
    ModelLoadError when fine-tuning on text is asked of a model without a tokenizer."""
    if finetune:
        need_tokenizer(source, "fine-tuning on text", "use finetune_codebooks_ from Python")
    what = data_needed(config)
    if what and not calibrate:
        why = (f"{source.spec} has no tokenizer" + (f" ({source.tokenizer_note})"
               if source.tokenizer_note else "") if source.tokenizer() is None
               else "--no-calibrate turned calibration off")
        raise DataError(f"{what} needs calibration text and {why}; calibrate (a model with a "
                        "tokenizer) or use a config without it (e.g. no --recipe)")


def check_tie(source: ModelSource, config: TieConfig | None) -> None:
    """The tie sets of ``config`` resolve on the meta skeleton of ``source`` (unique,
    layers, scope, stack), when it has one."""
    if config is None:
        return
    skeleton = source.skeleton()
    if skeleton is not None:
        build_tie_sets(skeleton, config)


def need_tokenizer(source: ModelSource, doing: str, fix: str) -> Any:
    """The tokenizer of ``source``, or ModelLoadError saying why ``doing`` needs one."""
    tokenizer = source.tokenizer()
    if tokenizer is None:
        why = f" ({source.tokenizer_note})" if source.tokenizer_note else ""
        raise ModelLoadError(f"{doing} needs a tokenizer and {source.spec} has none{why}; "
                             f"{fix}")
    return tokenizer


def check_output(path: str | os.PathLike) -> Path:
    """The output path, checked (see ``io.write.check_output_path``)."""
    from .io.write import check_output_path

    return check_output_path(path)

