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

``merge_`` turns every relaxed weight back into a plain dense weight. In files the
shared base is stored once as ``<weight>.shared`` (tied across the members), each
member's delta as ``<weight>.lora_A`` / ``<weight>.lora_B`` or ``<weight>.delta``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ...core.protocol import (
    FLOAT_DTYPES,
    PartSpec,
    SharedWeight,
    attach,
    dtype_name,
    iter_shared,
    materialize_,
)
from ...core.ties import record_ties
from ...errors import FormatError


class RelaxedWeight(SharedWeight):
    """weight = shared + (lora_B @ lora_A).view(shape), or shared + delta for vectors.

    Example:
        >>> import torch
        >>> shared = torch.zeros(3, 4)
        >>> r = RelaxedWeight((3, 4), rank=3, residual=torch.ones(3, 4))
        >>> torch.allclose(r(shared), torch.ones(3, 4), atol=1e-6)
        True
    """

    kind = "relaxed"
    version = 1
    original_part = "shared"

    def __init__(self, shape: tuple[int, ...], rank: int, residual: torch.Tensor | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None
                 ) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)
        if residual is not None:
            dtype, device = residual.dtype, residual.device
        kw: dict[str, Any] = {"dtype": dtype, "device": device}
        self.lora_B: nn.Parameter | None
        self.lora_A: nn.Parameter | None
        self.delta: nn.Parameter | None
        if len(self.shape) < 2:
            self.rank = 0
            self.lora_B = None
            self.lora_A = None
            delta = residual.detach().clone() if residual is not None \
                else torch.zeros(self.shape, **kw)
            self.delta = nn.Parameter(delta)
            return
        out_f, in_f = self.shape[0], math.prod(self.shape[1:])
        if not 1 <= rank <= min(out_f, in_f):
            raise ValueError(f"rank {rank} outside 1..{min(out_f, in_f)}")
        self.rank = int(rank)
        self.delta = None
        b, a = torch.zeros(out_f, rank, **kw), torch.zeros(rank, in_f, **kw)
        if residual is not None and residual.device.type != "meta":
            b, a = _svd_init(residual.detach().reshape(out_f, in_f), rank)
        self.lora_B = nn.Parameter(b)  # (out, r)
        self.lora_A = nn.Parameter(a)  # (r, in)

    def forward(self, shared: torch.Tensor) -> torch.Tensor:
        if self.delta is not None:
            return shared + self.delta
        assert self.lora_B is not None and self.lora_A is not None
        return shared + (self.lora_B @ self.lora_A).view(shared.shape)

    # -- the shared-weight protocol ----------------------------------------------------

    def scheme(self, original: torch.Tensor) -> dict[str, Any]:
        """The JSON description of this weight's sharing scheme (see docs/format.md)."""
        return {"kind": self.kind, "rank": self.rank, "shape": list(self.shape),
                "delta": "dense" if self.delta is not None else "low_rank",
                "dtype": dtype_name(original.dtype)}

    @classmethod
    def check_scheme(cls, s: dict[str, Any]) -> None:
        keys = {"kind", "rank", "shape", "delta", "dtype"}
        if set(s) != keys:
            raise FormatError(f"has keys {sorted(s)[:10]}, expected {sorted(keys)}")
        if s["dtype"] not in FLOAT_DTYPES:
            raise FormatError(f"dtype {str(s['dtype'])[:40]!r} is not one of {list(FLOAT_DTYPES)}")
        shape, rank = s["shape"], s["rank"]
        low_rank = len(shape) >= 2
        if s["delta"] != ("low_rank" if low_rank else "dense"):
            raise FormatError(f"delta {str(s['delta'])[:40]!r} does not fit shape {shape}")
        limit = max_rank(tuple(shape))
        if isinstance(rank, bool) or not isinstance(rank, int) or not (
                1 <= rank <= limit if low_rank else rank == 0):
            raise FormatError(f"rank {str(rank)[:40]} does not fit shape {shape} (1..{limit})")

    @classmethod
    def part_specs(cls, s: dict[str, Any]) -> dict[str, PartSpec]:
        shape, dtype = tuple(s["shape"]), s["dtype"]
        specs = {"shared": PartSpec(dtype, shape)}
        if len(shape) < 2:
            specs["delta"] = PartSpec(dtype, shape)
        else:
            rank = s["rank"]
            specs["lora_B"] = PartSpec(dtype, (shape[0], rank))
            specs["lora_A"] = PartSpec(dtype, (rank, math.prod(shape[1:])))
        return specs

    def parts(self) -> dict[str, torch.Tensor]:
        if self.delta is not None:
            return {"delta": self.delta}
        assert self.lora_B is not None and self.lora_A is not None
        return {"lora_B": self.lora_B, "lora_A": self.lora_A}

    @classmethod
    def from_scheme(cls, s: dict[str, Any], parts: dict[str, torch.Tensor]) -> RelaxedWeight:
        any_part = next(iter(parts.values()))
        weight = cls(tuple(s["shape"]), int(s["rank"]), dtype=any_part.dtype, device="meta")
        for name, tensor in parts.items():
            setattr(weight, name, nn.Parameter(tensor))
        return weight

    def describe(self, original: torch.Tensor) -> str:
        return "dense delta" if self.delta is not None else f"rank-{self.rank} delta"

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
    attach(module, name, relaxed, shared)


def iter_relaxed(model: nn.Module):
    """Yield (weight fqn, module, attribute, RelaxedWeight) for every relaxed weight."""
    for fqn, module, attr, weight, _original in iter_shared(model):
        if isinstance(weight, RelaxedWeight):
            yield fqn, module, attr, weight


def merge_(model: nn.Module) -> nn.Module:
    """Turn every relaxed weight into a plain dense weight W_i = W_shared + B_i A_i.

    The result has no sharing left among the merged weights (each member owns its
    dense tensor); runtimes that know no sharing can run it. Returns ``model``.

    Example:
        >>> import torch
        >>> import weightshare as ws
        >>> m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
        >>> _ = ws.tie_(m, ws.TieConfig(strategy="all", rank="full"))
        >>> merge_(m) is m, ws.find_ties(m)
        (True, [])
    """
    materialize_(model, kinds=(RelaxedWeight.kind,))
    record_ties(model)
    return model
