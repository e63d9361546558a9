"""Loading weightshare files: validate, check the fit with the model, then place.

New tensors are *assigned* (never ``copy_``-ed into the old ones), so a skeleton built
on the meta device works and every tensor keeps the dtype it was stored in: a round
trip is bit-identical. Shared weights are rebuilt through the protocol
(``from_scheme``), whatever their kind; ties are restored by registering the very
same object under every alias name. Every check runs, and every object is built,
before the model is touched: a file that does not fit leaves it as it was.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..core.baseline import BASELINE_KEY, set_baseline
from ..core.guard import guard_save_pretrained
from ..core.protocol import SharedWeight, attach, iter_shared, join, shared_of
from ..core.ties import record_ties, set_tie_map
from ..errors import FormatError, ModelLoadError, TieError
from .read import read_raw, read_validated, unpack_part
from .schema import Layout, part_name, scheme_body


def load(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """Load a weightshare file into ``model`` (or a model rebuilt from its config); eval mode.

    Everything is validated before anything is built. Shared weights come back as their
    parametrizations (codebooks, relaxed ties, ...), ties as one shared object,
    bit-identical.

    Example:
        >>> import torch, tempfile, os
        >>> from weightshare.io import save
        >>> m = torch.nn.Linear(3, 2)
        >>> p = save(m, os.path.join(tempfile.mkdtemp(), "m.safetensors"))
        >>> torch.equal(load(p, torch.nn.Linear(3, 2)).weight, m.weight)
        True
    """
    meta, infos, layout = read_validated(path)
    if model is None:
        model = _build_model(meta, path)
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"model must be a torch.nn.Module, got {type(model).__name__}; pass "
                             "the skeleton to load into")
    raw = read_raw(Path(path), infos)
    apply_file(model, meta, layout, raw, str(path))
    set_tie_map(model, {})
    record_ties(model)
    set_baseline(model, (meta.get("extra") or {}).get(BASELINE_KEY))
    guard_save_pretrained(model)
    return model.eval()


def _build_model(meta: dict, path: str | os.PathLike) -> nn.Module:
    entry = meta["model"]
    if entry["source"] != "transformers":
        raise FormatError(f"{path} holds a plain torch model ({entry['class'][:80]}); pass "
                          "model= the skeleton to load into, e.g. load(path, model=MyNet())")
    try:
        from ..models import model_from_config  # transformers is optional
    except ImportError as e:
        raise ModelLoadError(f"cannot rebuild {entry['class']} ({e}); install weightshare[hf] or "
                             "pass model= the skeleton to load into") from None
    return model_from_config(entry["class"], entry["config"])


def _few(names: set[str]) -> str:
    shown = [n if len(n) <= 80 else n[:77] + "..." for n in sorted(names)[:5]]
    more = f" (+{len(names) - 5} more)" if len(names) > 5 else ""
    return ", ".join(shown) + more


@dataclass
class _Slot:
    """One name the model computes with: shape, parameter or buffer, dtype, owner."""

    shape: tuple[int, ...]
    is_param: bool
    floating: bool
    module: nn.Module
    attr: str
    old: torch.Tensor | None = field(default=None)


def _model_slots(model: nn.Module) -> dict[str, _Slot]:
    """Every name of the model a file may fill: shared weights (by the name users know)
    and dense parameters and persistent buffers."""
    slots: dict[str, _Slot] = {}
    for fqn, module, attr, weight, original in iter_shared(model, remove_duplicate=False):
        shape = type(weight).dense_shape(weight.scheme(original))
        slots[fqn] = _Slot(shape, True, original.is_floating_point(), module, attr, original)
    for name, t in model.state_dict(keep_vars=True).items():
        if ".parametrizations." in f".{name}":
            continue
        mpath, _, attr = name.rpartition(".")
        module = model.get_submodule(mpath) if mpath else model
        slots[name] = _Slot(tuple(t.shape), attr in module._parameters,
                            t.is_floating_point() or t.is_complex(), module, attr, t)
    return slots


def apply_file(model: nn.Module, meta: dict, layout: Layout, raw: dict[str, torch.Tensor],
               path: str) -> None:
    """Place the dense tensors, shared weights and ties of a validated file into ``model``."""
    schemes, ties = meta["schemes"], meta["ties"]
    slots = _model_slots(model)
    want = _wanted(layout, raw, schemes, ties)
    _check_fit(model, slots, want, schemes, layout.parts, ties, path)
    default = next((t.device for t in itertools.chain(model.parameters(), model.buffers())
                    if not t.is_meta), torch.device("cpu"))

    # build every object first: nothing below can fail on the file's content
    objects: dict[str, torch.Tensor] = {}  # stored tensor name -> the object placed

    def stored_object(name: str, slot: _Slot | None, like_param: bool) -> torch.Tensor:
        if name not in objects:
            spec = layout.parts.get(name)
            t = raw[name] if spec is None else unpack_part(raw[name], spec)
            device = default if slot is None or slot.old is None or slot.old.is_meta \
                else slot.old.device
            t = t.to(device)
            if like_param:
                grad = (slot is None or slot.old is None or slot.old.requires_grad) and (
                    t.is_floating_point() or t.is_complex())
                t = nn.Parameter(t, requires_grad=grad)
            objects[name] = t
        return objects[name]

    dense = {n: stored_object(n, slots[n], slots[n].is_param) for n in layout.dense}
    built: dict[str, tuple[SharedWeight, torch.Tensor]] = {}
    for fqn, cls in layout.weights.items():
        body = scheme_body(schemes[fqn])
        slot = slots[fqn]
        original = stored_object(layout.slot(fqn, cls.original_part, ties), slot, True)
        own = {part: unpack_part(raw[part_name(fqn, part)], spec).to(original.device)
               for part, spec in layout.specs[fqn].items() if part != cls.original_part}
        try:
            weight = cls.from_scheme(body, own).to(original.device)
        except Exception as e:  # the kind could not rebuild itself from what the file holds
            raise FormatError(f"{path}: shared weight {fqn} ({cls.kind}) cannot be rebuilt "
                              f"({type(e).__name__}: {str(e)[:80]}); the file is corrupt"
                              ) from None
        built[fqn] = (weight, original)

    # place: from here on the model changes
    for name, obj in dense.items():
        _place_dense(slots[name], obj)
    for fqn, (weight, original) in built.items():
        attach(slots[fqn].module, slots[fqn].attr, weight, original)  # type: ignore[arg-type]
    for alias, source in ties.items():
        if alias in layout.parts:
            continue  # a part shared by two weights: placed with them
        if source in built:
            attach(slots[alias].module, slots[alias].attr, *built[source])  # type: ignore[arg-type]
        else:
            _place_dense(slots[alias], objects[source])
    _verify(model, layout, built, objects)


def _wanted(layout: Layout, raw: dict[str, torch.Tensor], schemes: dict,
            ties: dict[str, str]) -> dict[str, tuple[tuple[int, ...], bool | None]]:
    """{model name: (shape, floating)} the file fills; floating None where any will do."""
    want: dict[str, tuple[tuple[int, ...], bool | None]] = {
        n: (tuple(raw[n].shape), raw[n].is_floating_point() or raw[n].is_complex())
        for n in layout.dense}
    for fqn, cls in layout.weights.items():
        want[fqn] = (cls.dense_shape(scheme_body(schemes[fqn])), None)
    for alias, source in ties.items():
        if alias in layout.parts:
            continue
        if source in want:
            want[alias] = want[source]
        else:  # a dense name tied to a part of a shared weight
            spec = layout.parts[source]
            want[alias] = (spec.shape, spec.is_float)
    return want


def _check_fit(model: nn.Module, slots: dict[str, _Slot], want: dict, schemes: dict,
               parts: dict, ties: dict[str, str], path: str) -> None:
    """Names, shapes, dtypes, parameter-vs-buffer and shared modules of the file match the
    model."""
    if set(want) - set(slots):
        raise FormatError(f"{path} holds tensors the model lacks: {_few(set(want) - set(slots))}"
                          "; load it into the model it was saved from")
    if set(slots) - set(want):
        raise FormatError(f"{path} lacks tensors the model has: {_few(set(slots) - set(want))}; "
                          "load it into the model it was saved from")
    owners: dict[tuple[int, str], str] = {}
    for name, (shape, floating) in want.items():
        slot = slots[name]
        if slot.shape != shape:
            raise FormatError(f"{name} has shape {list(shape)} in {path} but {list(slot.shape)} "
                              "in the model; load it into a model of the same configuration")
        if floating is not None and floating != slot.floating:
            kind = "floating-point" if slot.floating else "integer"
            raise FormatError(f"{name} is {kind} in the model but not in {path}; load it into "
                              "the model it was saved from")
        root = ties.get(name, name)
        if owners.setdefault((id(slot.module), slot.attr), root) != root:
            raise TieError(f"the model shares {name} with {owners[(id(slot.module), slot.attr)]} "
                           "but the file stores them separately; load into a freshly built "
                           "model, or untie_ it first")
        param = root in schemes or root in parts or slots[root].is_param
        if param != slot.is_param:
            raise FormatError(f"{name} is a buffer in the model but {path} stores it as a shared "
                              f"weight or ties it to {root}; load it into the model it was saved "
                              "from")
    for mname, module in model.named_modules():
        left = [b for b in module._non_persistent_buffers_set
                if module._buffers.get(b) is not None and module._buffers[b].is_meta]
        if left:
            raise ModelLoadError(f"{join(mname, left[0])} is on the meta device and not stored "
                                 "in files (a non-persistent buffer); build the model on a real "
                                 "device")


def _place_dense(slot: _Slot, obj: torch.Tensor) -> None:
    module, attr = slot.module, slot.attr
    if parametrize.is_parametrized(module, attr):
        parametrize.remove_parametrizations(module, attr, leave_parametrized=False)
    if isinstance(obj, nn.Parameter):
        module._buffers.pop(attr, None)
        module._parameters[attr] = obj
    else:
        module._buffers[attr] = obj


def _verify(model: nn.Module, layout: Layout, built: dict, objects: dict) -> None:
    """Every name holds what we put there (internal check: _check_fit rules out conflicts)."""
    state = model.state_dict(keep_vars=True)
    for fqn, (weight, original) in built.items():
        found = shared_of(*_owner(model, fqn))
        if found is None or found[0] is not weight or found[1] is not original:
            raise TieError(f"the model shares {fqn} with another name but the file stores them "
                           "separately; load into a freshly built model, or untie_ it first")
    for name in layout.dense:
        if state.get(name) is not objects[name]:
            raise TieError(f"the model shares {name} with another name but the file stores them "
                           "separately; load into a freshly built model, or untie_ it first")


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    mpath, _, attr = name.rpartition(".")
    return (model.get_submodule(mpath) if mpath else model), attr
