"""cluster_: turn the selected weights of a model into codebook weights, in place."""

from __future__ import annotations

import dataclasses
import sys
from functools import partial
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ...core.guard import before_sharing
from ...core.protocol import SharedWeight, dense_weight
from ...core.select import Target, compile_patterns, select_targets
from ...core.walk import Build, check_targets, share_targets
from ...errors import ConfigError, DataError, ShapeError
from .allocate import allocate_bits
from .build import Layer, assign, fit_codebook, make_layer, refit, to_weight, values_per_row
from .calibration import Calibration, input_importance
from .config import ClusterConfig
from .fisher import FisherLoss, fisher_importance, floored
from .groups import group_sizes, warn_changes
from .hessian import forward_stages, input_hessians, takes_hessian
from .plain import cluster_plain, is_plain
from .vector import VectorCodebookWeight
from .weight import CodebookWeight

RESHARE = (CodebookWeight, VectorCodebookWeight)


def cluster_(model: nn.Module, config: ClusterConfig | None = None,
             calibration: Calibration | None = None, *, progress: bool | None = None,
             fisher_loss: FisherLoss | None = None, **_options: Any) -> nn.Module:
    """Cluster the selected weights of ``model`` to ``2**bits`` shared values, in place.

    Each selected weight becomes a codebook weight (see ``CodebookWeight``; with
    ``vector_dim > 1`` a ``VectorCodebookWeight``): a trainable codebook plus integer
    codes, and per-channel scales and exact outliers when the config asks; the dense
    weight is dropped. With ``calibration`` inputs the clustering is data-aware
    (``config.weighting``: activation or Fisher importance; ``config.error_feedback``:
    GPTQ-style assignment on the layer-input Hessian). ``fisher_loss(output, batch)``
    replaces the default Fisher loss. Tied weights are clustered once and stay tied.

    Example:
        >>> import torch, weightshare as ws
        >>> model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU())
        >>> _ = ws.cluster_(model, ws.ClusterConfig(bits=2))
        >>> model[0].weight.unique().numel() <= 4
        True
    """
    config = config or ClusterConfig()
    before_sharing(model)
    if config.zero:  # zero-sharing codebooks live with pruning (methods/prune)
        from ..prune.cluster import zero_cluster_

        return zero_cluster_(model, config, calibration, progress=progress)
    targets = select_targets(model, config.include, config.exclude, config.min_size,
                             what="cluster")
    check_targets(targets, reshare=RESHARE)
    check_shapes(targets, config)
    sizes, changes = group_sizes(targets, config)  # per_group fallback (groups.py)
    warn_changes(changes)
    sets = shared_sets(targets, config)
    what = data_needed(config)
    if calibration is None and what:
        raise DataError(f"{what} needs calibration data: pass calibration=batches (a few "
                        "dozen inputs), or use the CLI, which calibrates on built-in "
                        "sentences; or turn it off")
    importance: dict[str, torch.Tensor] = {}
    if calibration is not None and config.weighting == "activation":
        importance = input_importance(model, targets, calibration)
    elif calibration is not None and config.weighting == "fisher":
        importance = {name: floored(f) for name, f in fisher_importance(
            model, targets, calibration, fisher_loss, config.seed).items()}
    hessians: dict[str, torch.Tensor] = {}
    if config.error_feedback and (not config.sequential or config.budget is not None):
        # (sequential mode measures them stage by stage; the budget's estimate needs them)
        hessians = input_hessians(model, targets, calibration)  # type: ignore[arg-type]
    plan = Plan(config, sizes=sizes)
    if config.budget is not None:
        assert calibration is not None  # checked above
        in_sets = {t.name for s in sets for t in s}
        units = sets + [[t] for t in targets if t.name not in in_sets]
        plan = Plan(config, allocate_bits(model, targets, units, config, calibration,
                                          fisher_loss, hessians, sizes), sizes)
    if config.sequential:
        _sequential(model, targets, sets, plan, importance, calibration, progress)
    else:
        _cluster_all(targets, sets, plan, importance, hessians, progress)
    return model


def data_needed(config: ClusterConfig) -> str | None:
    """The option of ``config`` that cannot run without calibration data, or None."""
    return ("error_feedback=True" if config.error_feedback else "weighting='fisher'"
            if config.weighting == "fisher" else f"budget={config.budget}"
            if config.budget is not None else None)


