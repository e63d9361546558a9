"""Put the tensors of a validated weightshare file into a model (the second half of ``load``).

New tensors are *assigned* (never ``copy_``-ed into the old ones), so a
skeleton built on the meta device works and every tensor keeps the dtype it
was stored in: a round trip is bit-identical. Ties are restored by registering
the very same object under every alias name.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..codebook.parametrization import CodebookWeight, attach_codebook, codebook_of, share_codebook
from ..errors import FormatError, ModelLoadError, TieError
from ..tying.relax import prepare_relaxed, relaxed_of
from .bitpack import unpack_codes
from .schema import codebook_name, codes_name


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def parametrized_weights(model: nn.Module) -> Iterator[tuple[str, str, nn.Module, str]]:
    """(weight fqn, state_dict prefix of its parts, module, attr) for every parametrized
    tensor, once per registration (a module registered twice is yielded under each name)."""
    for mname, module in model.named_modules(remove_duplicate=False):
        if parametrize.is_parametrized(module):
            for attr in module.parametrizations:
                prefix = _join(mname, f"parametrizations.{attr}") + "."
                yield _join(mname, attr), prefix, module, attr


def codebook_parts(module: nn.Module, attr: str, fqn: str,
                   error: type[Exception]) -> tuple[CodebookWeight, nn.Parameter]:
    """(parametrization, codebook) of a codebook weight; ``error`` for any other parametrization."""
    plist = module.parametrizations[attr]
    if len(plist) != 1 or not isinstance(plist[0], CodebookWeight):
        kinds = ", ".join(type(p).__name__ for p in plist)
        raise error(f"{fqn} uses parametrization(s) {kinds}, which the weightshare format cannot "
                    "store; remove them (parametrize.remove_parametrizations) first")
    return plist[0], plist.original


def dense_state(model: nn.Module, error: type[Exception]) -> tuple[dict, dict[str, torch.Tensor]]:
    """({codebook weight fqn: (module, attr)}, {state_dict name: tensor}) with codebook parts
    left out of the second map; shared objects appear under every name."""
    codebooks: dict[str, tuple[nn.Module, str]] = {}
    prefixes: list[str] = []
    for fqn, prefix, module, attr in parametrized_weights(model):
        if relaxed_of(module, attr) is not None:  # relaxed: its tensors stay dense, by name
            continue
        codebook_parts(module, attr, fqn, error)
        codebooks[fqn] = (module, attr)
        prefixes.append(prefix)
    dense = {name: t for name, t in model.state_dict(keep_vars=True).items()
             if "parametrizations." not in name or not any(name.startswith(p) for p in prefixes)}
    return codebooks, dense


def _few(names: set[str]) -> str:
    shown = [n if len(n) <= 80 else n[:77] + "..." for n in sorted(names)[:5]]
    more = f" (+{len(names) - 5} more)" if len(names) > 5 else ""
    return ", ".join(shown) + more


def apply_file(model: nn.Module, meta: dict, tensors: dict[str, torch.Tensor],
               dense_names: list[str], path: str) -> dict[str, str]:
    """Place codebooks, dense tensors and ties of a validated file into ``model``; return ties.

    Every check runs before the model is touched: a file that does not fit leaves it as it was.
    """
    schemes, ties = meta["schemes"], meta["ties"]
    relaxed = {f: s for f, s in schemes.items() if s["kind"] == "relaxed"}
    schemes = {f: s for f, s in schemes.items() if f not in relaxed}
    prepare_relaxed(model, relaxed, FormatError, path)  # empty parametrizations to fill by name
    codebooks, dense = dense_state(model, ModelLoadError)
    _check_fit(model, schemes, ties, tensors, dense_names, codebooks, dense, path)
    default = next((t.device for t in itertools.chain(model.parameters(), model.buffers())
                    if not t.is_meta), torch.device("cpu"))
    _reset_codebooks(codebooks)
    placed: dict[str, object] = {}  # name -> Parameter / buffer / (CodebookWeight, codebook)
    # codebook weights that store their codebook come before those that borrow one
    for fqn in sorted(schemes, key=lambda f: "codebook_from" in schemes[f]):
        _place_codebook(model, fqn, schemes[fqn], tensors, placed, default)
    for name in dense_names:
        _place_dense(model, name, tensors[name], placed, default)
    for alias, source in ties.items():
        _place_alias(model, alias, source, placed)
    _verify(model, placed)
    return dict(ties)


def _check_fit(model: nn.Module, schemes: dict, ties: dict, tensors: dict,
               dense_names: list[str], codebooks: dict, dense: dict, path: str) -> None:
    """Names, shapes, parameter-vs-buffer and slots of the file match the model."""
    shapes = {n: tuple(t.shape) for n, t in dense.items()}
    shapes.update({f: tuple(codebook_of(m, a)[0].codes.shape) for f, (m, a) in codebooks.items()})
    want = {n: tuple(tensors[n].shape) for n in dense_names}
    want.update({f: tuple(s["shape"]) for f, s in schemes.items()})
    want.update({alias: want[source] for alias, source in ties.items()})
    if set(want) - set(shapes):
        raise FormatError(f"{path} holds tensors the model lacks: {_few(set(want) - set(shapes))}"
                          "; load it into the model it was saved from")
    if set(shapes) - set(want):
        raise FormatError(f"{path} lacks tensors the model has: {_few(set(shapes) - set(want))}; "
                          "load it into the model it was saved from")
    is_param: dict[str, bool] = {}
    slots: dict[tuple[int, str], str] = {}
    for name, shape in want.items():
        module, attr = _owner(model, name, path)
        if shapes[name] != shape:
            raise FormatError(f"{name} has shape {list(shape)} in {path} but "
                              f"{list(shapes[name])} in the model; load it into a model of the "
                              "same configuration")
        is_param[name] = attr in module._parameters or parametrize.is_parametrized(module, attr)
        root = ties.get(name, name)
        if slots.setdefault((id(module), attr), root) != root:  # one module in two places
            raise TieError(f"the model shares {name} with {slots[(id(module), attr)]} but the "
                           "file stores them separately; load into a freshly built model, or "
                           "untie_ it first")
    for name in want:  # a dense tensor may fill either; a codebook or a tie must match
        root = ties.get(name, name)
        if root in schemes and root.rpartition(".")[2] != name.rpartition(".")[2]:
            raise FormatError(f"tie {name} -> {root} in {path} joins codebook weights of "
                              "different attribute names; load it into the model it was saved "
                              "from")
        if (root in schemes or is_param[root]) != is_param[name]:
            raise FormatError(f"{name} is a buffer in the model but {path} stores it as a "
                              f"codebook weight or ties it to {root}; load it into the model it "
                              "was saved from")
    for mname, module in model.named_modules():
        left = [b for b in module._non_persistent_buffers_set
                if module._buffers.get(b) is not None and module._buffers[b].is_meta]
        if left:
            raise ModelLoadError(f"{_join(mname, left[0])} is on the meta device and not stored "
                                 "in files (a non-persistent buffer); build the model on a real "
                                 "device")


def _owner(model: nn.Module, name: str, path: str = "the file") -> tuple[nn.Module, str]:
    modpath, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(modpath) if modpath else model
    except AttributeError:
        raise FormatError(f"cannot place {name} from {path}: the model has no module "
                          f"{modpath!r}; load it into the model it was saved from") from None
    if (attr not in module._parameters and attr not in module._buffers
            and not parametrize.is_parametrized(module, attr)):
        raise FormatError(f"cannot place {name} from {path}: {type(module).__name__} has no "
                          f"parameter or buffer {attr!r}; load it into the model it was saved from")
    return module, attr


def _device(old: torch.Tensor | None, default: torch.device) -> torch.device:
    return default if old is None or old.is_meta else old.device


def _reset_codebooks(codebooks: dict[str, tuple[nn.Module, str]]) -> None:
    """Turn the skeleton's own codebook weights into plain (meta) placeholders: the file decides."""
    for module, attr in codebooks.values():
        if not parametrize.is_parametrized(module, attr):
            continue  # a module registered twice: already reset
        cw, codebook = codebook_of(module, attr)
        shape, grad = cw.codes.shape, codebook.requires_grad
        parametrize.remove_parametrizations(module, attr, leave_parametrized=False)
        module._parameters[attr] = nn.Parameter(
            torch.empty(shape, dtype=codebook.dtype, device="meta"), requires_grad=grad)


