"""The training form of a codebook weight: a ``torch.nn.utils.parametrize``
parametrization whose stored tensors are the codebook (a trainable
``Parameter``) and the codes (an integer buffer).

The trick that keeps no dense copy: ``right_inverse`` maps a dense weight to
a codebook (the mean of each code's members), so the tensor that parametrize
stores as ``parametrizations.weight.original`` *is* the codebook, shape
(groups, 2**bits). ``forward`` expands it back to the dense weight the layer
uses. Gradients reach the codebook through a gather, whose backward is a
scatter-add: each centroid's gradient is the sum over its members (Deep
Compression's gradient aggregation) with no extra code.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

GRANULARITIES = ("per_tensor", "per_channel", "per_group")


class CodebookWeight(nn.Module):
    """weight[r, ...] = codebook[r // group_size, codes[r, ...]] along the channel ``axis``.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(4, 2)
        >>> codes = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.uint8)
        >>> attach_codebook(lin, torch.tensor([[-1.0, 1.0]]), codes, bits=1)
        >>> lin.weight.tolist()
        [[-1.0, 1.0, 1.0, -1.0], [1.0, 1.0, -1.0, -1.0]]
    """

    def __init__(self, codes: torch.Tensor, bits: int, granularity: str = "per_tensor",
                 group_size: int = 1, axis: int = 0) -> None:
        super().__init__()
        if codes.dtype != torch.uint8:
            raise TypeError(f"codes must be uint8, got {codes.dtype}")
        self.bits = int(bits)
        self.granularity = granularity
        self.axis = int(axis)
        rows = codes.shape[self.axis]
        self.group_size = rows if granularity == "per_tensor" else int(group_size)
        self.num_groups = rows // self.group_size
        self.register_buffer("codes", codes)
        # a codebook handed over at registration, returned once by right_inverse
        self._pending: torch.Tensor | None = None

    @property
    def levels(self) -> int:
        return 1 << self.bits

    def _row_codes(self) -> torch.Tensor:
        # (rows, values per row), rows along the channel axis
        c = self.codes.movedim(self.axis, 0)
        return c.reshape(c.shape[0], -1)

    def _unrow(self, rows: torch.Tensor) -> torch.Tensor:
        moved = list(self.codes.movedim(self.axis, 0).shape)
        return rows.reshape(moved).movedim(0, self.axis)

    def forward(self, codebook: torch.Tensor) -> torch.Tensor:
        # codebook: (groups, levels) -> dense weight, shape of codes
        if self.num_groups == 1:
            return codebook[0][self.codes.long()]
        rc = self._row_codes().long()
        group = torch.arange(rc.shape[0], device=rc.device) // self.group_size
        flat = (group * self.levels).unsqueeze(1) + rc
        return self._unrow(codebook.reshape(-1)[flat])

    @torch.no_grad()
    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        """Least-squares codebook for the current codes: each entry = mean of its members.

        When a codebook was handed over for registration (``attach_codebook``), that one
        is returned instead, so registering costs no pass over the dense weight.
        """
        if self._pending is not None:
            pending, self._pending = self._pending, None
            return pending
        w = weight.movedim(self.axis, 0).reshape(self.codes.shape[self.axis], -1)
        rc = self._row_codes().long()
        group = torch.arange(rc.shape[0], device=rc.device) // self.group_size
        flat = ((group * self.levels).unsqueeze(1) + rc).reshape(-1)
        size = self.num_groups * self.levels
        wd = w.reshape(-1).double()
        sums = torch.zeros(size, dtype=torch.float64, device=w.device).index_add_(0, flat, wd)
        counts = torch.bincount(flat, minlength=size).double()
        means = torch.where(counts > 0, sums / counts.clamp(min=1), torch.zeros_like(sums))
        return means.to(weight.dtype).reshape(self.num_groups, self.levels)

    def scheme(self) -> dict:
        """The JSON description of this weight's sharing scheme (see docs/format.md)."""
        return {
            "kind": "codebook",
            "bits": self.bits,
            "granularity": self.granularity,
            "group_size": self.group_size,
            "axis": self.axis,
            "shape": list(self.codes.shape),
        }

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, granularity={self.granularity}, "
                f"groups={self.num_groups}, shape={tuple(self.codes.shape)}")


