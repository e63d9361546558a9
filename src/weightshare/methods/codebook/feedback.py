"""Error feedback: assign codes column by column, compensating each column's error on the
columns not yet assigned (GPTQ's update, with a codebook instead of a uniform grid;
GPTVQ's for vectors).

For a layer y = W x with input statistics H = E[x x^T], fixing column c of W to its
codebook value q_c is best followed by moving the remaining columns by
-(w_c - q_c) / U_cc * U_c,(c+1:), with U the upper Cholesky factor of H^-1 (Frantar et
al., 2022). Applied one column after the other (in blocks of 128 for cache-friendly
lazy updates) it keeps the layer's output error tr(dW H dW^T) far below that of plain
nearest-entry assignment. Vector codes fix d columns at once: the entry is chosen for
all d, then the d single-column updates are applied in order (which together equal the
joint multi-column update).

:class:`RowCodebooks` is the one place that knows how a weight's rows map to codebooks
and scales; error feedback, plain assignment and the refit all go through it.
"""

from __future__ import annotations

import torch

_BLOCK = 128  # columns per lazy-update block (a multiple of every vector_dim)


class RowCodebooks:
    """Codebooks of a (rows, cols) weight: ``codebook`` (groups, K, d) float64, rows
    ``r * groups // rows`` use group ``r // group_size``; optional ``scales`` (rows,)."""

    def __init__(self, codebook: torch.Tensor, rows: int,
                 scales: torch.Tensor | None = None) -> None:
        self.codebook = codebook.double()
        self.groups, self.levels, self.dim = self.codebook.shape
        self.rows = rows
        self.group_size = rows // self.groups
        self.scales = None if scales is None else scales.double().reshape(rows, 1)
        self._row_group = torch.arange(rows) // self.group_size
        if self.dim == 1:  # sorted entries: nearest = searchsorted of the midpoints
            cb = self.codebook[:, :, 0]
            self._order = cb.argsort(1)
            srt = cb.gather(1, self._order)
            self._mids = ((srt[:, 1:] + srt[:, :-1]) / 2)[self._row_group].contiguous()
            self._sorted = srt[self._row_group]
            self._rank_to_code = self._order[self._row_group]

    def as_float(self) -> RowCodebooks:
        """A float32 copy (what the error-feedback loop computes in)."""
        out = RowCodebooks.__new__(RowCodebooks)
        out.__dict__.update({k: (v.float() if isinstance(v, torch.Tensor)
                                 and v.is_floating_point() else v)
                             for k, v in self.__dict__.items()})
        return out

    def _scaled(self, w: torch.Tensor) -> torch.Tensor:
        return w if self.scales is None else w / self.scales.clamp(min=1e-30)

    def nearest(self, w: torch.Tensor, coord_weights: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest entry of each row's codebook to ``w`` (rows, d): (values (rows, d) in
        the weight's units, codes (rows,)). ``coord_weights`` (d,) weight the coordinates
        of the distance (vectors only)."""
        v = self._scaled(w)
        if self.dim == 1 and self.groups == 1:  # one sorted codebook: bucketize
            rank1 = torch.bucketize(v[:, 0].contiguous(), self._mids[0])
            vals = self._sorted[0][rank1].unsqueeze(1)
            codes = self._rank_to_code[0][rank1]
        elif self.dim == 1:
            rank = torch.searchsorted(self._mids, v.contiguous())  # (rows, 1)
            vals = self._sorted.gather(1, rank)
            codes = self._rank_to_code.gather(1, rank)[:, 0]
        else:
            cw = torch.ones(self.dim, dtype=v.dtype) if coord_weights is None else coord_weights
            cb = self.codebook  # (G, K, d)
            vg = v.reshape(self.groups, self.group_size, self.dim)
            # (G, rows/G, K): sum_t cw_t (v_t - c_t)^2 without the |v|^2 term
            dist = ((cb * cb) @ cw).unsqueeze(1) - 2 * torch.bmm(vg * cw, cb.transpose(1, 2))
            codes = dist.argmin(2).reshape(self.rows)
            vals = self.codebook.reshape(-1, self.dim)[self._row_group * self.levels + codes]
        return (vals if self.scales is None else vals * self.scales), codes

    def nearest_all(self, weight: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        """Plain assignment of a whole (rows, cols) weight: codes (rows, cols / d)."""
        cols = weight.shape[1] // self.dim
        codes = torch.empty(self.rows, cols, dtype=torch.int64)
        for j in range(0, cols, chunk):
            for t in range(j, min(j + chunk, cols)):
                codes[:, t] = self.nearest(weight[:, t * self.dim:(t + 1) * self.dim])[1]
        return codes

    def values(self, codes: torch.Tensor, with_scales: bool = True) -> torch.Tensor:
        """(rows, cols / d) codes -> (rows, cols) values."""
        idx = self._row_group.unsqueeze(1) * self.levels + codes
        vals = self.codebook.reshape(-1, self.dim)[idx].reshape(self.rows, -1)
        if with_scales and self.scales is not None:
            vals = vals * self.scales
        return vals


def inverse_factor(hessian: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """U, upper Cholesky factor of (H + damp * mean(diag H) * I)^-1 (float64).

    Dampening keeps the inverse stable when the calibration tokens are fewer than the
    features (H singular); it is raised tenfold until the factorisation succeeds."""
    h = hessian.double().clone()
    n = h.shape[0]
    dead = torch.diagonal(h) <= 0
    h[dead, dead] = 1.0  # a feature no calibration input used: its column is free
    mean = float(torch.diagonal(h).mean())
    eye = torch.eye(n, dtype=h.dtype)
    for attempt in range(6):
        try:
            chol = torch.linalg.cholesky(h + damp * (10 ** attempt) * mean * eye)
            hinv = torch.cholesky_inverse(chol)
            return torch.linalg.cholesky(hinv, upper=True)
        except RuntimeError:  # torch.linalg.LinAlgError: not positive definite
            continue
    raise RuntimeError("the layer-input Hessian is not positive definite even after "
                       "dampening; the calibration inputs are degenerate")


@torch.no_grad()
def error_feedback(weight: torch.Tensor, hessian: torch.Tensor, books: RowCodebooks,
                   exact: torch.Tensor | None = None, damp: float = 0.01,
                   act_order: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ assignment of ``weight`` (rows, cols) to ``books``.

    Returns ``(codes (rows, cols / d), values (rows, cols))``: ``values`` holds the
    codebook value of each weight, except where ``exact`` (a bool (rows, cols) mask:
    outliers) is set, which keeps the compensated weight itself (an exact side value).

    Example:
        >>> w = torch.tensor([[0.2, 0.9, -0.4]], dtype=torch.float64)
        >>> books = RowCodebooks(torch.tensor([[[-0.5], [0.0], [0.5], [1.0]]]), rows=1)
        >>> codes, _ = error_feedback(w, torch.eye(3), books)
        >>> codes.tolist()  # no correlation between inputs: plain nearest entries
        [[1, 3, 0]]
    """
    if act_order and books.dim == 1:
        # GPTQ's "act order": the columns with the largest inputs first, while the most
        # columns are left to absorb their error (scalar codes only: a vector's d
        # columns must stay together)
        perm = torch.argsort(torch.diagonal(hessian), descending=True)
        codes, values = error_feedback(weight[:, perm], hessian[perm][:, perm], books,
                                       None if exact is None else exact[:, perm], damp,
                                       act_order=False)
        inv = torch.argsort(perm)
        return codes[:, inv], values[:, inv]
    # float32 like GPTQ: the loop is bound by memory traffic and per-op overhead, and the
    # dampened factor is well conditioned
    w = weight.float().clone()
    rows, cols = w.shape
    d = books.dim
    u = inverse_factor(hessian, damp).float()
    books = books.as_float()
    codes = torch.empty(rows, cols // d, dtype=torch.int64)
    values = torch.empty_like(w)
    for i1 in range(0, cols, _BLOCK):
        i2 = min(i1 + _BLOCK, cols)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        diag = torch.diagonal(u1)
        for j in range(0, i2 - i1, d):
            # distance weights of a vector's coordinates: an error costs (err / U_cc)^2
            cw = None if d == 1 else diag[j:j + d].pow(-2)
            q, code = books.nearest(w1[:, j:j + d], cw)
            if exact is not None:
                q = torch.where(exact[:, i1 + j:i1 + j + d], w1[:, j:j + d], q)
            codes[:, (i1 + j) // d] = code
            values[:, i1 + j:i1 + j + d] = q
            for t in range(d):
                c = j + t
                e = (w1[:, c] - q[:, t]) / u1[c, c]
                w1[:, c:] -= e.unsqueeze(1) * u1[c, c:].unsqueeze(0)
                err1[:, c] = e
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    return codes, values.double()


def output_error(weight: torch.Tensor, values: torch.Tensor, hessian: torch.Tensor) -> float:
    """tr(dW H dW^T) / tr(W H W^T): the layer's relative squared output error."""
    dw = (weight.double() - values.double())
    num = float(((dw @ hessian.double()) * dw).sum())
    den = float(((weight.double() @ hessian.double()) * weight.double()).sum())
    return num / max(den, 1e-300)
