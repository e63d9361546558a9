"""PackedTensor: the dense weight of a packed shared weight, never expanded whole.

A layer's weight attribute returns it (the parametrization's ``forward``). It has the
dense weight's shape, dtype and device but no storage of its own: ``F.linear``,
``F.embedding``, ``F.conv1d/2d/3d``, ``torch.addmm`` and ``torch.matmul`` are computed
from the codes (``runtime.ops``); any other operation sees the dense weight, decoded
whole for that operation (correct, not compact: ``ops`` covers what layers do).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._pytree import tree_map

# torch function -> implementation(*args, **kwargs), which may return NotImplemented
HANDLED: dict[Callable, Callable] = {}


def implements(*funcs: Callable) -> Callable[[Callable], Callable]:
    def register(impl: Callable) -> Callable:
        for f in funcs:
            HANDLED[f] = impl
        return impl
    return register


class PackedTensor(torch.Tensor):
    """The dense weight ``form.dense(codebook)``, computed from the packed codes.

    ``form`` is the packed shared weight, ``codebook`` its original. ``dense()`` gives
    the whole weight as a plain tensor.
    """

    form: Any
    codebook: torch.Tensor

    @staticmethod
    def __new__(cls, form: Any, codebook: torch.Tensor) -> PackedTensor:
        return torch.Tensor._make_wrapper_subclass(
            cls, form.shape, dtype=codebook.dtype, device=codebook.device, requires_grad=False)

    def __init__(self, form: Any, codebook: torch.Tensor) -> None:
        self.form = form
        self.codebook = codebook

    def __repr__(self, *, tensor_contents: Any = None) -> str:  # type: ignore[override]
        return (f"PackedTensor(shape={tuple(self.shape)}, dtype={self.dtype}, "
                f"bits={getattr(self.form, 'bits', '?')})")

    def dense(self) -> torch.Tensor:
        return self.form.dense(self.codebook)

    @classmethod
    def __torch_function__(cls, func: Callable, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        impl = HANDLED.get(func)
        if impl is not None:
            out = impl(*args, **kwargs)
            if out is not NotImplemented:
                return out
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)

    @classmethod
    def __torch_dispatch__(cls, func: Callable, types: Any, args: tuple = (),  # type: ignore[override]
                           kwargs: dict | None = None) -> Any:
        # an operation ops does not compute from codes: on the dense weight
        def unwrap(a: Any) -> Any:
            return a.dense() if isinstance(a, PackedTensor) else a

        return func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs or {}))