def _place_codebook(model: nn.Module, fqn: str, scheme: dict, tensors: dict, placed: dict,
                    default: torch.device) -> None:
    module, attr = _owner(model, fqn)
    old = module._parameters[attr]
    device = _device(old, default)
    shape = tuple(scheme["shape"])
    codes = unpack_codes(tensors[codes_name(fqn)], scheme["bits"], math.prod(shape))
    borrowed = scheme.get("codebook_from")
    codebook = placed[borrowed][1] if borrowed else tensors[codebook_name(fqn)]
    # attach_codebook takes device, dtype and requires_grad from the current weight (never its
    # values): an empty stand-in in the codebook's own dtype keeps the round trip bit-identical
    # and works for a skeleton on the meta device
    grad = old is None or old.requires_grad
    module._parameters[attr] = nn.Parameter(
        torch.empty(0, dtype=codebook.dtype, device=device), requires_grad=grad)
    cw = attach_codebook(module, codebook.detach(), codes.reshape(shape).to(device),
                         scheme["bits"], scheme["granularity"], scheme["group_size"],
                         scheme["axis"], name=attr)
    if borrowed:  # a codebook shared across layers: the very same Parameter
        module.parametrizations[attr].original = placed[borrowed][1]
    placed[fqn] = (cw, module.parametrizations[attr].original)