def check_shapes(targets: list[Target], config: ClusterConfig) -> None:
    """ShapeError when ``vector_dim`` does not divide a target's values per row."""
    for t in targets:
        shape = tuple(dense_weight(t.module).shape)
        per_row = values_per_row(shape, t.axis)
        if per_row % config.vector_dim:
            raise ShapeError(f"vector_dim {config.vector_dim} does not divide the {per_row} "
                             f"values per output channel of {t.fqn}; choose a vector_dim "
                             f"that divides {per_row} or exclude it")


def shared_sets(targets: list[Target], config: ClusterConfig) -> list[list[Target]]:
    """Targets grouped by the first ``shared_codebooks`` pattern their module name matches
    (each group shares one codebook); unmatched targets are not in any group."""
    pats = compile_patterns(config.shared_codebooks, "shared_codebooks")
    sets: list[list[Target]] = [[] for _ in pats]
    for t in targets:
        names = [t.name] + [n for n, _ in t.aliases]
        for i, p in enumerate(pats):
            if any(p.search(n) for n in names):
                sets[i].append(t)
                break
    for pat, members in zip(config.shared_codebooks, sets):
        if not members:
            raise ConfigError(f"shared_codebooks pattern {pat!r} matches no selected layer; "
                              "patterns are searched in module names, fix the pattern")
        _check_can_share(pat, members)
    return [s for s in sets if s]


def _check_can_share(pattern: str, members: list[Target]) -> None:
    first = dense_weight(members[0].module)
    for t in members[1:]:
        w = dense_weight(t.module)
        if w.dtype != first.dtype:
            raise ConfigError(f"shared_codebooks {pattern!r}: {members[0].fqn} is {first.dtype} "
                              f"but {t.fqn} is {w.dtype}, and one codebook tensor has one dtype;"
                              " convert the model to one dtype or split the pattern")
        if w.device != first.device:
            raise ConfigError(f"shared_codebooks {pattern!r}: {members[0].fqn} is on "
                              f"{first.device} but {t.fqn} on {w.device}; one codebook lives "
                              "on one device, move the model first")
        if isinstance(t.module, nn.Embedding) != isinstance(members[0].module, nn.Embedding):
            table = t if isinstance(t.module, nn.Embedding) else members[0]
            raise ConfigError(f"shared_codebooks {pattern!r} mixes an embedding table "
                              f"({table.fqn}) with layer weights, whose values live on "
                              "different scales; share codebooks among like layers")


class Plan:
    """The config of every target: ``config``, with ``bits``, ``vector_dim`` and
    ``granularity`` replaced where a budget allocated another option, and ``group_size``
    where the per_group fallback chose another divisor (groups.py)."""

    def __init__(self, config: ClusterConfig,
                 options: dict[str, tuple[int, int, str]] | None = None,
                 sizes: dict[str, int] | None = None) -> None:
        self.config = config
        self.options = options or {}
        self.group_sizes = sizes or {}
        self._cache: dict[tuple[int, int, str, int], ClusterConfig] = {}

    def get(self, name: str) -> ClusterConfig:
        bits, dim, gran = self.options.get(name, (self.config.bits, self.config.vector_dim,
                                                  self.config.granularity))
        key = (bits, dim, gran, self.group_sizes.get(name, self.config.group_size))
        if key not in self._cache:
            self._cache[key] = dataclasses.replace(self.config, bits=bits, vector_dim=dim,
                                                   granularity=gran, group_size=key[3],
                                                   budget=None)
        return self._cache[key]


def prebuilt(weight: SharedWeight, original: torch.Tensor) -> Build:
    """A build function for ``share_targets`` that returns what was built already."""
    return lambda _target: (weight, original)


def _layer(t: Target, config: ClusterConfig, importance: dict[str, torch.Tensor],
           hessians: dict[str, torch.Tensor]) -> Layer:
    return make_layer(t.name, dense_weight(t.module), t.axis, importance.get(t.name),
                      hessians.get(t.name), config)


