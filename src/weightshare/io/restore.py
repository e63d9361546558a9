"""Loading weightshare files: validate, check the fit with the model, read, then place.

The order is the contract: the header and metadata are validated, the model (given, or
rebuilt on the meta device from the file's config) is checked against them, every
tensor is read with its checksum verified and entropy-coded parts decoded, every shared
weight is rebuilt through the protocol (``from_scheme``, or ``from_stored`` for a runtime
form such as ``"packed"``) — and only then is the model touched. A file that does not
fit, or is corrupt, leaves the model as it was.

New tensors are *assigned* (never ``copy_``-ed into the old ones), so a skeleton on the
meta device works and every tensor keeps the dtype it was stored in: a round trip is
bit-identical. Ties are restored by registering the very same object under every alias.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..core.baseline import BASELINE_KEY, set_baseline
from ..core.guard import guard_save_pretrained
from ..core.protocol import SharedWeight, attach, remove_parametrization, shared_of
from ..core.registry import TRAIN, check_runtime, runtime_class
from ..core.ties import record_ties, set_tie_map
from ..errors import FormatError, ModelLoadError, TieError
from .fit import Slot, check_buffers, check_fit, model_slots, wanted
from .read import Reader, read_validated
from .schema import Layout, part_name, scheme_body
from .skeleton import build_skeleton


def load(path: str | os.PathLike, model: nn.Module | None = None, *,
         runtime: str = TRAIN) -> nn.Module:
    """Load a weightshare file into ``model`` (or a model rebuilt from its config); eval mode.

    ``runtime`` picks the form shared weights take: ``"train"`` (default) the trainable
    parametrizations (codebooks, relaxed ties, ...) that fine-tuning needs; ``"packed"``
    the inference forms kinds register (codebook codes stay bit-packed in memory and
    layers compute from them; kinds without one keep their training form).
    ``weightshare.materialize_`` turns either into plain dense weights.

    Everything is validated and read before the model is touched; ties come back as one
    shared object; a round trip is bit-identical.

    Example:
        >>> import torch, tempfile, os
        >>> from weightshare.io import save
        >>> m = torch.nn.Linear(3, 2)
        >>> p = save(m, os.path.join(tempfile.mkdtemp(), "m.safetensors"))
        >>> torch.equal(load(p, torch.nn.Linear(3, 2)).weight, m.weight)
        True
    """
    runtime = check_runtime(runtime)
    meta, infos, layout = read_validated(path)
    built_here = model is None
    if model is None:
        model = build_skeleton(meta, infos, layout, str(path), Path(path).stat().st_size)
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"model must be a torch.nn.Module, got {type(model).__name__}; pass "
                             "the skeleton to load into")
    schemes, ties = meta["schemes"], meta["ties"]
    slots = model_slots(model)
    check_fit(model, slots, wanted(layout, infos, schemes, ties), layout, schemes, ties,
              str(path), dtypes=not built_here)
    check_buffers(model)
    with Reader(path, (meta, infos, layout)) as reader:
        objects, built = _build(model, reader, slots, runtime)
    _place(model, layout, ties, slots, objects, built)
    _verify(model, layout, built, objects)
    set_tie_map(model, {})
    record_ties(model)
    set_baseline(model, (meta.get("extra") or {}).get(BASELINE_KEY))
    guard_save_pretrained(model)
    return model.eval()


def _build(model: nn.Module, reader: Reader, slots: dict[str, Slot], runtime: str
           ) -> tuple[dict[str, torch.Tensor], dict[str, tuple[SharedWeight, torch.Tensor]]]:
    """Read every tensor and build every object the model will hold; the model is not
    touched. Returns (stored name -> placed tensor, weight fqn -> (weight, original))."""
    meta, layout, path = reader.metadata, reader.layout, reader.path
    schemes, ties = meta["schemes"], meta["ties"]
    default = next((t.device for t in itertools.chain(model.parameters(), model.buffers())
                    if not t.is_meta), torch.device("cpu"))
    objects: dict[str, torch.Tensor] = {}

    def stored_object(name: str, slot: Slot | None, like_param: bool) -> torch.Tensor:
        if name not in objects:
            t = reader.part(name, packed=False)
            device = default if slot is None or slot.old is None or slot.old.is_meta \
                else slot.old.device
            t = t.to(device)
            if like_param:
                grad = (slot is None or slot.old is None or slot.old.is_meta
                        or slot.old.requires_grad) and (t.is_floating_point() or t.is_complex())
                t = nn.Parameter(t, requires_grad=grad)
            objects[name] = t
        return objects[name]

    for name in layout.dense:
        stored_object(name, slots[name], slots[name].is_param)
    built: dict[str, tuple[SharedWeight, torch.Tensor]] = {}
    for fqn, cls in layout.weights.items():
        body = scheme_body(schemes[fqn])
        original = stored_object(layout.slot(fqn, cls.original_part, ties), slots[fqn], True)
        form = runtime_class(cls.kind, runtime) if runtime != TRAIN else None
        if form is not None and not form.handles(body):
            form = None  # e.g. codebooks with scales or outliers: no packed form yet
        own_parts = [p for p in layout.specs[fqn] if p != cls.original_part]
        try:
            if form is not None:
                own = {p: reader.part(part_name(fqn, p), packed=True).to(original.device)
                       for p in own_parts}
                weight = form.from_stored(body, own)
            else:
                own = {p: reader.part(part_name(fqn, p), packed=False).to(original.device)
                       for p in own_parts}
                weight = cls.from_scheme(body, own)
            weight = weight.to(original.device)
        except FormatError:
            raise
        except Exception as e:  # the kind could not rebuild itself from what the file holds
            raise FormatError(f"{path}: shared weight {fqn} ({cls.kind}) cannot be rebuilt "
                              f"({type(e).__name__}: {str(e)[:80]}); the file is corrupt"
                              ) from None
        built[fqn] = (weight, original)
    return objects, built


def _place(model: nn.Module, layout: Layout, ties: dict[str, str], slots: dict[str, Slot],
           objects: dict[str, torch.Tensor],
           built: dict[str, tuple[SharedWeight, torch.Tensor]]) -> None:
    """Put the built objects into the model (from here on the model changes), in the
    model's own order (the order of its parameters stays as it was)."""
    order = {name: i for i, name in enumerate(slots)}
    for name in layout.dense:
        _place_dense(slots[name], objects[name])
    for fqn in sorted(built, key=order.__getitem__):
        weight, original = built[fqn]
        attach(slots[fqn].module, slots[fqn].attr, weight, original)  # type: ignore[arg-type]
    for alias, source in ties.items():
        if alias in layout.parts:
            continue  # a part shared by two weights: placed with them
        if source in built:
            attach(slots[alias].module, slots[alias].attr, *built[source])  # type: ignore[arg-type]
        else:
            _place_dense(slots[alias], objects[source])


def _place_dense(slot: Slot, obj: torch.Tensor) -> None:
    module, attr = slot.module, slot.attr
    if parametrize.is_parametrized(module, attr):
        remove_parametrization(module, attr)
    if isinstance(obj, nn.Parameter):
        module._buffers.pop(attr, None)
        module._parameters[attr] = obj
    else:
        module._buffers[attr] = obj


def _verify(model: nn.Module, layout: Layout, built: dict, objects: dict) -> None:
    """Every name holds what we put there (internal check: check_fit rules out conflicts)."""
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
