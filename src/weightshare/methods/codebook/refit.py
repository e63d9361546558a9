"""Codebook and scale refit after assignment: least squares in the layer-output metric.

With the codes fixed, the dense weight is linear in the codebook entries (and, with the
codebook fixed, in the per-channel scales), so the output error
sum_p tr((W_p - Q_p) H_p (W_p - Q_p)^T) over the layers p that share a codebook is a
quadratic in them. The entries are solved by conjugate gradients (each step costs one
(rows x cols) @ (cols x cols) product per layer, never a (K x K) system built from one-hot
matrices); the scales in closed form, one row at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .feedback import RowCodebooks


@dataclass
class Problem:
    """One layer's share of a refit: weight (rows, cols), H (cols, cols), codes
    (rows, cols / d), scales (rows,) or None, and the outliers: ``exact`` (rows, cols)
    bool mask and their values (rows, cols, zero elsewhere), or None."""

    weight: torch.Tensor
    hessian: torch.Tensor
    codes: torch.Tensor
    scales: torch.Tensor | None = None
    exact: torch.Tensor | None = None
    exact_values: torch.Tensor | None = None

    def target(self) -> torch.Tensor:
        """What the codebook part must fit: the weight minus the exact side values."""
        w = self.weight.double()
        if self.exact is None:
            return w
        return torch.where(self.exact, torch.zeros_like(w), w)

    def hessian_f32(self) -> torch.Tensor:
        if getattr(self, "_h32", None) is None:
            self._h32 = self.hessian.float()
        return self._h32

    def member(self) -> torch.Tensor | None:
        return None if self.exact is None else (~self.exact).double()


def _books(codebook: torch.Tensor, p: Problem) -> RowCodebooks:
    return RowCodebooks(codebook, p.weight.shape[0], p.scales)


def _apply(codebook: torch.Tensor, problems: list[Problem]) -> torch.Tensor:
    """A @ codebook of the normal equations, summed over the layers."""
    out = torch.zeros_like(codebook)
    for p in problems:
        books = _books(codebook, p)
        vals = books.values(p.codes)  # (rows, cols): s * C[codes]
        m = p.member()
        if m is not None:
            vals = vals * m
        # float32 product (the costly part), float64 sums
        g = (vals.float() @ p.hessian_f32()).double()
        out += _scatter(g, p, books, m, codebook.shape)
    return out


def _scatter(g: torch.Tensor, p: Problem, books: RowCodebooks, m: torch.Tensor | None,
             shape: torch.Size) -> torch.Tensor:
    """Sum of s * m * g over the members of every entry: (G, K, d)."""
    if books.scales is not None:
        g = g * books.scales
    if m is not None:
        g = g * m
    groups, levels, d = shape
    rows = g.shape[0]
    idx = (books._row_group.unsqueeze(1) * levels + p.codes).reshape(-1)  # (rows * cols/d)
    out = torch.zeros(groups * levels, d, dtype=g.dtype)
    out.index_add_(0, idx, g.reshape(rows * (g.shape[1] // d), d))
    return out.reshape(shape)


@torch.no_grad()
def refit_codebook(codebook: torch.Tensor, problems: list[Problem], iters: int = 4
                   ) -> torch.Tensor:
    """Conjugate-gradient steps from ``codebook`` (G, K, d) toward the least-squares
    entries for the fixed codes of ``problems`` (the layers sharing it); float64.

    Example:
        >>> w = torch.tensor([[1.0, 2.0, 3.1]], dtype=torch.float64)
        >>> p = Problem(w, torch.eye(3, dtype=torch.float64), torch.tensor([[0, 1, 1]]))
        >>> [round(v, 6) for v in refit_codebook(torch.zeros(1, 2, 1), [p]).flatten().tolist()]
        [1.0, 2.55]
    """
    x = codebook.double().clone()
    b = torch.zeros_like(x)
    for p in problems:
        books = _books(x, p)
        b += _scatter(p.target() @ p.hessian.double(), p, books, p.member(), x.shape)
    r = b - _apply(x, problems)
    d = r.clone()
    rs = float((r * r).sum())
    scale = float((b * b).sum())
    for _ in range(iters):
        if rs <= 1e-24 * max(scale, 1e-300):
            break
        ad = _apply(d, problems)
        den = float((d * ad).sum())
        if den <= 0:
            break
        alpha = rs / den
        x += alpha * d
        r -= alpha * ad
        rs_new = float((r * r).sum())
        d = r + (rs_new / rs) * d
        rs = rs_new
    return x


@torch.no_grad()
def refit_scales(codebook: torch.Tensor, p: Problem) -> torch.Tensor:
    """Per-row least-squares scales for the fixed codebook and codes: (rows,) float64."""
    assert p.scales is not None
    books = RowCodebooks(codebook, p.weight.shape[0], None)
    v = books.values(p.codes)
    m = p.member()
    if m is not None:
        v = v * m
    vh = v @ p.hessian.double()
    num = (vh * p.target()).sum(1)
    den = (vh * v).sum(1)
    old = p.scales.double().reshape(-1)
    return torch.where(den > 1e-300, num / den.clamp(min=1e-300), old)
