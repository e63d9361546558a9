"""What a model needs before weightshare first shares anything in it.

Two things, done once per model by :func:`before_sharing` (every sharing method and
``load`` call it):

* the **baseline** (``core/baseline.py``): the model's bytes as the user had it;
* a guard on transformers' ``save_pretrained``: it would write the parametrization
  tensors (``...parametrizations.weight.original``) under names ``from_pretrained``
  does not know, which then load as *random* weights with no error (or, with shared
  tensors, fail). The guarded ``save_pretrained`` refuses with one line that points to
  the supported ways out: ``ws.save`` (the weightshare file) or the export to a plain
  transformers directory (``weightshare export FILE --to hf DIR``,
  ``weightshare.export.to_hf``). Once the model holds no shared weight any more
  (``ws.materialize_``), it saves as usual.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import SaveError
from .baseline import record_baseline
from .protocol import parametrized_attrs

GUARDED = ("save_pretrained",)


class _GuardedSave:
    """Stands in for ``model.save_pretrained`` (an instance attribute: the class and other
    models are untouched). A class rather than a closure, so deepcopy and pickle work."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        found = next(iter(parametrized_attrs(self.model)), None)
        if found is not None:
            raise SaveError(
                f"save_pretrained would write {found[0]} as parametrization tensors that "
                "from_pretrained loads as random weights; save with weightshare.save(model, "
                "path), or write a plain transformers directory with weightshare.export.to_hf("
                "model, dir) / `weightshare export FILE --to hf DIR`")
        save: Any = type(self.model).save_pretrained  # type: ignore[attr-defined]
        return save(self.model, *args, **kwargs)


def guard_save_pretrained(model: nn.Module) -> None:
    """Install the guarded ``save_pretrained`` on a transformers model (no-op otherwise)."""
    if callable(getattr(type(model), "save_pretrained", None)) \
            and not isinstance(model.__dict__.get("save_pretrained"), _GuardedSave):
        object.__setattr__(model, "save_pretrained", _GuardedSave(model))


def before_sharing(model: nn.Module) -> None:
    """Record the baseline and guard ``save_pretrained`` (see the module docstring)."""
    record_baseline(model)
    guard_save_pretrained(model)
