"""Rebuilding a transformers model from the config a file records, safely.

A hostile file may record any config: a million layers, a vocabulary of 10^12 tokens. So
the config is checked and the model is built twice, never holding a weight:

1. its integers must be plausible (|n| < 2**31; fields counting layers at most the
   number of names the file fills) and every value must have the type of the config
   class's default for it;
2. a *probe* is built entirely on the meta device (no memory, no initialisation) under a
   budget: building stops as soon as it registers more tensors than the file could fill.
   The probe must then fit the file, name by name and shape by shape, and the buffers it
   would compute itself (position ids, masks) must be small;
3. only then is the skeleton built, parameters on the meta device, those buffers real.

The loader then assigns the file's tensors. Nothing is allocated that the file's own size
does not bound.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

from ..errors import FormatError, ModelLoadError, WeightShareError
from .fit import check_fit, model_slots, names_filled, non_persistent_bytes, wanted
from .header import TensorInfo, quote
from .schema import Layout

MAX_CONFIG_INT = 2**31
MAX_CONFIG_DEPTH = 32
MIN_BUFFER_BUDGET = 16 * 2**20  # computed buffers may take this much, or the file's size
_FACTORIES = _device_constructors()


class _Budget:
    """Counts tensors registered while a model is built; FormatError past ``limit``."""

    def __init__(self, limit: int, where: str) -> None:
        self.limit, self.where, self.count = limit, where, 0

    def tick(self) -> None:
        self.count += 1
        if self.count > self.limit:
            raise FormatError(f"{self.where}: its model config builds more tensors than the file "
                              f"could fill ({self.limit} at most); the config is corrupt or "
                              "forged")


@contextlib.contextmanager
def _patched(budget: _Budget, params_on_meta: bool) -> Iterator[None]:
    """Count every registered parameter and buffer; with ``params_on_meta`` move each
    parameter to the meta device as it is registered (its initialisation then costs
    nothing). Restored on exit, even on error."""
    reg_param, reg_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def register_parameter(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        budget.tick()
        if params_on_meta and param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        reg_param(self, name, param)

    def register_buffer(self: nn.Module, name: str, tensor: torch.Tensor | None,
                        persistent: bool = True) -> None:
        budget.tick()
        reg_buffer(self, name, tensor, persistent)

    nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
    nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = reg_param  # type: ignore[method-assign]
        nn.Module.register_buffer = reg_buffer  # type: ignore[method-assign]


SMALL = 64 * 1024  # bytes: tensors this small are made for real while building (see below)


class _LargeOnMeta(TorchFunctionMode):
    """While building the skeleton, every tensor factory (torch.empty, zeros, arange, ...)
    makes tensors of SMALL bytes or more on the meta device, smaller ones for real.

    Parameters are large and the file replaces them anyway; the buffers a model computes
    itself (position ids) are small and real. Why not make parameters for real and drop
    them: allocating and freeing multi-megabyte blocks raises glibc's dynamic mmap
    threshold, after which a model's activations come from the heap and fragment it (a
    packed model's peak memory grew by 150 MB more than its weights that way)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if func in _FACTORIES and kwargs.get("device") is None:
            probe = func(*args, **{**kwargs, "device": "meta"})
            if isinstance(probe, torch.Tensor) and probe.numel() * probe.element_size() >= SMALL:
                return probe
        return func(*args, **kwargs)


def check_config(config: Any, limit_layers: int, where: str) -> None:
    """FormatError unless every value of ``config`` is plausible (see the module doc)."""

    def walk(value: Any, key: str, depth: int) -> None:
        if depth > MAX_CONFIG_DEPTH:
            raise FormatError(f"{where}: model config nests deeper than {MAX_CONFIG_DEPTH} "
                              "levels; the file is corrupt")
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k, depth + 1)
        elif isinstance(value, list):
            for v in value:
                walk(v, key, depth + 1)
        elif isinstance(value, int) and not isinstance(value, bool):
            if abs(value) >= MAX_CONFIG_INT:
                raise FormatError(f"{where}: model config {quote(key)} = {str(value)[:30]} is out "
                                  "of range; the file is corrupt")
            if (key.endswith("layers") or key in ("n_layer", "num_layer")) and \
                    value > limit_layers:
                raise FormatError(f"{where}: model config {quote(key)} = {value} is more layers "
                                  f"than the file has tensors ({limit_layers}); the config is "
                                  "corrupt or forged")

    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise FormatError(f"{where}: model config has no model_type; the file is corrupt")
    walk(config, "config", 0)


