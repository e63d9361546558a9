"""Converters for the few torch ops that transformers' mask code emits and coremltools
(9.0) does not convert: ``new_ones`` (a tensor of ones of a given shape and dtype).
Registered once, when ``coreml.py`` imports this module (coremltools is optional)."""

from __future__ import annotations

from typing import Any

from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.frontend.torch.ops import _get_inputs
from coremltools.converters.mil.frontend.torch.torch_op_registry import (
    _TORCH_OPS_REGISTRY,
    register_torch_op,
)

# torch's ScalarType codes -> MIL dtypes
_DTYPES = {11: "bool", 3: "int32", 4: "int32", 5: "fp16", 6: "fp32"}


def _new_ones(context: Any, node: Any) -> None:
    inputs = _get_inputs(context, node)
    shape = inputs[1]
    if isinstance(shape, list):  # a dynamic size: a list of scalars
        shape = mb.concat(values=shape, axis=0)
    shape = mb.cast(x=shape, dtype="int32")
    code = inputs[2].val if len(inputs) > 2 and inputs[2] is not None else None
    ones = mb.fill(shape=shape, value=1)
    dtype = _DTYPES.get(int(code) if code is not None else -1, "fp32")
    context.add(mb.cast(x=ones, dtype=dtype, name=node.name))


if "new_ones" not in _TORCH_OPS_REGISTRY.name_to_func_mapping:
    register_torch_op(_new_ones, torch_alias=["new_ones"])
