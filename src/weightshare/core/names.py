"""From a parameter fqn to the (module, attribute) that holds it, and back.

A tie is made by registering one ``Parameter`` object under several names, which
means ``setattr(owner, attr, param)`` on each alias's owner. Parametrized weights
(codebooks, relaxed deltas) keep their stored tensor at
``<module>.parametrizations.<name>.original``; both that raw name and the name
users know (``<module>.<name>``) resolve to it.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrize

from ..errors import TieError
from .protocol import SharedWeight, shared_of


def resolve(model: nn.Module, fqn: str) -> tuple[nn.Module, str]:
    """(owner module, attribute) holding the parameter ``fqn``; TieError if there is none."""
    owner_name, _, attr = fqn.rpartition(".")
    try:
        owner = model.get_submodule(owner_name) if owner_name else model
    except AttributeError:
        owner = None
    if owner is not None:
        if attr in owner._parameters and owner._parameters[attr] is not None:
            return owner, attr
        if parametrize.is_parametrized(owner, attr):
            return owner.parametrizations[attr], "original"  # type: ignore[index,return-value]
    raise TieError(f"{type(model).__name__} has no parameter {fqn!r}; check the name against "
                   "model.named_parameters() (the tie map may come from another model)")


def get_param(model: nn.Module, fqn: str) -> nn.Parameter:
    """The parameter object registered as ``fqn``."""
    owner, attr = resolve(model, fqn)
    return owner._parameters[attr]  # type: ignore[return-value]


def has_param(model: nn.Module, fqn: str) -> bool:
    try:
        resolve(model, fqn)
    except TieError:
        return False
    return True


def set_param(model: nn.Module, fqn: str, param: nn.Parameter) -> None:
    """Register ``param`` as ``fqn`` (the alias now *is* that object)."""
    owner, attr = resolve(model, fqn)
    setattr(owner, attr, param)


def user_name(fqn: str) -> str:
    """``a.parametrizations.weight.original`` -> ``a.weight``; other names unchanged."""
    if ".parametrizations." in f".{fqn}" and fqn.endswith(".original"):
        head = fqn[: -len(".original")]
        return head.replace("parametrizations.", "", 1) if head.startswith("parametrizations.") \
            else head.replace(".parametrizations.", ".")
    return fqn


def is_parametrized_name(fqn: str) -> bool:
    return ".parametrizations." in f".{fqn}"


def canonical(model: nn.Module, fqn: str) -> str:
    """The raw name (as ``named_parameters`` spells it) of the parameter ``fqn``."""
    owner, attr = resolve(model, fqn)
    if attr == "original" and isinstance(owner, parametrize.ParametrizationList):
        base = fqn[: -len(".original")] if fqn.endswith(".original") else fqn
        if ".parametrizations." in f".{base}":
            return f"{base}.original"
        head, _, name = base.rpartition(".")
        return f"{head}.parametrizations.{name}.original" if head \
            else f"parametrizations.{name}.original"
    return fqn


def shared_at(model: nn.Module,
              fqn: str) -> tuple[nn.Module, str, SharedWeight, nn.Parameter] | None:
    """(module, attr, shared weight, original) when ``fqn`` (a user name such as
    ``emb.weight``) is a shared weight of ``model``; None otherwise."""
    owner_name, _, attr = fqn.rpartition(".")
    try:
        owner = model.get_submodule(owner_name) if owner_name else model
    except AttributeError:
        return None
    found = shared_of(owner, attr)
    return None if found is None else (owner, attr, found[0], found[1])


def dense_shape(model: nn.Module, fqn: str) -> tuple[int, ...]:
    """Shape of the tensor ``fqn`` as the model computes with it (a shared weight's dense
    shape, read from its scheme without expanding it)."""
    found = shared_at(model, fqn)
    if found is not None:
        weight, original = found[2], found[3]
        return type(weight).dense_shape(weight.scheme(original))
    return tuple(get_param(model, fqn).shape)
