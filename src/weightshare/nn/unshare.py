"""unshare / reshare: a model's unshared twin, and back.

``unshare(model, example_input)`` copies the model and replaces every ``nn.Conv2d`` by a
``LocallyConnected2d`` and every ``nn.RNN`` / ``nn.GRU`` by an ``UnsharedRNN`` /
``UnsharedGRU``, each initialised from the layer it replaces (so the twin computes
exactly what the model computes until they are trained apart). The example input
fixes what the twins are built for: each convolution's input size, each recurrence's
number of steps. ``reshare(model)`` ties them back: filters and per-step weights
averaged (the least-squares tie). Together they measure what spatial and temporal
sharing are worth: parameters, memory, time per step, accuracy.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..core.batches import run_batch
from ..core.select import compile_patterns
from ..errors import SelectionError
from .local import LocallyConnected2d
from .recurrent import UnsharedGRU, UnsharedRNN, _Unshared

_SHARED = (nn.Conv2d, nn.RNN, nn.GRU)


def unshare(model: nn.Module, example_input: Any, include: Sequence[str] = (),
            exclude: Sequence[str] = ()) -> nn.Module:
    """The unshared twin of ``model`` (a new model; ``model`` is unchanged).

    ``include`` / ``exclude``: regular expressions searched in module names (the one
    pattern language). ``example_input``: what ``model`` is called with (a tensor, a
    tuple of arguments or a dict of keyword arguments); it is run once, without
    gradients, to see each layer's input.

    Example:
        >>> import torch, weightshare as ws
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU())
        >>> x = torch.randn(2, 1, 8, 8)
        >>> twin = ws.unshare(net, x)
        >>> type(twin[0]).__name__, torch.allclose(twin(x), net(x), atol=1e-6)
        ('LocallyConnected2d', True)
    """
    inc, exc = compile_patterns(include, "include"), compile_patterns(exclude, "exclude")
    twin = copy.deepcopy(model)
    chosen = {name: m for name, m in twin.named_modules()
              if isinstance(m, _SHARED) and (not inc or any(p.search(name) for p in inc))
              and not any(p.search(name) for p in exc)}
    if not chosen:
        raise SelectionError("no nn.Conv2d, nn.RNN or nn.GRU module to unshare (after include="
                             f"{list(include)}, exclude={list(exclude)}); unshare works on "
                             "those layers")
    seen: dict[str, tuple[int, ...]] = {}

    def record(name: str):  # noqa: ANN202 - a forward pre-hook
        def hook(module: nn.Module, args: tuple) -> None:
            if args and isinstance(args[0], torch.Tensor):
                seen.setdefault(name, tuple(args[0].shape))
        return hook

    handles = [m.register_forward_pre_hook(record(n)) for n, m in chosen.items()]
    try:
        with torch.no_grad():
            run_batch(twin, example_input)
    finally:
        for h in handles:
            h.remove()
    for name, module in chosen.items():
        if name not in seen:
            raise SelectionError(f"{name} did not run on the example input, so its input size "
                                 "is unknown; pass an input that reaches it, or exclude it")
        if not name:  # the model is itself one layer
            return _twin_of(module, seen[name])
        _replace(twin, name, _twin_of(module, seen[name]))
    return twin


def _twin_of(module: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    if isinstance(module, nn.Conv2d):
        return LocallyConnected2d.from_conv(module, shape[-2:])
    assert isinstance(module, (nn.RNN, nn.GRU))
    steps = shape[1] if module.batch_first and len(shape) == 3 else shape[0]
    if isinstance(module, nn.GRU):
        return UnsharedGRU.from_gru(module, steps)
    return UnsharedRNN.from_rnn(module, steps)


def reshare(model: nn.Module) -> nn.Module:
    """The inverse of :func:`unshare` (a new model): every ``LocallyConnected2d`` becomes a
    convolution whose filter is the mean of its position filters, every unshared recurrence
    a shared one with the mean of its per-step weights.

    Example:
        >>> import torch, weightshare as ws
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3))
        >>> back = ws.reshare(ws.unshare(net, torch.randn(1, 1, 8, 8)))
        >>> type(back[0]).__name__, torch.allclose(back[0].weight, net[0].weight)
        ('Conv2d', True)
    """
    twin = copy.deepcopy(model)
    found = [(n, m) for n, m in twin.named_modules()
             if isinstance(m, (LocallyConnected2d, _Unshared))]
    if not found:
        raise SelectionError("the model has no LocallyConnected2d or unshared recurrence to "
                             "tie back; reshare undoes ws.unshare")
    for name, module in found:
        shared = module.to_conv() if isinstance(module, LocallyConnected2d) \
            else module.to_shared()
        if not name:  # the model is itself one layer
            return shared
        _replace(twin, name, shared)
    return twin


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)
