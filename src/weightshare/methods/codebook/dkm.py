"""Differentiable k-means (DKM) whose memory does not grow with layer size x K.

DKM (Cho et al., 2022) trains dense weights through a soft assignment to the codebook:
each weight is replaced by sum_c A_ic c with A = softmax(-(w_i - c)^2 / tau), a few
differentiable k-means updates of c per step, and tau lowered until the assignment is
hard. Done on every weight, A is an (n x K) matrix kept for the backward pass: what makes
coremltools' DKMPalettizer run out of memory on ~500 M-parameter models.

Here, as in eDKM (Cho et al., 2023), the soft assignment works on the *distinct* values:
every weight is binned by its float16 bit pattern (at most 65,536 bins, no sort), the
bins' means u and counts n stand for the weights, and A is (bins in use x K). The dense
weight is u_soft[bin of each weight], a gather. Memory per layer: O(n) for the bin index
and gather (what any layer costs) plus O(65,536 x K) for the clustering, whatever n.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import nn
from torch.nn.utils import parametrize

from ...core.protocol import attach, parametrization_list
from ...errors import ConfigError
from ...train.hooks import StepInfo
from .weight import CodebookWeight

DKM_ITERS = 3  # differentiable k-means updates of the centroids per forward
TAU_DROP = 1e-3  # tau falls from tau0 to tau0 * TAU_DROP over the run


def bin_index(w: torch.Tensor) -> torch.Tensor:
    """(n,) int64 bin of each value: its float16 bit pattern, 0..65535."""
    return w.detach().reshape(-1).to(torch.float16).view(torch.int16).long() + 32768


class DKMWeight(nn.Module):
    """Parametrization for training: dense master weight (normalised by the scales) ->
    soft-clustered weight. Not a shared weight: a model holding it cannot be saved until
    :meth:`DKMSession.finalize` turns it back into codes."""

    def __init__(self, base: CodebookWeight, codebook: torch.Tensor) -> None:
        super().__init__()
        self.base = base  # keeps scales, outliers and the layout
        self.centroids = nn.Parameter(codebook.detach().reshape(-1).clone())
        gaps = codebook.detach().reshape(-1).sort().values.diff()
        spacing = float(gaps[gaps > 0].mean()) if bool((gaps > 0).any()) else 1.0
        # a value on an entry weighs its neighbour e^-20 against it: the soft weight starts
        # as the hard one except near cluster boundaries, and hardens from there
        self.tau0 = spacing ** 2 / 20
        self.tau = self.tau0

    def soft(self, master: torch.Tensor) -> torch.Tensor:
        """Soft-clustered values of ``master`` (any shape), through the bins."""
        flat = master.reshape(-1)
        with torch.no_grad():
            bins = bin_index(flat)
            counts = torch.bincount(bins, minlength=65536)
            used = torch.nonzero(counts).flatten()  # (U,)
            compact = torch.full((65536,), -1, dtype=torch.long)
            compact[used] = torch.arange(used.numel())
            index = compact[bins]  # (n,) in 0..U-1
            cnt = counts[used].to(master.dtype)
        u = torch.zeros(used.numel(), dtype=master.dtype).index_add(0, index, flat) / cnt
        c: torch.Tensor = self.centroids
        for _ in range(DKM_ITERS):
            a = torch.softmax(-(u.unsqueeze(1) - c.unsqueeze(0)) ** 2 / self.tau, dim=1)
            mass = a * cnt.unsqueeze(1)  # (U, K)
            c = (mass * u.unsqueeze(1)).sum(0) / mass.sum(0).clamp(min=1e-12)
        a = torch.softmax(-(u.unsqueeze(1) - c.unsqueeze(0)) ** 2 / self.tau, dim=1)
        return (a @ c)[index].reshape(master.shape)

    def forward(self, master: torch.Tensor) -> torch.Tensor:
        # master: weight of the base's shape, divided by its scales
        rows = master.movedim(self.base.axis, 0).reshape(self.base.codes.shape[self.base.axis],
                                                         -1)
        out = self.base._apply_extras(self.soft(rows))
        moved = list(self.base.codes.movedim(self.base.axis, 0).shape)
        return out.reshape(moved).movedim(0, self.base.axis)

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        return value


class DKMSession:
    """Swaps each scalar per-tensor codebook weight of a model for a :class:`DKMWeight`
    over the teacher's dense weight, anneals tau during training, and turns the trained
    weights back into codes and codebooks."""

    def __init__(self, model: nn.Module, teacher: nn.Module, weights: list,
                 seconds: float | None, steps: int | None) -> None:
        dense = dict(teacher.named_parameters())
        self.seconds, self.steps = seconds, steps
        self.items: list[tuple[nn.Module, str, DKMWeight]] = []
        for fqn, _module, _attr, weight, _original in weights:
            if not isinstance(weight, CodebookWeight) or weight.num_groups != 1:
                raise ConfigError(f"method='dkm' trains scalar per-tensor codebooks; {fqn} is "
                                  f"{weight.kind} ({getattr(weight, 'granularity', '')}); use "
                                  "method='codebooks' for it")
            if fqn not in dense or tuple(dense[fqn].shape) != tuple(weight.codes.shape):
                raise ConfigError(f"method='dkm' starts from the teacher's dense {fqn}, which "
                                  "the teacher lacks; pass the original model as teacher")
        for fqn, module, attr, weight, original in weights:
            master = dense[fqn].detach().clone()
            if weight.scales is not None:
                shape = [1] * master.dim()
                shape[weight.axis] = -1
                master = master / weight.scales.detach().reshape(shape)
            dkm = DKMWeight(weight, original)
            parametrize.remove_parametrizations(module, attr, leave_parametrized=False)
            module._parameters[attr] = nn.Parameter(master)
            parametrize.register_parametrization(module, attr, dkm, unsafe=True)
            self.items.append((module, attr, dkm))

    def parameters(self) -> list[nn.Parameter]:
        out: list[nn.Parameter] = []
        for module, attr, dkm in self.items:
            out += [cast(nn.Parameter, parametrization_list(module, attr).original),
                    dkm.centroids, *dkm.base.parameters()]
        return out

    def anneal(self, info: StepInfo) -> None:
        done = max(info.step / self.steps if self.steps else 0.0,
                   info.seconds / self.seconds if self.seconds else 0.0)
        for _m, _a, dkm in self.items:
            dkm.tau = dkm.tau0 * math.exp(math.log(TAU_DROP) * min(done, 1.0))

    @torch.no_grad()
    def finalize(self) -> None:
        """Hard assignment: codes = nearest centroid of each trained weight; the codebook
        = the centroids refitted as the means of their members."""
        for module, attr, dkm in self.items:
            master = parametrization_list(module, attr).original.detach()
            c = dkm.centroids.detach().double()
            order = c.argsort()
            srt = c[order]
            rows = master.movedim(dkm.base.axis, 0).reshape(
                dkm.base.codes.shape[dkm.base.axis], -1).double()
            rank = torch.searchsorted((srt[1:] + srt[:-1]) / 2, rows.reshape(-1))
            sums = torch.zeros_like(srt).index_add_(0, rank, rows.reshape(-1))
            counts = torch.bincount(rank, minlength=srt.numel()).double()
            srt = torch.where(counts > 0, sums / counts.clamp(min=1), srt)
            codes = rank.reshape(rows.shape)
            moved = list(dkm.base.codes.movedim(dkm.base.axis, 0).shape)
            dkm.base.codes.copy_(codes.reshape(moved).movedim(0, dkm.base.axis)
                                 .to(dkm.base.codes.dtype))
            parametrize.remove_parametrizations(module, attr, leave_parametrized=False)
            original = nn.Parameter(srt.to(master.dtype).reshape(1, -1))
            attach(module, attr, dkm.base, original)


def saved_sizes(fn: Any, *args: Any) -> list[int]:
    """Numbers of elements of every tensor autograd saves while ``fn(*args)`` runs (what the
    backward pass will hold): the memory test of DKM uses it."""
    sizes: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return sizes
