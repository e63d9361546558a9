"""Converting a model's shared weights between their forms (``"train"`` <-> ``"packed"``).

Generic over the protocol: a form is rebuilt from the kind's scheme and parts, so a
kind that registers a runtime form (``core.registry.register_runtime``) converts with no
change here.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.protocol import SharedWeight, attach, iter_shared
from ..core.registry import TRAIN, check_runtime, runtime_class
from ..io.bitpack import pack_codes


def _convert(weight: SharedWeight, original: torch.Tensor,
             target: type[SharedWeight]) -> SharedWeight:
    scheme = {k: v for k, v in weight.scheme(original).items()}
    specs = type(weight).part_specs(scheme)
    own = [p for p in specs if p != weight.original_part]
    if target is runtime_class(weight.kind, TRAIN):
        return target.from_scheme(scheme, weight.parts()).to(original.device)
    packed = weight.packed_parts()
    logical = {} if set(packed) >= set(own) else weight.parts()
    stored = {}
    for p in own:
        bits = specs[p].bits
        stored[p] = packed[p] if p in packed else (
            logical[p] if bits is None else pack_codes(logical[p], bits))
    return target.from_stored(scheme, stored).to(original.device)


@torch.no_grad()
def to_runtime_(model: nn.Module, runtime: str = "packed") -> nn.Module:
    """Turn every shared weight of ``model`` into its ``runtime`` form, in place; returns
    ``model``. ``"packed"``: the inference forms kinds register (codebook codes kept
    bit-packed in memory, layers computing from them); ``"train"``: the trainable forms.
    Kinds without such a form are left as they are; ties stay ties.

    Example:
        >>> import torch, weightshare as ws
        >>> m = torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Linear(8, 10))
        >>> m[1].weight = m[0].weight
        >>> _ = ws.cluster_(m, ws.ClusterConfig(bits=2, min_size=0))
        >>> _ = to_runtime_(m, "packed")
        >>> type(m[0].parametrizations.weight[0]).__name__, ws.find_ties(m)
        ('PackedCodebookWeight', [['0.weight', '1.weight']])
    """
    runtime = check_runtime(runtime)
    done: dict[tuple[int, int], SharedWeight] = {}
    for _fqn, module, attr, weight, original in list(iter_shared(model, remove_duplicate=False)):
        key = (id(weight), id(original))
        if key not in done:
            target = runtime_class(weight.kind, runtime)
            if target is not None and not target.handles(weight.scheme(original)):
                target = None  # a scheme the form does not cover stays as it is
            done[key] = weight if target is None or type(weight) is target \
                else _convert(weight, original, target)
        if done[key] is not weight:
            attach(module, attr, done[key], original)
    return model
