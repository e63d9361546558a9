"""The shared-weight protocol: what every kind of sharing implements.

A shared weight is *a few stored tensors plus a map that expands them to the dense
weight a layer uses*. In a model it is a ``torch.nn.utils.parametrize``
parametrization, a subclass of :class:`SharedWeight`:

* its **original** (the tensor parametrize keeps as ``parametrizations.<attr>.original``)
  is the stored tensor that may be shared with other weights: a codebook shared across
  layers, the base of relaxed ties;
* its **own parts** are the other tensors it stores (codes, low-rank deltas, ...),
  registered on the parametrization module itself;
* ``forward(original)`` is the map: it returns the dense weight.

The io layer, ``inspect`` and the tie machinery only ever use this protocol: a kind
name and version, ``scheme()``, ``part_specs()``, ``parts()``, ``from_scheme()`` and
the dense value. Adding a kind of sharing never touches them.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Doubled(SharedWeight):
    ...     kind = "doubled"
    ...     def forward(self, original):
    ...         return 2 * original
    ...     def scheme(self, original):
    ...         return {"kind": self.kind, "shape": list(original.shape),
    ...                 "dtype": dtype_name(original.dtype)}
    ...     @classmethod
    ...     def part_specs(cls, scheme):
    ...         return {"original": PartSpec(scheme["dtype"], tuple(scheme["shape"]))}
    ...     @classmethod
    ...     def from_scheme(cls, scheme, parts):
    ...         return cls()
    >>> lin = nn.Linear(2, 2)
    >>> attach(lin, "weight", Doubled(), nn.Parameter(torch.ones(2, 2)))
    >>> lin.weight.tolist()
    [[2.0, 2.0], [2.0, 2.0]]
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import ConfigError

# torch dtype names a part may declare, and their sizes in bytes
DTYPE_BYTES = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4,
    "int16": 2, "int8": 1, "uint8": 1, "bool": 1,
}
FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")
MAX_CODE_BITS = 16  # the widest bit-packed integers the file format stores


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class PartSpec:
    """One tensor a shared weight stores: its logical dtype and shape, and its packing.

    ``bits``: the values are non-negative integers stored bit-packed at this width
    (1..16) in a 1-D uint8 stream (docs/format.md, section 3.1); ``None``: stored as is.
    """

    dtype: str
    shape: tuple[int, ...]
    bits: int | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def stored_bytes(self) -> int:
        if self.bits is not None:
            return (self.numel * self.bits + 7) // 8
        return self.numel * DTYPE_BYTES[self.dtype]

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES


class SharedWeight(nn.Module):
    """Base class of every sharing parametrization (see the module docstring).

    Subclasses set ``kind`` (a short name, the file's ``scheme["kind"]``), ``version``
    (raise it when the scheme changes; files of a newer version are refused) and
    ``original_part`` (the name the original is stored under), and implement
    ``forward``, ``scheme``, ``part_specs`` and ``from_scheme``; ``parts`` is needed when
    the kind stores tensors besides its original.
    """

    kind: ClassVar[str] = ""
    version: ClassVar[int] = 1
    original_part: ClassVar[str] = "original"

    def __init__(self) -> None:
        super().__init__()
        # the original handed over by ``attach``, returned once by right_inverse
        self._pending: torch.Tensor | None = None

    # -- what the kind describes -------------------------------------------------------

    def scheme(self, original: torch.Tensor) -> dict[str, Any]:
        """The JSON description of this weight (``kind`` included), enough to rebuild it
        with :meth:`from_scheme` from its parts."""
        raise NotImplementedError

    @classmethod
    def check_scheme(cls, scheme: dict[str, Any]) -> None:
        """Raise ``ValueError`` (any subclass) naming the first invalid field of a scheme
        read from a file. Called before :meth:`part_specs`; the default checks nothing."""

    @classmethod
    def part_specs(cls, scheme: dict[str, Any]) -> dict[str, PartSpec]:
        """Every tensor a weight of ``scheme`` stores, the original under ``original_part``."""
        raise NotImplementedError

    @classmethod
    def handles(cls, scheme: dict[str, Any]) -> bool:
        """Whether this form can hold a weight of ``scheme``: a runtime form may cover only
        some schemes of its kind (the others stay in the training form). Default: all."""
        return True

    @classmethod
    def dense_shape(cls, scheme: dict[str, Any]) -> tuple[int, ...]:
        """Shape of the dense weight (default: ``scheme["shape"]``)."""
        return tuple(int(d) for d in scheme["shape"])

    @classmethod
    def dense_dtype_name(cls, scheme: dict[str, Any]) -> str:
        """dtype name of the dense weight (default: the original part's dtype)."""
        return cls.part_specs(scheme)[cls.original_part].dtype

    def parts(self) -> dict[str, torch.Tensor]:
        """The weight's own stored tensors (everything but the original), by part name,
        in their logical (unpacked) form."""
        return {}

    @classmethod
    def from_scheme(cls, scheme: dict[str, Any], parts: dict[str, torch.Tensor]) -> SharedWeight:
        """Rebuild the parametrization from its scheme and own parts (not the original)."""
        raise NotImplementedError

    def describe(self, original: torch.Tensor) -> str:
        """One line for ``inspect``: granularity, rank, ..."""
        return ""

    def distinct_values(self, original: torch.Tensor) -> int | None:
        """How many distinct values the dense weight can take, when that is what the kind
        shares (codebooks); None otherwise."""
        return None

    def code_bits(self) -> int | None:
        """Bits per code, for kinds that store codes."""
        return None

    # -- runtime forms -----------------------------------------------------------------
    # A kind may register other forms of its weight for other uses (``register_runtime``):
    # the same kind, scheme and parts, held differently (e.g. codes kept bit-packed in
    # memory for inference). These three methods are what io and materialize_ use.

    @classmethod
    def from_stored(cls, scheme: dict[str, Any], parts: dict[str, torch.Tensor]) -> SharedWeight:
        """Rebuild the weight from its own parts as the file stores them: a part with
        ``bits`` as its 1-D uint8 bit stream. Runtime forms implement it."""
        raise NotImplementedError(f"{cls.__name__} is built with from_scheme")

    def packed_parts(self) -> dict[str, torch.Tensor]:
        """Own parts already held bit-packed (as the file stores them), by part name; the
        io layer stores these as they are. Default: none."""
        return {}

    def dense(self, original: torch.Tensor) -> torch.Tensor:
        """The dense weight as a plain tensor (default: ``forward``)."""
        return self(original)

    # -- parametrize plumbing ----------------------------------------------------------

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        """Registration hands the original over unchanged (see :func:`attach`)."""
        pending = self.take_pending()
        return value if pending is None else pending

    def take_pending(self) -> torch.Tensor | None:
        pending, self._pending = self._pending, None
        return pending


# ------------------------------------------------------------------- in a model


def remove_parametrization(module: nn.Module, attr: str) -> None:
    """Drop the parametrization of ``module.<attr>`` (the original stays as it is).

    A deep copy of a parametrized module shares its generated class with the module it
    was copied from, and removing a parametrization deletes the property from that class:
    the copy first gets a class of its own, so the other model keeps working.
    """
    cls = type(module)
    module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    # leave_parametrized=False: the default writes the dense value into the original,
    # which other weights may share
    parametrize.remove_parametrizations(module, attr, leave_parametrized=False)


def attach(module: nn.Module, attr: str, weight: SharedWeight, original: nn.Parameter) -> None:
    """Make ``module.<attr>`` the shared weight ``weight(original)``, in place.

    ``original`` is registered as is (never copied): every weight attached to the same
    Parameter shares it. Whatever ``module.<attr>`` held before is dropped (not written
    into, so a tensor it shared with other modules stays intact).
    """
    if parametrize.is_parametrized(module, attr):
        remove_parametrization(module, attr)
    if attr in module._buffers:
        del module._buffers[attr]
    module._parameters[attr] = original
    weight._pending = original
    # unsafe: skip parametrize's consistency probe, which would expand the weight once more
    parametrize.register_parametrization(module, attr, weight, unsafe=True)
    plist = parametrization_list(module, attr)
    if plist.original is not original:  # registration re-wrapped it: put ours back
        plist.original = original


def parametrization_list(module: nn.Module, attr: str) -> parametrize.ParametrizationList:
    """The ``ParametrizationList`` of a parametrized ``module.<attr>``."""
    plists = cast(nn.ModuleDict, module.parametrizations)
    return cast(parametrize.ParametrizationList, plists[attr])


def dense_weight(module: nn.Module, attr: str = "weight") -> torch.Tensor:
    """``module.<attr>`` as the tensor the module computes with (typed for mypy)."""
    return cast(torch.Tensor, getattr(module, attr))


def shared_of(module: nn.Module, attr: str) -> tuple[SharedWeight, nn.Parameter] | None:
    """(shared weight, original) of ``module.<attr>``, or None when it is no shared weight.

    A parametrization list that mixes a shared weight with other parametrizations is
    reported as None too: :func:`foreign_parametrization` names it.
    """
    if not parametrize.is_parametrized(module, attr):
        return None
    plist = parametrization_list(module, attr)
    if len(plist) == 1 and isinstance(plist[0], SharedWeight):
        return plist[0], cast(nn.Parameter, plist.original)
    return None


def foreign_parametrization(module: nn.Module, attr: str) -> str | None:
    """The class names of a parametrization list that is not exactly one shared weight."""
    if not parametrize.is_parametrized(module, attr) or shared_of(module, attr) is not None:
        return None
    return ", ".join(type(p).__name__ for p in parametrization_list(module, attr))


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def parametrized_attrs(model: nn.Module,
                       remove_duplicate: bool = True) -> Iterator[tuple[str, nn.Module, str]]:
    """(tensor fqn, module, attr) for every parametrized tensor (any parametrization)."""
    for mname, module in model.named_modules(remove_duplicate=remove_duplicate):
        if parametrize.is_parametrized(module):
            for attr in list(cast(nn.ModuleDict, module.parametrizations).keys()):
                yield join(mname, attr), module, attr


def iter_shared(model: nn.Module, remove_duplicate: bool = True
                ) -> Iterator[tuple[str, nn.Module, str, SharedWeight, nn.Parameter]]:
    """(weight fqn, module, attr, shared weight, original) for every shared weight.

    With ``remove_duplicate=False`` a module registered in several places is yielded
    under each of its names (what save and inspect need to see ties).
    """
    for fqn, module, attr in parametrized_attrs(model, remove_duplicate):
        found = shared_of(module, attr)
        if found is not None:
            yield fqn, module, attr, found[0], found[1]


def share(alias: nn.Module, attr: str, source: nn.Module, source_attr: str | None = None) -> None:
    """Make ``alias.<attr>`` the very same shared weight as ``source.<source_attr>`` (a tie):
    one parametrization object and one original, registered in both modules."""
    found = shared_of(source, source_attr or attr)
    if found is None:
        raise ConfigError(f"{type(source).__name__}.{source_attr or attr} is no shared weight; "
                          "share a weight that a sharing method produced")
    attach(alias, attr, found[0], found[1])


@torch.no_grad()
def materialize_(model: nn.Module, kinds: tuple[str, ...] | None = None,
                 keep_ties: bool = True) -> nn.Module:
    """Turn shared weights back into plain dense ``Parameter``s, in place; returns ``model``.

    ``kinds`` limits it to those kinds (default: all). With ``keep_ties`` a weight that
    several modules share (the same shared weight registered twice) stays one tensor;
    otherwise every module gets its own copy.

    Example:
        >>> import torch, weightshare as ws
        >>> m = torch.nn.Sequential(torch.nn.Linear(64, 64))
        >>> _ = ws.cluster_(m, ws.ClusterConfig(bits=2))
        >>> dense = m[0].weight.detach().clone()
        >>> _ = ws.materialize_(m)
        >>> type(m[0].weight).__name__, torch.equal(m[0].weight, dense)
        ('Parameter', True)
    """
    done: dict[int, nn.Parameter] = {}
    for _fqn, module, attr, weight, original in list(iter_shared(model, remove_duplicate=False)):
        if (kinds is not None and weight.kind not in kinds) or shared_of(module, attr) is None:
            continue  # another kind, or a module registered twice: done already
        key = id(weight) if keep_ties else None
        param = done.get(key) if key is not None else None
        if param is None:
            param = nn.Parameter(weight.dense(original).detach().clone(),
                                 requires_grad=original.requires_grad)
            if key is not None:
                done[key] = param
        remove_parametrization(module, attr)
        module._parameters[attr] = param
    return model
