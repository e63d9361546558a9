"""One hierarchy of errors, so callers (and the CLI) can catch everything the
user can cause with ``except WeightShareError``.

Every message says what happened, shows the offending value and says what to
do next, on one line.
"""

from __future__ import annotations


class WeightShareError(ValueError):
    """Base class of every error a user of weightshare can cause."""


class ConfigError(WeightShareError):
    """A configuration value is invalid (bits out of range, unknown key, ...)."""


class SelectionError(WeightShareError):
    """A name pattern matched nothing, or a target cannot be shared."""


class ShapeError(WeightShareError):
    """A shape does not divide or does not match."""


class DataError(WeightShareError):
    """Input values are unusable (NaN, inf, empty)."""


class FormatError(WeightShareError):
    """A file is not a valid weightshare file (missing, truncated, corrupt, wrong version)."""


class ModelLoadError(WeightShareError):
    """A model could not be found or loaded."""


class TieError(WeightShareError):
    """A tie cannot be made or has been broken."""


class SaveError(WeightShareError):
    """A model cannot be written (missing directory, unsupported parametrization, ...)."""