def _place_dense(model: nn.Module, name: str, t: torch.Tensor, placed: dict,
                 default: torch.device) -> None:
    module, attr = _owner(model, name)
    if attr in module._parameters:
        old = module._parameters[attr]
        grad = (old is None or old.requires_grad) and (t.is_floating_point() or t.is_complex())
        obj: torch.Tensor = nn.Parameter(t.to(_device(old, default)), requires_grad=grad)
        module._parameters[attr] = obj
    else:
        obj = t.to(_device(module._buffers[attr], default))
        module._buffers[attr] = obj
    placed[name] = obj


def _place_alias(model: nn.Module, alias: str, source: str, placed: dict) -> None:
    module, attr = _owner(model, alias)
    obj = placed[alias] = placed[source]
    if isinstance(obj, tuple):  # a codebook weight: share the parametrization itself
        found = codebook_of(module, attr)
        if found is not None and found[0] is obj[0] and found[1] is obj[1]:
            return  # the skeleton registers one module in both places
        share_codebook(module, _owner(model, source)[0], attr)  # same attr: see _check_fit
    elif isinstance(obj, nn.Parameter):
        module._parameters[attr] = obj
    else:
        module._buffers[attr] = obj


def _verify(model: nn.Module, placed: dict) -> None:
    """Every name holds what we put there (internal check: _check_fit rules out conflicts)."""
    state = model.state_dict(keep_vars=True)
    for name, obj in placed.items():
        if isinstance(obj, tuple):
            found = codebook_of(*_owner(model, name))
            ok = found is not None and found[0] is obj[0] and found[1] is obj[1]
        else:
            ok = state.get(name) is obj
        if not ok:
            raise TieError(f"the model shares {name} with another name but the file stores them "
                           "separately; load into a freshly built model, or untie_ it first")