def attach_codebook(module: nn.Module, codebook: torch.Tensor, codes: torch.Tensor, bits: int,
                    granularity: str = "per_tensor", group_size: int = 1, axis: int = 0,
                    name: str = "weight") -> CodebookWeight:
    """Turn ``module.<name>`` into a codebook weight with the given codebook and codes.

    ``codebook`` is (groups, k) with k <= 2**bits (padded to 2**bits here); ``codes``
    has the weight's shape. The dense weight is dropped: only codebook and codes remain.
    """
    levels = 1 << bits
    cb = codebook.detach().reshape(codebook.shape[0], -1)
    if cb.shape[1] < levels:  # fewer distinct values than levels: pad with the last entry
        cb = torch.cat([cb, cb[:, -1:].expand(-1, levels - cb.shape[1])], dim=1)
    param = CodebookWeight(codes.to(torch.uint8), bits, granularity, group_size, axis)
    if parametrize.is_parametrized(module, name):
        parametrize.remove_parametrizations(module, name, leave_parametrized=False)
    dense = getattr(module, name)
    param._pending = cb.to(device=dense.device, dtype=dense.dtype).contiguous()
    # unsafe: skips parametrize's consistency check, which would expand the weight once more
    parametrize.register_parametrization(module, name, param, unsafe=True)
    return param


def codebook_of(module: nn.Module,
                name: str = "weight") -> tuple[CodebookWeight, nn.Parameter] | None:
    """(parametrization, codebook parameter) of a codebook weight, or None."""
    if not parametrize.is_parametrized(module, name):
        return None
    plist = module.parametrizations[name]
    for p in plist:
        if isinstance(p, CodebookWeight):
            return p, plist.original
    return None


def iter_codebooks(
        model: nn.Module) -> Iterator[tuple[str, nn.Module, CodebookWeight, nn.Parameter]]:
    """Yield (weight fqn, module, parametrization, codebook) for every codebook weight.

    A module registered in several places (a tie) is yielded once, under its first name.
    """
    seen: set[int] = set()
    for mname, module in model.named_modules():
        if id(module) in seen or not parametrize.is_parametrized(module):
            continue
        seen.add(id(module))
        for pname in list(module.parametrizations.keys()):
            found = codebook_of(module, pname)
            if found is not None:
                fqn = f"{mname}.{pname}" if mname else pname
                yield fqn, module, found[0], found[1]


def strip_parametrization_names(name: str) -> str:
    """``a.parametrizations.weight.original`` -> ``a.weight``: the name users know."""
    return name.replace(".parametrizations.", ".").replace(".original", "")


def share_codebook(alias: nn.Module, source: nn.Module, name: str = "weight") -> None:
    """Make ``alias.<name>`` the very same codebook weight as ``source.<name>`` (a tie):
    one codebook Parameter object and one codes buffer, registered in both modules."""
    found = codebook_of(source, name)
    if found is None:
        raise ValueError(f"source module has no codebook weight {name!r}")
    param, codebook = found
    if parametrize.is_parametrized(alias, name):
        parametrize.remove_parametrizations(alias, name, leave_parametrized=False)
    # The alias may still hold the tied dense Parameter, which registering the source
    # turned into the codebook in place (parametrize keeps the Parameter object and
    # `set_`s its data): give it a placeholder, then register the shared codebook.
    delattr(alias, name)
    alias.register_parameter(name, nn.Parameter(torch.empty(0), requires_grad=False))
    param._pending = codebook.detach()
    parametrize.register_parametrization(alias, name, param, unsafe=True)
    alias.parametrizations[name].original = codebook
