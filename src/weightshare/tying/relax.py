"""Relaxed sharing: W_i = W_shared + B_i A_i, a per-member low-rank delta on a tied weight.

Each member module gets a ``torch.nn.utils.parametrize`` parametrization whose
``original`` is the SAME shared ``Parameter`` object (stored once, seen once by
optimizers) and which holds the member's own ``lora_B`` (out, r) and ``lora_A``
(r, in) — for conv weights "in" is the flattened (in, kh, kw). Vectors (biases,
norms) have no low rank: a relaxed vector gets a dense per-member delta, which is
cheap and keeps the promise that rank = full recovers the original exactly.

Initialisation: a truncated SVD of the member's residual R_i = W_i - W_shared,
B = U_r sqrt(S_r), A = sqrt(S_r) V_r^T, so B A is the best rank-r approximation of
R_i (Eckart-Young). Directions with a zero singular value (e.g. the residual of the
member the shared weight was copied from) start as LoRA does, A random and B zero,
so they can still learn.

``merge_`` turns every relaxed weight back into a plain dense weight.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize


class RelaxedWeight(nn.Module):
    """weight = shared + (lora_B @ lora_A).view(shape), or shared + delta for vectors.

    Example:
        >>> import torch
        >>> shared = torch.zeros(3, 4)
        >>> r = RelaxedWeight((3, 4), rank=3, residual=torch.ones(3, 4))
        >>> torch.allclose(r(shared), torch.ones(3, 4), atol=1e-6)
        True
    """

    def __init__(self, shape: tuple[int, ...], rank: int, residual: torch.Tensor | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None
                 ) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)
        if residual is not None:
            dtype, device = residual.dtype, residual.device
        kw = {"dtype": dtype, "device": device}
        if len(self.shape) < 2:
            self.rank = 0
            self.lora_B = None
            self.lora_A = None
            delta = residual.detach().clone() if residual is not None \
                else torch.zeros(self.shape, **kw)  # type: ignore[arg-type]
            self.delta = nn.Parameter(delta)
            return
        out_f, in_f = self.shape[0], math.prod(self.shape[1:])
        if not 1 <= rank <= min(out_f, in_f):
            raise ValueError(f"rank {rank} outside 1..{min(out_f, in_f)}")
        self.rank = int(rank)
        self.delta = None
        b, a = torch.zeros(out_f, rank, **kw), torch.zeros(rank, in_f, **kw)  # type: ignore
        if residual is not None and residual.device.type != "meta":
            b, a = _svd_init(residual.detach().reshape(out_f, in_f), rank)
        self.lora_B = nn.Parameter(b)  # (out, r)
        self.lora_A = nn.Parameter(a)  # (r, in)

    def forward(self, shared: torch.Tensor) -> torch.Tensor:
        if self.delta is not None:
            return shared + self.delta
        return shared + (self.lora_B @ self.lora_A).view(shared.shape)

    def scheme(self) -> dict:
        """The JSON description of this weight's sharing scheme (see docs/format.md)."""
        return {"kind": "relaxed", "rank": self.rank, "shape": list(self.shape),
                "delta": "dense" if self.delta is not None else "low_rank"}

    @classmethod
    def from_scheme(cls, scheme: dict, dtype: torch.dtype | None = None,
                    device: torch.device | str | None = None) -> RelaxedWeight:
        """An empty (zero delta) parametrization with the shape and rank that ``scheme`` names."""
        shape = tuple(int(d) for d in scheme["shape"])
        return cls(shape, int(scheme.get("rank", 0)), dtype=dtype, device=device)

    def extra_repr(self) -> str:
        kind = "dense delta" if self.delta is not None else f"rank={self.rank}"
        return f"shape={self.shape}, {kind}"


def max_rank(shape: tuple[int, ...]) -> int:
    """Largest useful rank of a delta for a weight of ``shape`` (0 for vectors)."""
    if len(shape) < 2:
        return 0
    return min(shape[0], math.prod(shape[1:]))


