"""The soft row's refit: after the prior has chosen the zeros, the survivors train freely
(the zeros kept) and each layer is clustered again with a pinned zero, at bits per layer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core.protocol import materialize_
from ..errors import ConfigError
from ..methods.codebook import ClusterConfig, cluster_
from ..methods.tie import untie_

LAYERS = (nn.Linear, nn.Conv2d)  # the layers the refit keeps zeros in and re-clusters


def check_refit_layers(model: nn.Module, bits: str, name: str = "the network") -> None:
    """ConfigError when ``bits`` (:func:`refit_bits`) names a layer ``model`` (called
    ``name`` in the message) does not have: before any training, since :func:`recluster_`
    would find out only at its end."""
    named, _ = refit_bits(bits)
    layers = [n for n, m in model.named_modules() if isinstance(m, LAYERS)]
    unknown = sorted(set(named) - set(layers))
    if unknown:
        raise ConfigError(f"soft_refit_bits names {unknown[0]!r}, which {name} does not have; "
                          f"its layers: {', '.join(layers)}")


def recluster_(model: nn.Module, bits: str, train: Callable[[], Any]) -> nn.Module:
    """Turn ``model``'s shared weights back into plain ones (ties dropped), run ``train()``
    (which should keep the zeros: :class:`KeepZeros`), then cluster every layer to a
    zero-sharing codebook of the bits ``bits`` gives it (:func:`refit_bits`)."""
    materialize_(model, keep_ties=False)
    untie_(model)
    train()
    named, rest = refit_bits(bits)
    for name, b in named.items():
        cluster_(model, ClusterConfig(bits=b, zero=True, min_size=0,
                                      include=(f"^{re.escape(name)}$",)), progress=False)
    exclude = tuple(f"^{re.escape(name)}$" for name in named)
    cluster_(model, ClusterConfig(bits=rest, zero=True, min_size=0, exclude=exclude),
             progress=False)
    return model


def refit_(model: nn.Module, bits: str, train: Callable[..., Any], epochs: float,
           finetune: float, lr: float, seed: int,
           measure: Callable[[str], Any] | None = None) -> nn.Module:
    """The soft row's refit, in place: :func:`recluster_` with ``epochs`` of free training
    at ``lr`` (zeros kept, seed ``seed + 3``), then ``finetune`` epochs of the codebooks at
    ``lr / 4`` (seed ``seed + 4``). ``train(model, epochs, lr, seed, **kw)`` trains;
    ``measure(stage)``, if given, is called after the free epochs (``"free"``) and after
    clustering (``"clustered"``)."""
    def free() -> None:
        train(model, epochs, lr, seed + 3, callbacks=[KeepZeros(model)])
        if measure:
            measure("free")

    recluster_(model, bits, free)
    if measure:
        measure("clustered")
    if finetune:
        train(model, finetune, lr / 4, seed + 4)
    return model


def refit_bits(spec: str) -> tuple[dict[str, int], int]:
    """``soft_refit_bits`` parsed: ({layer: bits}, bits of the other layers).

    Example:
        >>> refit_bits("fc1=2,3"), refit_bits("4")
        (({'fc1': 2}, 3), ({}, 4))
    """
    *pairs, last = [part.strip() for part in str(spec).split(",")]
    named: dict[str, int] = {}
    try:
        for pair in pairs:
            name, _, bits = pair.partition("=")
            if not name or not bits:
                raise ValueError
            named[name.strip()] = int(bits)
        rest = int(last)
    except ValueError:
        raise ConfigError(f"soft_refit_bits must be B or LAYER=B,...,B (e.g. fc1=2,3), got "
                          f"{spec!r}") from None
    if not all(1 <= b <= 8 for b in (*named.values(), rest)):
        raise ConfigError(f"soft_refit_bits: bits must be 1..8, got {spec!r}")
    return named, rest


class KeepZeros:
    """A step callback for ``train.fit``: the weights of ``model``'s linear and
    convolution layers that are exactly 0 now stay 0 (masked after every step).

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(3, 2)
        >>> with torch.no_grad():
        ...     _ = m.weight[0].zero_()
        >>> keep = KeepZeros(m)
        >>> with torch.no_grad():
        ...     _ = m.weight.add_(1.0)
        >>> keep(None)
        >>> m.weight[0].tolist(), bool((m.weight[1] != 0).all())
        ([0.0, 0.0, 0.0], True)
    """

    def __init__(self, model: nn.Module) -> None:
        self.weights = [m.weight for m in model.modules() if isinstance(m, LAYERS)]
        self.masks = [w.detach() != 0 for w in self.weights]

    @torch.no_grad()
    def __call__(self, info: Any) -> None:
        for w, mask in zip(self.weights, self.masks):
            w.mul_(mask)
