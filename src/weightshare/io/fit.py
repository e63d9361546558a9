"""Does a file fit a model? Names, shapes, dtypes, parameter-vs-buffer and shared modules,
checked from the validated header alone, before any tensor is read or the model touched."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.protocol import iter_shared, join
from ..errors import FormatError, ModelLoadError, TieError
from .container import TAG_DTYPES
from .header import TensorInfo, quote
from .schema import Layout, scheme_body


@dataclass
class Slot:
    """One name the model computes with: shape, parameter or buffer, dtype, owner."""

    shape: tuple[int, ...]
    is_param: bool
    dtype: torch.dtype
    module: nn.Module
    attr: str
    old: torch.Tensor | None = field(default=None)

    @property
    def floating(self) -> bool:
        return self.dtype.is_floating_point or self.dtype.is_complex


@dataclass(frozen=True)
class Want:
    """What the file puts under one model name: shape and dtype (None: a shared weight,
    whose dense dtype its scheme decides)."""

    shape: tuple[int, ...]
    dtype: torch.dtype | None
    original: torch.dtype | None = None  # a shared weight: the dtype it computes in


def model_slots(model: nn.Module) -> dict[str, Slot]:
    """Every name of the model a file may fill: shared weights (by the name users know)
    and dense parameters and persistent buffers."""
    slots: dict[str, Slot] = {}
    for fqn, module, attr, weight, original in iter_shared(model, remove_duplicate=False):
        scheme = weight.scheme(original)
        dtype = original.dtype
        if original.is_floating_point():  # the dtype it computes in (a wider codebook)
            dtype = getattr(torch, type(weight).dense_dtype_name(scheme))
        slots[fqn] = Slot(type(weight).dense_shape(scheme), True, dtype, module, attr, original)
    for name, t in model.state_dict(keep_vars=True).items():
        if ".parametrizations." in f".{name}":
            continue
        mpath, _, attr = name.rpartition(".")
        module = model.get_submodule(mpath) if mpath else model
        slots[name] = Slot(tuple(t.shape), attr in module._parameters, t.dtype, module, attr, t)
    return slots


def wanted(layout: Layout, infos: dict[str, TensorInfo], schemes: dict,
           ties: dict[str, str]) -> dict[str, Want]:
    """{model name: what the file puts there}, from the header alone."""
    want = {n: Want(infos[n].shape, TAG_DTYPES[infos[n].dtype]) for n in layout.dense}
    for fqn, cls in layout.weights.items():
        spec, body = layout.specs[fqn][cls.original_part], scheme_body(schemes[fqn])
        want[fqn] = Want(cls.dense_shape(body), None,
                         getattr(torch, cls.dense_dtype_name(body)) if spec.is_float else None)
    for alias, source in ties.items():
        if alias in layout.parts:
            continue
        if source in want:
            want[alias] = want[source]
        else:  # a dense name tied to a part of a shared weight
            spec = layout.parts[source]
            want[alias] = Want(spec.shape, getattr(torch, spec.dtype))
    return want


def names_filled(layout: Layout, ties: dict[str, str]) -> int:
    """How many model names the file fills (dense tensors, shared weights, tie aliases)."""
    return len(layout.dense) + len(layout.weights) + sum(a not in layout.parts for a in ties)


def _few(names: set[str]) -> str:
    shown = [n if len(n) <= 80 else n[:77] + "..." for n in sorted(names)[:5]]
    more = f" (+{len(names) - 5} more)" if len(names) > 5 else ""
    return ", ".join(shown) + more


def check_fit(model: nn.Module, slots: dict[str, Slot], want: dict[str, Want], layout: Layout,
              schemes: dict, ties: dict[str, str], path: str, *, dtypes: bool) -> None:
    """Raise unless the file fits the model. ``dtypes``: also require each dense tensor to
    have the dtype the model has there (a skeleton the caller built; a skeleton built from
    the file's own config takes the file's dtypes)."""
    if set(want) - set(slots):
        raise FormatError(f"{path} holds tensors the model lacks: {_few(set(want) - set(slots))}"
                          "; load it into the model it was saved from")
    if set(slots) - set(want):
        raise FormatError(f"{path} lacks tensors the model has: {_few(set(slots) - set(want))}; "
                          "load it into the model it was saved from")
    owners: dict[tuple[int, str], str] = {}
    for name, w in want.items():
        slot = slots[name]
        if slot.shape != w.shape:
            raise FormatError(f"{quote(name)} has shape {list(w.shape)} in {path} but "
                              f"{list(slot.shape)} in the model; load it into a model of the same "
                              "configuration")
        if w.dtype is not None:
            floating = w.dtype.is_floating_point or w.dtype.is_complex
            if floating != slot.floating:
                kind = "floating-point" if slot.floating else "integer"
                raise FormatError(f"{quote(name)} is {kind} in the model but {w.dtype} in {path}; "
                                  "load it into the model it was saved from")
            if dtypes and w.dtype != slot.dtype:
                raise FormatError(f"{quote(name)} is {w.dtype} in {path} but {slot.dtype} in the "
                                  f"model; convert the model first (e.g. model.to({w.dtype}))")
        elif dtypes and w.original is not None and slot.floating and w.original != slot.dtype:
            raise FormatError(f"{quote(name)} is {w.original} in {path} but {slot.dtype} in the "
                              f"model; convert the model first (e.g. model.to({w.original}))")
        root = ties.get(name, name)
        if owners.setdefault((id(slot.module), slot.attr), root) != root:
            raise TieError(f"the model shares {name} with {owners[(id(slot.module), slot.attr)]} "
                           "but the file stores them separately; load into a freshly built "
                           "model, or untie_ it first")
        param = root in schemes or root in layout.parts or slots[root].is_param
        if param != slot.is_param:
            raise FormatError(f"{quote(name)} is a buffer in the model but {path} stores it as a "
                              f"shared weight or ties it to {quote(root)}; load it into the model "
                              "it was saved from")


def check_buffers(model: nn.Module) -> None:
    """ModelLoadError if a buffer the file cannot fill (non-persistent) is on the meta device."""
    for mname, module in model.named_modules():
        left = [b for b in module._non_persistent_buffers_set
                if module._buffers.get(b) is not None and module._buffers[b].is_meta]
        if left:
            raise ModelLoadError(f"{join(mname, left[0])} is on the meta device and not stored "
                                 "in files (a non-persistent buffer); build the model on a real "
                                 "device")


def non_persistent_bytes(model: nn.Module) -> int:
    """Bytes of the buffers a model computes itself (not stored in files)."""
    total = 0
    for module in model.modules():
        for b in module._non_persistent_buffers_set:
            t = module._buffers.get(b)
            if t is not None:
                total += math.prod(t.shape) * t.element_size()
    return total