def _same_type(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def check_types(config: dict, where: str) -> None:
    """FormatError unless every value of ``config`` has the JSON type of the config class's
    default for it (a forged ``"output_hidden_states": "yes"`` loads, then breaks at run
    time). Keys without a default, or with a null one, may hold anything."""
    from transformers import AutoConfig

    try:
        defaults = AutoConfig.for_model(config["model_type"]).to_dict()
    except Exception as e:  # an unknown model_type
        raise ModelLoadError(f"{where}: transformers has no model type "
                             f"{quote(config['model_type'])} ({str(e)[:80]}); the file is "
                             "corrupt or needs another transformers version") from None
    for key, value in config.items():
        default = defaults.get(key)
        if default is not None and value is not None and not _same_type(value, default):
            raise FormatError(f"{where}: model config {quote(key)} is {str(value)[:40]!r}, of "
                              f"another type than its default ({type(default).__name__}); the "
                              "file is corrupt")
        if isinstance(default, int) and not isinstance(default, bool) and default >= 0 \
                and isinstance(value, int) and value < 0:  # a count or a size: never negative
            raise FormatError(f"{where}: model config {quote(key)} is {value}, negative where "
                              f"its default is {default}; the file is corrupt")


def build_skeleton(meta: dict, infos: dict[str, TensorInfo], layout: Layout, path: str,
                   file_bytes: int) -> nn.Module:
    """The model a transformers file was saved from: parameters on the meta device (the
    loader assigns the file's), computed buffers real. Every check runs before the
    skeleton is built (see the module doc)."""
    entry = meta["model"]
    if entry["source"] != "transformers":
        raise FormatError(f"{path} holds a plain torch model ({entry['class'][:80]}); pass "
                          "model= the skeleton to load into, e.g. load(path, model=MyNet())")
    ties = meta["ties"]
    names = names_filled(layout, ties)
    check_config(entry["config"], names, path)
    try:
        from ..models import model_from_config  # transformers is optional
    except ImportError as e:
        raise ModelLoadError(f"cannot rebuild {entry['class']} ({e}); install weightshare[hf] or "
                             "pass model= the skeleton to load into") from None
    check_types(entry["config"], path)
    # registrations: every name at most a few times (a tied head registers its own weight
    # before tie_weights replaces it), plus computed buffers
    limit = 4 * names + 256

    def build(params_on_meta: bool, large_on_meta: bool = True) -> nn.Module:
        try:
            with _patched(_Budget(limit, path), params_on_meta):
                mode = (_LargeOnMeta() if large_on_meta else contextlib.nullcontext()) \
                    if params_on_meta else torch.device("meta")
                with mode:
                    return model_from_config(entry["class"], entry["config"], skeleton=True)
        except WeightShareError:
            raise
        except Exception as e:  # a config transformers rejects in its own way
            raise ModelLoadError(f"cannot build {entry['class'][:80]} from the config in {path} "
                                 f"({type(e).__name__}: {str(e)[:100]}); the file is corrupt or "
                                 "needs another transformers version") from None

    probe = build(params_on_meta=False)
    try:
        check_fit(probe, model_slots(probe), wanted(layout, infos, meta["schemes"], ties),
                  layout, meta["schemes"], ties, path, dtypes=False)
    except WeightShareError as e:
        raise FormatError(f"{path}: the model its config builds does not fit its tensors "
                          f"({str(e).split(';')[0][:200]}); the file is corrupt") from None
    computed = non_persistent_bytes(probe)
    if computed > max(MIN_BUFFER_BUDGET, file_bytes):
        raise FormatError(f"{path}: its model config makes the model compute {computed} bytes of "
                          "buffers, more than the file's size; the config is corrupt or forged")
    del probe
    model = build(params_on_meta=True)
    if any(b in m._non_persistent_buffers_set and t is not None and t.is_meta
           for m in model.modules() for b, t in m._buffers.items()):
        # a large buffer the model computes itself: build again with every factory real
        # (parameters still go to the meta device as they are registered)
        model = build(params_on_meta=True, large_on_meta=False)
    return model