def _build_one(t: Target, plan: Plan, importance: dict[str, torch.Tensor],
               hessians: dict[str, torch.Tensor]) -> tuple[SharedWeight, torch.Tensor]:
    config = plan.get(t.name)
    if is_plain(config):  # the lean path: no float64 copies of a large table
        return cluster_plain(t, config, importance.get(t.name))
    with torch.no_grad():
        layer = _layer(t, config, importance, hessians)
        codebook = fit_codebook([layer], config)
        assign(layer, codebook, config)
        codebook = refit([layer], codebook, config)
        return to_weight(layer, codebook, config)


def _build_set(members: list[Target], plan: Plan,
               importance: dict[str, torch.Tensor], hessians: dict[str, torch.Tensor]
               ) -> list[tuple[SharedWeight, torch.Tensor]]:
    """The weights of layers sharing one codebook: one Parameter, several weights."""
    config = plan.get(members[0].name)
    with torch.no_grad():
        layers = [_layer(t, config, importance, hessians) for t in members]
        codebook = fit_codebook(layers, config)
        for layer in layers:
            assign(layer, codebook, config)
        codebook = refit(layers, codebook, config)
        built = [to_weight(layer, codebook, config) for layer in layers]
    param = nn.Parameter(built[0][1].contiguous(),
                         requires_grad=dense_weight(members[0].module).requires_grad)
    return [(weight, param) for weight, _ in built]


def _cluster_all(targets: list[Target], sets: list[list[Target]], plan: Plan,
                 importance: dict[str, torch.Tensor], hessians: dict[str, torch.Tensor],
                 progress: bool | None) -> None:
    in_sets = {t.name for s in sets for t in s}
    for members in sets:
        for t, (weight, param) in zip(members, _build_set(members, plan, importance,
                                                          hessians)):
            share_targets([t], prebuilt(weight, param), progress=False)
    single = [t for t in targets if t.name not in in_sets]
    if single:
        share_targets(single, partial(_build_one, plan=plan, importance=importance,
                                      hessians=hessians), progress=progress, desc="clustering")


def _sequential(model: nn.Module, targets: list[Target], sets: list[list[Target]],
                plan: Plan, importance: dict[str, torch.Tensor],
                calibration: Calibration | None, progress: bool | None) -> None:
    """Error feedback layer after layer, each stage's inputs taken from the model with
    every earlier stage already clustered. Layers sharing a codebook get it fitted on
    their original weights first; its refit runs once all of them are assigned."""
    assert calibration is not None
    set_of = {t.name: i for i, s in enumerate(sets) for t in s}
    shared: list[tuple[list[Layer], torch.Tensor]] = []
    for s in sets:
        config = plan.get(s[0].name)
        layers = [_layer(t, config, importance, {}) for t in s]
        shared.append((layers, fit_codebook(layers, config)))
    show = progress if progress is not None else sys.stderr.isatty()
    bar = tqdm(total=len(targets), desc="clustering", unit="layer", disable=not show,
               file=sys.stderr)
    with bar:
        for stage, stop in forward_stages(model, targets, calibration):
            hessians = input_hessians(model, [t for t in stage if takes_hessian(t)],
                                      calibration, stop_after=stop or None)
            single = [t for t in stage if t.name not in set_of]
            if single:
                share_targets(single, partial(_build_one, plan=plan, importance=importance,
                                              hessians=hessians), progress=False)
            for t in stage:
                if t.name in set_of:  # assign with the shared codebook, attach for now
                    layers, codebook = shared[set_of[t.name]]
                    layer = next(x for x in layers if x.name == t.name)
                    layer.hessian = hessians.get(t.name)
                    config = plan.get(t.name)
                    with torch.no_grad():
                        assign(layer, codebook, config)
                        weight, original = to_weight(layer, codebook, config)
                    share_targets([t], prebuilt(weight, original), progress=False)
            bar.update(len(stage))
    for (layers, codebook), members in zip(shared, sets):
        config = plan.get(members[0].name)
        with torch.no_grad():
            codebook = refit(layers, codebook, config)
            built = [to_weight(layer, codebook, config) for layer in layers]
        param = nn.Parameter(built[0][1].contiguous())
        for t, (weight, _) in zip(members, built):
            share_targets([t], prebuilt(weight, param), progress=False)
