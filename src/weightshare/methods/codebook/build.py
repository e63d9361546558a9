"""Building one codebook weight (or one set of weights sharing a codebook) from its dense
weight, importance and layer-input Hessian.

The steps, in the (rows, values per row) view of the weight (rows = output channels):

1. outliers: the ``outliers`` fraction of values with the largest importance x value^2
   are set aside, exact;
2. scales: each row is divided by its root mean square (outliers excluded), so rows of
   different magnitude share one codebook;
3. codebook: weighted k-means of the (scaled) values, or of d-vectors of them, weight =
   importance x scale^2 so that the fit counts errors in the weight's own units;
4. codes: the k-means assignment, or with a Hessian, error feedback (``feedback.py``),
   then a least-squares refit of codebook and scales in the output metric (``refit.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...core.protocol import SharedWeight
from .config import ClusterConfig, group_size_for
from .feedback import RowCodebooks, error_feedback
from .kmeans import EXACT_MAX_DISTINCT, kmeans1d, kmeans1d_batched, kmeans1d_exact_batched
from .kmeans.vector import kmeans_nd
from .refit import Problem, refit_codebook, refit_scales
from .vector import VectorCodebookWeight
from .weight import CodebookWeight, codes_dtype

REFIT_ROUNDS = 2  # codebook <-> scales alternations after error feedback


@dataclass
class Layer:
    """One weight in the (rows, values per row) view, with what its fit needs."""

    name: str
    shape: tuple[int, ...]
    axis: int
    dtype: torch.dtype
    weight: torch.Tensor  # (rows, cols) float64
    importance: torch.Tensor | None  # (rows, cols) float64
    hessian: torch.Tensor | None  # (cols, cols) float64, Linear-like layers only
    exact: torch.Tensor | None = None  # (rows, cols) bool: outliers
    scales: torch.Tensor | None = None  # (rows,) float64
    codes: torch.Tensor | None = None  # (rows, cols / d) int64
    values: torch.Tensor | None = None  # (rows, cols): what the weight becomes

    @property
    def rows(self) -> int:
        return self.weight.shape[0]


def make_layer(name: str, dense: torch.Tensor, axis: int, importance: torch.Tensor | None,
               hessian: torch.Tensor | None, config: ClusterConfig) -> Layer:
    """The view of one dense weight, with outliers chosen and scales set."""
    w = dense.detach().movedim(axis, 0)
    rows = w.shape[0]
    w2 = w.reshape(rows, -1).double()
    imp = None
    if importance is not None:
        imp = importance.movedim(axis, 0).reshape(rows, -1).double()
    elif hessian is not None:
        imp = torch.diagonal(hessian).double().clamp(min=0).unsqueeze(0).expand_as(w2)
    layer = Layer(name, tuple(dense.shape), axis, dense.dtype, w2, imp, hessian)
    if config.outliers > 0:
        count = max(1, round(config.outliers * w2.numel()))
        score = w2 * w2 if imp is None else imp * w2 * w2
        top = torch.topk(score.reshape(-1), count).indices
        layer.exact = torch.zeros(w2.numel(), dtype=torch.bool)
        layer.exact[top] = True
        layer.exact = layer.exact.reshape(w2.shape)
    if config.scales == "per_channel":
        keep = w2 if layer.exact is None else torch.where(layer.exact, 0.0, w2)
        n = w2.shape[1] if layer.exact is None else (~layer.exact).sum(1).clamp(min=1)
        rms = (keep.pow(2).sum(1) / n).sqrt()
        layer.scales = torch.where(rms > 0, rms, torch.ones_like(rms))
    return layer


def fit_weights(layer: Layer) -> torch.Tensor:
    """k-means weights of the scaled values: importance x scale^2, 0 at outliers."""
    w = torch.ones_like(layer.weight) if layer.importance is None else layer.importance.clone()
    if layer.scales is not None:
        w = w * layer.scales.unsqueeze(1) ** 2
    if layer.exact is not None:
        w = torch.where(layer.exact, 0.0, w)
    return w


def scaled(layer: Layer) -> torch.Tensor:
    return layer.weight if layer.scales is None else layer.weight / layer.scales.unsqueeze(1)


def fit_codebook(layers: list[Layer], config: ClusterConfig) -> torch.Tensor:
    """The codebook (groups, K, d) float64 of one layer, or the one shared by ``layers``
    (per_tensor); sets each layer's k-means codes."""
    d, levels = config.vector_dim, config.levels
    if len(layers) == 1 and config.granularity != "per_tensor":
        layer = layers[0]
        groups = layer.rows // group_size_for(config.granularity, layer.rows, config.group_size)
        values = scaled(layer).reshape(groups, -1)
        weights = fit_weights(layer).reshape(groups, -1)
        if d == 1:
            cb, codes = _solve_groups(values, weights, layer.importance is not None
                                      or layer.exact is not None, config)
            layer.codes = codes.reshape(layer.rows, -1)
            return cb.unsqueeze(2)
        books, all_codes = [], []
        for g in range(groups):
            c, code = kmeans_nd(values[g].reshape(-1, d), levels,
                                weights[g].reshape(-1, d), seed=config.seed)
            books.append(c)
            all_codes.append(code)
        layer.codes = torch.stack(all_codes).reshape(layer.rows, -1)
        return torch.stack(books)
    values = torch.cat([scaled(x).reshape(-1) for x in layers])
    weights = torch.cat([fit_weights(x).reshape(-1) for x in layers])
    plain = all(x.importance is None and x.exact is None for x in layers)
    if d == 1:
        cent, codes = kmeans1d(values, levels, None if plain else weights,
                               method=config.method, init=config.init, seed=config.seed)
        cent = cent.double()
        if cent.numel() < levels:  # fewer distinct values than entries: repeat the last
            cent = torch.cat([cent, cent[-1:].expand(levels - cent.numel())])
        cb = cent.reshape(1, levels, 1)
    else:
        c, codes = kmeans_nd(values.reshape(-1, d), levels,
                             None if plain else weights.reshape(-1, d), seed=config.seed)
        cb = c.unsqueeze(0)
    start = 0
    for x in layers:
        n = x.weight.numel() // d
        x.codes = codes[start:start + n].reshape(x.rows, -1)
        start += n
    return cb


