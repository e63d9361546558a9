"""Bit allocation: a code width per layer so that the whole model meets a budget in bits
per weight (everything stored counted), spending bits where they buy the most.

Layers differ in how much their quantization error costs: on all-MiniLM-L6-v2 the word
embedding (half of the weights) loses less at 3 bits than the feed-forward layers at 4.
``ClusterConfig(budget=B)`` chooses each layer's bits among ``bits - 2 .. bits + 2``
(1..8), and for embedding tables also 8-bit codes of 8- or 4-vectors (1 or 2 bits per
weight) below ``bits``, to minimise the estimated loss increase

    sum over layers of  sum_ij F_ij (w_ij - q_b(w_ij))^2

(F: the Fisher / Gauss-Newton diagonal of ``fisher.py``, q_b: the layer's k-means
codebook at b bits, HAWQ-style; for layers that error feedback will assign, scaled by the
output-error ratio feedback / plain measured on a sample of the layer's rows, which
ranges from ~0.1 to ~0.5 on MiniLM and would otherwise starve the layers without it)
subject to the stored bits — codes, codebooks, scales,
outliers — not exceeding B per weight. The constrained problem is solved by a Lagrangian
search: for a price lambda per stored bit every layer takes the width minimising
loss + lambda x bits, and lambda is bisected until the budget holds.

Embedding rows that no calibration token used have no gradient; as one codebook errs
alike on every row, each row is given the table's mean sensitivity (unused rows
counting 0): the table's total Fisher, which is what it costs on text like the
calibration text.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from ...core.protocol import dense_weight, dtype_name
from ...core.select import Target
from ...errors import ConfigError
from .calibration import Calibration
from .config import ClusterConfig, group_size_for
from .feedback import RowCodebooks, error_feedback, output_error
from .fisher import FisherLoss, fisher_importance, floored
from .kmeans import kmeans1d, kmeans1d_exact_batched
from .kmeans.vector import kmeans_nd
from .vector import VectorCodebookWeight
from .weight import CodebookWeight

Option = tuple[int, int, str]  # (code bits, vector_dim, granularity)

SPREAD = 2  # candidate widths: bits - SPREAD .. bits + SPREAD
SAMPLE = 1 << 16  # values of a large weight its loss estimate is measured on
FISHER_BATCHES = 2  # calibration batches the sensitivities are estimated on
GAIN_ROWS = 64  # rows of a layer that error feedback's gain is measured on
VECTOR_OPTIONS = (8, 4)  # vector_dim of the 8-bit vector candidates of embedding tables


def stored_bits(shape: tuple[int, ...], axis: int, option: Option, config: ClusterConfig,
                dtype: torch.dtype = torch.float32, group_size: int | None = None,
                codebook: bool = True) -> float:
    """Bits the file stores for a weight of ``shape`` coded with ``option``: every part the
    weight's kind declares (codes packed at their width, codebooks — one per group of
    ``group_size`` rows, the size the per_group fallback really uses —, scales, outlier
    positions and values), counted from the kind's own ``part_specs`` so that the budget
    is what ``inspect`` and the file report. ``codebook=False``: without the codebook
    (a member of a shared-codebook set after the first: the file ties it to the first).

    Example:
        >>> cfg = ClusterConfig(bits=4, granularity="per_group", group_size=16)
        >>> stored_bits((64, 32), 0, (4, 1, "per_group"), cfg)  # codes + 4 codebooks of 16 fp32
        10240.0
        >>> stored_bits((64, 32), 0, (4, 1, "per_tensor"), cfg)  # codes + 1 codebook
        8704.0
    """
    bits, d, granularity = option
    rows = shape[axis]
    numel = math.prod(shape)
    gs = group_size_for(granularity, rows, group_size or config.group_size)
    dtype_str = config.codebook_dtype or dtype_name(dtype)
    scheme: dict = {"shape": list(shape), "axis": axis, "bits": bits, "group_size": gs,
                    "dtype": dtype_str, "vector_dim": d, "granularity": granularity}
    if config.scales != "none":
        scheme["scales"] = config.scales
    if config.outliers > 0:
        scheme["outliers"] = max(1, round(config.outliers * numel))  # as build.make_layer
    kind = CodebookWeight if d == 1 else VectorCodebookWeight
    specs = kind.part_specs(scheme)
    return float(8 * sum(spec.stored_bytes for part, spec in specs.items()
                         if codebook or part != "codebook"))


def options_for(t: Target, w: torch.Tensor, config: ClusterConfig) -> list[Option]:
    """Candidate (code bits, vector_dim, granularity) of one weight: scalar widths around
    ``bits`` at the config's granularity and, when that is per_group or per_channel, also
    with one codebook for the tensor (a 30,522-row table pays 0.2 bits per weight for
    4-bit codebooks of 6 rows, a 384 x 384 layer 0.08 for groups of 16: the budget
    decides where they are worth it); embedding tables (no layer input, so no error
    feedback) also as vectors of 8 or 4 weights per 8-bit code (1 or 2 bits per weight),
    one codebook per table, which code lookups far better than 1- or 2-bit scalars."""
    lo, hi = max(1, config.bits - SPREAD), min(8, config.bits + SPREAD)
    grans = [config.granularity] + (["per_tensor"] if config.granularity != "per_tensor"
                                    else [])
    out: list[Option] = [(b, 1, g) for g in grans for b in range(lo, hi + 1)]
    per_row = w.numel() // w.shape[t.axis]
    if isinstance(t.module, nn.Embedding):
        out += [(8, d, "per_tensor") for d in VECTOR_OPTIONS
                if per_row % d == 0 and 8 / d < config.bits]
    return out


def allocate_bits(model: nn.Module, targets: list[Target], units: list[list[Target]],
                  config: ClusterConfig, calibration: Calibration,
                  fisher_loss: FisherLoss | None = None,
                  hessians: dict[str, torch.Tensor] | None = None,
                  sizes: dict[str, int] | None = None) -> dict[str, Option]:
    """{target name: (code bits, vector_dim, granularity)} meeting ``config.budget`` bits
    per weight over ``targets``.

    ``units``: targets that must share one option (a shared codebook), the rest alone.
    ``hessians``: layer-input Hessians; with ``config.error_feedback``, a layer that has
    one gets its loss estimates scaled by what error feedback achieves on it
    (:func:`feedback_gain`), since the k-means estimate ignores it. ``sizes``: rows per
    codebook where the per_group fallback changed it (groups.py).
    """
    assert config.budget is not None
    sizes = sizes or {}
    if not callable(calibration):  # a rough estimate does: the first few batches
        calibration = list(itertools.islice(iter(calibration), FISHER_BATCHES))
    fisher = fisher_importance(model, targets, calibration, fisher_loss, config.seed,
                               embeddings=True)
    total_values = sum(dense_weight(t.module).numel() for t in targets)
    budget = config.budget * total_values
    # per unit: its options, and the loss estimate and stored bits of each
    table: list[tuple[list[Target], list[Option], list[float], list[float]]] = []
    for unit in units:
        first = dense_weight(unit[0].module).detach()
        opts = options_for(unit[0], first, config)
        if len(unit) > 1:  # a shared codebook: one scalar width for all its layers
            opts = [o for o in opts if o[1] == 1]
        losses = [0.0] * len(opts)
        costs = [0.0] * len(opts)
        for k, t in enumerate(unit):
            w = dense_weight(t.module).detach()
            rows = w.shape[t.axis]
            gs = group_size_for(config.granularity, rows, sizes.get(t.name, config.group_size))
            v, sens, scale = _sample(w, t.axis, _sensitivity(t, w, fisher.get(t.name)), config,
                                     gs)
            h = (hessians or {}).get(t.name)
            if config.error_feedback and h is not None:
                scale *= feedback_gain(w.movedim(t.axis, 0).reshape(rows, -1), h, config.bits)
            for i, opt in enumerate(opts):
                losses[i] += scale * _loss(v, sens, opt, rows if opt[2] == "per_tensor"
                                           else gs)
                # a shared codebook is stored once (the other members' are ties)
                costs[i] += stored_bits(tuple(w.shape), t.axis, opt, config, w.dtype, gs,
                                        codebook=k == 0)
        table.append((unit, opts, losses, costs))
    if sum(min(c) for *_, c in table) > budget:
        raise ConfigError(f"budget {config.budget} bits per weight is below what the "
                          "narrowest codes store with their codebooks; raise the budget or "
                          "lower bits")
    price_lo, price_hi = 0.0, 1.0
    while _spend(table, price_hi)[1] > budget:  # a price high enough to meet the budget
        price_hi *= 4
    for _ in range(60):
        mid = math.sqrt(price_lo * price_hi) if price_lo > 0 else price_hi / 1e6
        if _spend(table, mid)[1] > budget:
            price_lo = mid
        else:
            price_hi = mid
    choice, _ = _spend(table, price_hi)
    return {t.name: opts[i] for (unit, opts, _, _), i in zip(table, choice) for t in unit}


@torch.no_grad()
def feedback_gain(weight: torch.Tensor, hessian: torch.Tensor, bits: int,
                  sample_rows: int = GAIN_ROWS) -> float:
    """Output error of error feedback / that of plain assignment, in the layer-input
    metric, at ``bits``, measured on a seeded sample of rows (0.02..1). On MiniLM's
    layers it ranges from ~0.1 (feed-forward outputs) to ~0.5 (attention queries)."""
    w = weight.double()
    if w.shape[0] > sample_rows:
        pick = torch.randperm(w.shape[0], generator=torch.Generator().manual_seed(0))
        w = w[pick[:sample_rows]]
    imp = torch.diagonal(hessian).double().clamp(min=0).expand_as(w)
    cent, codes = kmeans1d(w.reshape(-1), 1 << bits, weights=imp.reshape(-1))
    books = RowCodebooks(cent.double().reshape(1, -1, 1), w.shape[0])
    plain = output_error(w, books.values(codes.reshape(w.shape)), hessian)
    _, fed = error_feedback(w, hessian, books)
    return min(1.0, max(0.02, output_error(w, fed, hessian) / max(plain, 1e-300)))


def _spend(table: list, price: float) -> tuple[list[int], float]:
    choice, spent = [], 0.0
    for _unit, _opts, losses, costs in table:
        i = min(range(len(losses)), key=lambda j: losses[j] + price * costs[j])
        choice.append(i)
        spent += costs[i]
    return choice, spent


def _sensitivity(t: Target, w: torch.Tensor, fisher: torch.Tensor | None) -> torch.Tensor:
    """Per-value weight of the loss estimate, in the (rows, values per row) view."""
    rows = w.shape[t.axis]
    if fisher is None:
        return torch.ones(rows, w.numel() // rows, dtype=torch.float64)
    f = fisher.movedim(t.axis, 0).reshape(rows, -1)
    if isinstance(t.module, nn.Embedding):
        # only the rows of tokens in the calibration text have gradients; a shared codebook
        # errs alike on every row, so the table's cost on similar text is its total Fisher
        # spread evenly (the mean over all rows, unused ones counting 0)
        f = f.mean(0, keepdim=True).expand_as(f)
    return floored(f)


def _sample(w: torch.Tensor, axis: int, sens: torch.Tensor, config: ClusterConfig,
            gs: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(values, sensitivities, scale): the (rows, values per row) view of a weight with its
    outliers' sensitivity zeroed (they are exact), cut to a seeded sample of at most
    ``SAMPLE`` values in whole row groups of ``gs`` rows (one codebook's); ``scale`` =
    full size / sample size."""
    rows = w.shape[axis]
    v = w.movedim(axis, 0).reshape(rows, -1).double()
    # sampling unit: one codebook's rows (per_group / per_channel), else single rows
    gs = 1 if gs == rows else gs
    scale = 1.0
    if v.numel() > SAMPLE:
        groups = rows // gs
        keep_groups = max(1, SAMPLE * groups // v.numel())
        pick = torch.randperm(groups, generator=torch.Generator().manual_seed(0))[:keep_groups]
        idx = (pick.unsqueeze(1) * gs + torch.arange(gs)).reshape(-1)
        scale = rows / idx.numel()
        v, sens = v[idx], sens[idx]
    if config.outliers > 0:
        count = max(1, round(config.outliers * v.numel()))
        top = torch.topk((sens * v * v).reshape(-1), count).indices
        sens = sens.reshape(-1).clone()
        sens[top] = 0
        sens = sens.reshape(v.shape)
    return v, sens, scale


def _loss(v: torch.Tensor, sens: torch.Tensor, option: Option, gs: int) -> float:
    """sum F (w - q)^2 of the (sampled) values ``v`` for the k-means codebooks of
    ``option``, one per ``gs`` rows (per_tensor: the layer's rows, more than the sample's)."""
    bits, d, _granularity = option
    rows = v.shape[0]
    if d > 1:  # vectors: one codebook over the sample (per_tensor)
        cent, codes = kmeans_nd(v.reshape(-1, d), 1 << bits, sens.reshape(-1, d), max_iter=6)
        err = (v.reshape(-1, d) - cent[codes]).reshape(-1)
    elif gs >= rows:
        cent, codes = kmeans1d(v.reshape(-1), 1 << bits, weights=sens.reshape(-1))
        err = v.reshape(-1) - cent.double()[codes]
    else:
        vg, sg = v.reshape(rows // gs, -1), sens.reshape(rows // gs, -1)
        cent, codes = kmeans1d_exact_batched(vg, 1 << bits, sg)
        err = (vg - cent.gather(1, codes)).reshape(-1)
    return float((sens.reshape(-1) * err * err).sum())