@torch.no_grad()
def _svd_init(residual: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    # residual: (out, in) -> B (out, r), A (r, in), B @ A = best rank-r approximation
    u, s, vh = torch.linalg.svd(residual.double(), full_matrices=False)
    u, s, vh = u[:, :rank], s[:rank], vh[:rank]
    root = s.sqrt()
    b, a = u * root, root[:, None] * vh
    dead = s <= s.max().clamp(min=1e-30) * 1e-7 if s.numel() else s.bool()
    if dead.any():  # LoRA start for directions with nothing to recover: A random, B zero
        gen = torch.Generator().manual_seed(0)
        noise = torch.randn(int(dead.sum()), a.shape[1], generator=gen, dtype=a.dtype)
        a[dead] = noise.to(a.device) / math.sqrt(a.shape[1])
        b[:, dead] = 0
    return b.to(residual.dtype).contiguous(), a.to(residual.dtype).contiguous()


def attach_relaxed(module: nn.Module, name: str, shared: nn.Parameter,
                   relaxed: RelaxedWeight) -> None:
    """Make ``module.<name>`` = ``relaxed(shared)``, with ``shared`` stored as ``original``.

    ``shared`` is registered as is (not copied): every member attached to the same
    Parameter shares it.
    """
    # unsafe: skip parametrize's consistency probe, which would compute on the old weight
    parametrize.register_parametrization(module, name, relaxed, unsafe=True)
    module.parametrizations[name].original = shared  # type: ignore[index]


def relaxed_of(module: nn.Module, name: str = "weight") -> RelaxedWeight | None:
    """The RelaxedWeight parametrization of ``module.<name>``, or None."""
    if not parametrize.is_parametrized(module, name):
        return None
    for p in module.parametrizations[name]:  # type: ignore[index]
        if isinstance(p, RelaxedWeight):
            return p
    return None


def iter_relaxed(model: nn.Module):
    """Yield (weight fqn, module, attribute, RelaxedWeight) for every relaxed weight."""
    seen: set[tuple[int, str]] = set()
    for mname, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for pname in list(module.parametrizations.keys()):  # type: ignore[union-attr]
            relaxed = relaxed_of(module, pname)
            if relaxed is not None and (id(module), pname) not in seen:
                seen.add((id(module), pname))
                yield (f"{mname}.{pname}" if mname else pname), module, pname, relaxed


@torch.no_grad()
def merge_(model: nn.Module) -> nn.Module:
    """Turn every relaxed weight into a plain dense weight W_i = W_shared + B_i A_i.

    The result has no sharing left among the merged weights (each member owns its
    dense tensor); runtimes that know no sharing can run it. Returns ``model``.

    Example:
        >>> import torch
        >>> from weightshare.tying import TieConfig, find_ties, merge_, tie_
        >>> m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
        >>> _ = tie_(m, TieConfig(strategy="all", rank="full"))
        >>> merge_(m) is m, find_ties(m)
        (True, [])
    """
    from .apply import record_ties  # circular: apply uses relax

    for _fqn, module, pname, _relaxed in list(iter_relaxed(model)):
        dense = getattr(module, pname).detach().clone()
        shared = module.parametrizations[pname].original  # type: ignore[index]
        # leave_parametrized=False: the default would write W_i into the SHARED original
        # in place (set_), corrupting every other member.
        parametrize.remove_parametrizations(module, pname, leave_parametrized=False)
        setattr(module, pname, nn.Parameter(dense, requires_grad=shared.requires_grad))
    record_ties(model)
    return model


# ---------------------------------------------------------------- file format support
# weightshare.io stores a relaxed weight as plain tensors under their state_dict names
# (the shared ``original`` once, tied; each member's lora_A/lora_B or delta) plus a
# scheme {"kind": "relaxed", ...} per member; these two helpers are its only contact.


def relaxed_schemes(model: nn.Module) -> dict[str, dict]:
    """{weight fqn: scheme with dtype} for every relaxed weight, under every registration."""
    out = {}
    for mname, module in model.named_modules(remove_duplicate=False):
        if not parametrize.is_parametrized(module):
            continue
        for pname in module.parametrizations:  # type: ignore[union-attr]
            relaxed = relaxed_of(module, pname)
            if relaxed is not None:
                original = module.parametrizations[pname].original  # type: ignore[index]
                dtype = str(original.dtype).removeprefix("torch.")
                out[f"{mname}.{pname}" if mname else pname] = dict(relaxed.scheme(), dtype=dtype)
    return out


def prepare_relaxed(model: nn.Module, schemes: dict[str, dict], error: type[Exception],
                    where: str) -> None:
    """Give ``model`` an (empty, meta-device) relaxed parametrization for each scheme, so that
    the loader can place the stored tensors by name. Matching ones are kept. Every name and
    shape is checked before the model changes."""
    todo = []
    for fqn, scheme in schemes.items():
        mname, _, attr = fqn.rpartition(".")
        try:
            module = model.get_submodule(mname) if mname else model
        except AttributeError:
            module = None
        current = None if module is None else (
            module.parametrizations[attr].original  # type: ignore[index]
            if parametrize.is_parametrized(module, attr) else module._parameters.get(attr))
        if current is None:
            raise error(f"{where} holds relaxed weight {fqn!r}, which the model lacks; load it "
                        "into the model it was saved from")
        if list(current.shape) != list(scheme["shape"]):
            raise error(f"relaxed weight {fqn!r} has shape {list(scheme['shape'])} in {where} but "
                        f"{list(current.shape)} in the model; load it into a model of the same "
                        "configuration")
        existing = relaxed_of(module, attr)  # type: ignore[arg-type]
        plain = {k: v for k, v in scheme.items() if k != "dtype"}
        if existing is None or existing.scheme() != plain:
            todo.append((module, attr, scheme, current.requires_grad))
    for module, attr, scheme, grad in todo:
        if parametrize.is_parametrized(module, attr):
            parametrize.remove_parametrizations(module, attr, leave_parametrized=False)
        dtype = getattr(torch, scheme["dtype"])
        placeholder = nn.Parameter(torch.empty(scheme["shape"], dtype=dtype, device="meta"),
                                   requires_grad=grad)
        attach_relaxed(module, attr, placeholder,
                       RelaxedWeight.from_scheme(scheme, dtype=dtype, device="meta"))
