"""soft_to_codebook_: the end of soft weight sharing, ordinary codebook weights.

Each weight the prior covers goes to its most responsible component; components that
no weight chose are dropped, and neighbours that collapsed onto each other (means closer
than ``merge`` times the wider one's standard deviation) are merged, as Ullrich et al.
do (they compare KL divergences; a narrow component on top of the wide zero one has a
large KL but is the same value). Each
surviving component's value becomes the mean of its members (least squares); the zero
component stays exactly zero. The result is one zero-sharing codebook
(``ZeroCodebookWeight``) shared by every covered layer: stored once, its codes at
``ceil(log2(components))`` bits, only the nonzeros' positions kept where that is smaller.
A prior with ``scale="layer"`` sees each layer in units of its own RMS: the codes are
still the components, but each layer gets its own codebook (the mean of the layer's
members of each component; ``4 * 2**bits`` bytes a layer).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...core.protocol import attach
from ...errors import DataError
from ..prune.zero_codebook import ZeroCodebookWeight
from .prior import SoftSharingPrior


def _collapsed(m1: float, p1: float, m2: float, p2: float, merge: float) -> bool:
    """Whether two components sit on each other: their means closer than ``merge`` times
    the wider one's standard deviation."""
    return abs(m1 - m2) <= merge * min(p1, p2) ** -0.5 if min(p1, p2) > 0 else m1 == m2


@torch.no_grad()
def soft_to_codebook_(model: nn.Module, prior: SoftSharingPrior, merge: float = 0.5
                      ) -> nn.Module:
    """Snap the weights ``prior`` covers to its components and make them codebook weights,
    in place; returns ``model``.

    Raises DataError when every component collapsed into zero, or when every weight of one
    layer would be 0 (the network would compute nothing through it); the model is then
    left as it was.

    Example:
        >>> import torch, weightshare as ws
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(30, 30))
        >>> prior = ws.SoftSharingPrior(model, components=5)
        >>> _ = ws.soft_to_codebook_(model, prior)
        >>> model[0].weight.unique().numel() <= 5
        True
    """
    weights = prior.weights_of(model)
    flat = torch.cat([w.detach().reshape(-1) for w in weights])
    seen = torch.cat([w.detach().reshape(-1) for w in prior.seen_weights(model)])
    means, precision, _ = prior.mixture()
    # most responsible component of every weight, in chunks to bound the (n, K) matrix
    chosen = torch.cat([prior.responsibilities(chunk).argmax(1)
                        for chunk in seen.split(1 << 18)])
    k = means.numel()
    counts = torch.bincount(chosen, minlength=k)
    # merge neighbours whose distributions collapsed onto each other (sorted by mean):
    # each run of close components becomes one, named by its zero or its largest member
    group_of = list(range(k))
    head = -1
    for j in sorted((j for j in range(k) if counts[j] > 0), key=lambda j: float(means[j])):
        if head >= 0 and _collapsed(float(means[head]), float(precision[head]),
                                    float(means[j]), float(precision[j]), merge):
            if j == 0 or (head != 0 and counts[j] > counts[head]):
                group_of = [j if g == head else g for g in group_of]
                head = j
            else:
                group_of[j] = head
        else:
            head = j
    label = group_of
    merged = torch.tensor(label)[chosen]  # component (merged) of every weight
    survivors = sorted({int(c) for c in merged.unique()} - {0})
    now = "" if prior.zero_std is None else f"; now {prior.zero_std:g}"
    fix = (f"narrow the zero component (zero_std, --zero-std{now}), lower the prior's weight "
           "or zero_mixing, or train longer before snapping")
    if not survivors:
        raise DataError("every component of the prior collapsed into zero: all weights would be "
                        f"0; {fix}")
    emptied = [name or "(model)" for (name, _), part in
               zip(prior.tensors, merged.split([w.numel() for w in weights])) if not part.any()]
    if emptied:
        raise DataError(f"the prior's zero component claimed every weight of {emptied[0]}: the "
                        f"network would compute nothing through it; {fix}")
    # codes ordered by value (as the prior sees it: per layer, the same order everywhere)
    values = torch.stack([seen[merged == c].double().mean() for c in survivors])
    order_by_value = values.argsort()
    code_of = torch.zeros(k, dtype=torch.int64)
    for code, idx in enumerate(order_by_value.tolist(), start=1):
        code_of[survivors[idx]] = code
    codes_flat = code_of[merged]
    bits = max(1, math.ceil(math.log2(len(survivors) + 1)))
    shared_book = None if prior.scale == "layer" else _codebook(flat, codes_flat, bits)
    start = 0
    for (name, attr), w, scale in zip(prior.tensors, weights, prior.scales):
        module = model.get_submodule(name) if name else model
        span = slice(start, start + w.numel())
        start += w.numel()
        codes = codes_flat[span].reshape(w.shape)
        # a component no weight of this layer chose keeps its mean, in the layer's units
        codebook = shared_book if shared_book is not None else _codebook(
            flat[span], codes_flat[span], bits, values[order_by_value] * scale)
        shared = ZeroCodebookWeight(codes.to(w.device), bits)
        attach(module, attr, shared, codebook)
        for alias in prior.aliases.get(name, ()) if attr == "weight" else ():
            attach(model.get_submodule(alias), "weight", shared, codebook)  # stays one weight
    return model


def _codebook(flat: torch.Tensor, codes: torch.Tensor, bits: int,
              fallback: torch.Tensor | None = None) -> nn.Parameter:
    """The (1, 2**bits - 1) table: entry c - 1 is the mean of the weights coded c (least
    squares), ``fallback[c - 1]`` (or the nearest filled entry) where none is; unused
    entries past the last code repeat the last value."""
    used = int(codes.max()) if codes.numel() else 0
    used = max(used, 0 if fallback is None else fallback.numel())
    sums = torch.zeros(used + 1, dtype=torch.float64).index_add_(0, codes, flat.double())
    counts = torch.bincount(codes, minlength=used + 1)[:used + 1]
    table = sums[1:] / counts[1:].clamp_min(1)
    empty = counts[1:] == 0
    if fallback is not None:
        table[empty] = fallback.double()[empty]
    elif bool(empty.any()):  # (only the shared book: every code there has members)
        raise AssertionError("a code without members")
    table = table.to(flat.dtype)
    if table.numel() < (1 << bits) - 1:  # pad unused entries with the last value
        table = torch.cat([table, table[-1:].expand((1 << bits) - 1 - table.numel())])
    return nn.Parameter(table.reshape(1, -1).to(flat.device))