def _solve_groups(values: torch.Tensor, weights: torch.Tensor, weighted: bool,
                  config: ClusterConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group scalar codebooks: (groups, K) float64 and codes (groups, n)."""
    w = weights if weighted else None
    groups, levels = values.shape[0], config.levels
    if config.method == "fast":
        return kmeans1d_batched(values, levels, w, init=config.init, seed=config.seed)
    if values.shape[1] <= EXACT_MAX_DISTINCT:
        return kmeans1d_exact_batched(values, levels, w)
    cb = torch.empty(groups, levels, dtype=torch.float64)
    codes = torch.empty(values.shape, dtype=torch.int64)
    for g in range(groups):
        cent, code = kmeans1d(values[g], levels, None if w is None else w[g])
        cent = cent.double()
        cb[g, :cent.numel()] = cent
        cb[g, cent.numel():] = cent[-1]
        codes[g] = code
    return cb, codes


def assign(layer: Layer, codebook: torch.Tensor, config: ClusterConfig) -> None:
    """Codes and values of ``layer`` for a fixed codebook: error feedback when the layer
    has a Hessian and the config asks for it, else the k-means codes."""
    books = RowCodebooks(codebook, layer.rows, layer.scales)
    if config.error_feedback and layer.hessian is not None:
        layer.codes, layer.values = error_feedback(layer.weight, layer.hessian, books,
                                                   layer.exact)
        return
    if layer.codes is None:
        layer.codes = books.nearest_all(layer.weight)
    values = books.values(layer.codes)
    if layer.exact is not None:
        values = torch.where(layer.exact, layer.weight, values)
    layer.values = values


def refit(layers: list[Layer], codebook: torch.Tensor, config: ClusterConfig) -> torch.Tensor:
    """Least-squares refit of the codebook (and scales) of layers assigned by error
    feedback; returns the new codebook and updates the layers' scales and values."""
    if not (config.error_feedback and all(x.hessian is not None for x in layers)):
        return codebook
    for _ in range(REFIT_ROUNDS):
        problems = [_problem(x) for x in layers]
        codebook = refit_codebook(codebook, problems)
        if config.scales == "none":
            break
        for x, p in zip(layers, problems):
            x.scales = refit_scales(codebook, p)
    for x in layers:
        books = RowCodebooks(codebook, x.rows, x.scales)
        assert x.codes is not None and x.values is not None
        values = books.values(x.codes)
        x.values = values if x.exact is None else torch.where(x.exact, x.values, values)
    return codebook


def _problem(x: Layer) -> Problem:
    assert x.hessian is not None and x.codes is not None and x.values is not None
    exact_values = None if x.exact is None else torch.where(x.exact, x.values, 0.0)
    return Problem(x.weight, x.hessian, x.codes, x.scales, x.exact, exact_values)


def to_weight(layer: Layer, codebook: torch.Tensor, config: ClusterConfig
              ) -> tuple[SharedWeight, torch.Tensor]:
    """The shared weight and its original (the codebook, in the weight's dtype)."""
    assert layer.codes is not None and layer.values is not None
    outliers = None
    if layer.exact is not None:
        r, c = torch.nonzero(layer.exact, as_tuple=True)
        outliers = (r, c, layer.values[r, c].to(layer.dtype))
    scales = None if layer.scales is None else layer.scales.to(layer.dtype)
    gs = group_size_for(config.granularity, layer.rows, config.group_size)
    codes = layer.codes.to(codes_dtype(config.bits))
    weight: SharedWeight
    if config.vector_dim == 1:
        moved = list(layer.shape)
        moved.insert(0, moved.pop(layer.axis))
        codes = codes.reshape(moved).movedim(0, layer.axis).contiguous()
        # float32 codebooks of a half-precision model: the layer still computes in its dtype
        stored = torch.float32 if config.codebook_dtype == "float32" else layer.dtype
        weight = CodebookWeight(codes, config.bits, config.granularity, gs, layer.axis,
                                layer.dtype if stored != layer.dtype else None,
                                scales=scales, outliers=outliers)
        return weight, codebook[:, :, 0].to(stored)
    weight = VectorCodebookWeight(codes, config.bits, config.vector_dim, layer.shape,
                                  config.granularity, gs, layer.axis, scales=scales,
                                  outliers=outliers)
    return weight, codebook.to(layer.dtype)


def values_per_row(shape: tuple[int, ...], axis: int) -> int:
    return math.prod(shape) // shape[axis]
