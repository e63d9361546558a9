"""The classic MNIST rows: one function trains a LeNet with one kind of sharing, saves a
weightshare file and measures it. ``weightshare train`` and ``benchmarks/classic.py`` run
these; a study can call them too.

``sharing``:

* ``none``: the dense network (the baseline every ratio is measured against);
* ``small``: the dense network shrunk to the parameters of ``hash`` at ``ratio`` (widths
  scaled by one factor): HashedNets' equal-size baseline;
* ``hash``: HashedNets: every weight hashed to ``ratio`` of its values, trained from
  scratch;
* ``prune-cluster``: Deep Compression from a trained dense network: gradual magnitude
  pruning while training, then codebooks of 2**bits values with a pinned zero
  (``ClusterConfig(zero=True)``), then fine-tuning the codebooks with the mask kept;
* ``soft``: soft weight sharing from a trained dense network: training with a
  ``SoftSharingPrior``, snapping to its components (``soft_to_codebook_``), then a short
  fine-tuning of the shared values; with ``soft_refit`` (both networks' default) the
  survivors then train freely with the prior's zeros kept (``KeepZeros``), are clustered
  again per layer (``soft_refit_bits``, a pinned zero) and the shared values fine-tuned
  once more.

Every row reports the test error on the MNIST test set (never trained on), the file's
bytes on disk and the ratio to the fp32 dense file of the full network, measured from
the files. Codes and gaps are stored at fixed width, or entropy-coded with
``entropy=True`` (``--entropy``; the fixed-width size is then reported as well).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..analysis.report import inspect as inspect_report
from ..data.mnist import MNIST, load_mnist, random_shift
from ..errors import ConfigError, FormatError
from ..io import load, save
from ..io.entropy import constriction
from ..io.read import read_metadata
from ..io.write import check_output_path
from ..methods.codebook import ClusterConfig, cluster_
from ..methods.hash import hash_
from ..methods.prune import GradualPruning
from ..methods.soft import AnnealPrior, HardenZero, SoftSharingPrior, soft_to_codebook_
from ..methods.soft.prior import SCALES
from ..models.lenet import MODELS, build, equal_size, rebuild, widths
from .loop import evaluate, fit
from .refit import check_refit_layers, refit_, refit_bits

SHARINGS = ("none", "small", "hash", "prune-cluster", "soft")
FROM_DENSE = ("prune-cluster", "soft")  # rows that start from a trained dense network

# the settings each network trains best with (None in a TrainConfig field means these)
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "lenet300": {"epochs": 20, "sparsity": 0.95, "prune_epochs": 40, "soft_epochs": 20,
                 "finetune_epochs": 3, "zero_std": 0.0375, "prior_weight_end": 5e-6,
                 "soft_decay": 0.0, "soft_refit": 80, "soft_refit_bits": "fc1=2,3",
                 "soft_refit_finetune": 6},
    # a LeNet-5 step costs ~8x a LeNet-300-100 step on one core: fewer epochs keep every
    # row within 15 minutes of one shared core (soft: few epochs under the prior, whose
    # term makes a step ~1.5x slower, more for the refit; chosen on the validation split,
    # docs/benchmarks.md "Soft weight sharing: the refit")
    "lenet5": {"epochs": 10, "sparsity": 0.96, "prune_epochs": 10, "soft_epochs": 8,
               "finetune_epochs": 2, "zero_std": 0.03, "prior_weight_end": 5e-6,
               "soft_decay": 0.0, "soft_refit": 12, "soft_refit_bits": "3",
               "soft_refit_finetune": 2},
}


def _flag(name: str) -> str:
    """A field named for both kinds of user: ``soft_refit (--soft-refit)``."""
    return f"{name} (--{name.replace('_', '-')})"


def _help(text: str) -> dict[str, Any]:
    return {"help": text}


@dataclass(frozen=True)
class TrainConfig:
    """One row: which network, which sharing, and how to train it.

    Fields left at None take the network's default (``MODEL_DEFAULTS``).

    Example:
        >>> TrainConfig(model="lenet5", sharing="hash").resolved().epochs
        10
    """

    model: str = field(default="lenet300", metadata=_help("lenet300 or lenet5"))
    sharing: str = field(default="none", metadata=_help(
        "none, small (dense at the hash's size), hash, prune-cluster or soft"))
    epochs: float | None = field(default=None, metadata=_help(
        "epochs of dense (none, small) or hashed training [default: per model]"))
    lr: float = field(default=1e-3, metadata=_help("Adam learning rate of dense/hash training"))
    batch_size: int = field(default=100, metadata=_help("examples per step"))
    augment: bool = field(default=True, metadata=_help(
        "shift training images by up to 2 pixels (every row alike)"))
    seed: int = field(default=0, metadata=_help("seed of initialisation, order, augmentation"))
    ratio: float = field(default=1 / 8, metadata=_help(
        "hash and small: real weights per virtual weight (e.g. 0.125 = 1/8)"))
    sparsity: float | None = field(default=None, metadata=_help(
        "prune-cluster: fraction of weights pruned (one global magnitude threshold) "
        "[default: per model]"))
    prune_epochs: float | None = field(default=None, metadata=_help(
        "prune-cluster: epochs of training while pruning [default: per model]"))
    bits: int = field(default=5, metadata=_help(
        "prune-cluster: bits per code, 2**bits values including the pinned zero"))
    finetune_epochs: float | None = field(default=None, metadata=_help(
        "prune-cluster and soft: epochs of fine-tuning the shared values (mask kept) "
        "[default: per model]"))
    components: int = field(default=17, metadata=_help(
        "soft: mixture components, the zero component included"))
    prior_weight: float = field(default=1e-6, metadata=_help(
        "soft: weight of -log prior in the loss at the start (tau / training-set size)"))
    prior_weight_end: float | None = field(default=None, metadata=_help(
        "soft: the weight at the end, raised geometrically over the run (AnnealPrior) "
        "[default: per model]"))
    zero_mixing: float = field(default=0.999, metadata=_help(
        "soft: fixed mixing proportion of the zero component"))
    zero_std: float | None = field(default=None, metadata=_help(
        "soft: fixed standard deviation of the zero component (sets how large a weight "
        "it claims, hence the sparsity) [default: per model]"))
    soft_biases: bool = field(default=False, metadata=_help(
        "soft: the biases share the codebook too (else they stay fp32)"))
    soft_epochs: float | None = field(default=None, metadata=_help(
        "soft: epochs of training with the prior [default: per model]"))
    zero_std_start: float | None = field(default=None, metadata=_help(
        "soft: widen the zero component from this standard deviation to zero_std over "
        "the first 70% of the run (geometrically); left out: zero_std from the start"))
    soft_scale: str = field(default="none", metadata=_help(
        "soft: none (the raw weights, one codebook for all layers) or layer (the prior "
        "sees each layer in units of its RMS; one codebook per layer)"))
    soft_harden: int = field(default=50, metadata=_help(
        "soft: every k steps, weights the zero component claims become exact zeros and "
        "stay zero (HardenZero); 0: only at the final snap"))
    soft_decay: float | None = field(default=None, metadata=_help(
        "soft: the learning rate decays linearly to 0 over this last fraction of the soft "
        "run (constant before); 0: constant throughout [default: per model]"))
    soft_refit: float | None = field(default=None, metadata=_help(
        "soft: after the snap and fine-tuning, train the surviving weights freely for this "
        "many epochs (the prior's zeros kept), then cluster each layer again to "
        "soft_refit_bits with a pinned zero and fine-tune the shared values once more "
        "(soft_refit_finetune epochs); "
        "0: off [default: per model]"))
    soft_refit_bits: str | None = field(default=None, metadata=_help(
        "soft: bits per code of the refit's per-layer codebooks (2**bits values, zero "
        "included): B for every layer, or LAYER=B pairs then B for the other layers, e.g. "
        "fc1=2,3 or fc1=2,fc2=4,3 [default: per model]"))
    soft_refit_finetune: float | None = field(default=None, metadata=_help(
        "soft: epochs of fine-tuning the refit's codebooks (codes and zeros fixed) "
        "[default: per model]"))
    soft_every: int = field(default=4, metadata=_help(
        "soft: evaluate the prior every k-th step, k times as strong (the same pull, k "
        "times cheaper)"))
    entropy: bool = field(default=False, metadata=_help(
        "entropy-code the stored codes and gaps (Deep Compression's Huffman stage; needs "
        "the constriction package); the fixed-width size is reported too"))
    validation: int = field(default=0, metadata=_help(
        "hold out this many training images and report their error too (to choose "
        "settings without the test set); 0: train on all 60,000"))

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.sharing not in SHARINGS:
            raise ConfigError(f"{_flag('sharing')} must be one of {', '.join(SHARINGS)}, got "
                              f"{self.sharing!r}")
        if not 0 < self.ratio <= 1:
            raise ConfigError(f"{_flag('ratio')} must be a fraction in (0, 1], got "
                              f"{self.ratio!r}")
        if not 1 <= self.bits <= 8:
            raise ConfigError(f"{_flag('bits')} must be 1..8, got {self.bits!r}")
        if self.sparsity is not None and not 0 <= self.sparsity < 1:
            raise ConfigError(f"{_flag('sparsity')} must be a fraction 0 <= s < 1, got "
                              f"{self.sparsity!r}")
        if self.finetune_epochs is not None and self.finetune_epochs < 0:
            raise ConfigError(f"{_flag('finetune_epochs')} must be >= 0, got "
                              f"{self.finetune_epochs!r}")
        for name in ("epochs", "prune_epochs", "soft_epochs", "zero_std", "zero_std_start"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{_flag(name)} must be > 0, got {value!r}")
        end = self.prior_weight_end
        if not (self.prior_weight > 0 and (end is None or end > 0)):
            raise ConfigError(f"{_flag('prior_weight')} and {_flag('prior_weight_end')} "
                              "must be > 0")
        if self.soft_scale not in SCALES:
            raise ConfigError(f"{_flag('soft_scale')} must be one of {', '.join(SCALES)}, got "
                              f"{self.soft_scale!r}")
        if self.soft_harden < 0:
            raise ConfigError(f"{_flag('soft_harden')} must be >= 0, got {self.soft_harden!r}")
        if self.soft_decay is not None and not 0 <= self.soft_decay <= 1:
            raise ConfigError(f"{_flag('soft_decay')} must be a fraction in [0, 1], got "
                              f"{self.soft_decay!r}")
        for name in ("soft_refit", "soft_refit_finetune"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{_flag(name)} must be >= 0, got {value!r}")
        if self.soft_refit_bits is not None:
            refit_bits(self.soft_refit_bits)  # raises ConfigError when malformed
        if self.soft_every < 1:
            raise ConfigError(f"{_flag('soft_every')} must be >= 1, got {self.soft_every!r}")
        if self.validation < 0 or self.batch_size < 1:
            raise ConfigError(f"{_flag('validation')} must be >= 0, {_flag('batch_size')} >= 1")

    def resolved(self) -> TrainConfig:
        """This config with every None replaced by the network's default."""
        defaults = MODEL_DEFAULTS[self.model]
        return dataclasses.replace(self, **{k: v for k, v in defaults.items()
                                            if getattr(self, k) is None})


def run(config: TrainConfig, data: str | os.PathLike | MNIST, output: str | os.PathLike, *,
        init: str | os.PathLike | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Train one row, save it to ``output`` and measure it; returns the result dict.

    ``init``: a weightshare file of the trained dense network (``sharing="none"``) that
    ``prune-cluster`` and ``soft`` start from; without it they train one first (its time
    counted in ``seconds["dense"]``).
    """
    config = config.resolved()
    _check_start(config, init)
    out = check_output_path(output)
    if config.entropy:
        constriction()  # before any training: the coder must be there to save
    mnist = data if isinstance(data, MNIST) else load_mnist(data)
    if config.validation:
        train_set, held = mnist.holdout(config.validation)
    else:
        train_set, held = mnist.train, None
    augment = random_shift if config.augment else None
    seconds: dict[str, float] = {}
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    if config.sharing == "small":
        reference = build(config.model)
        hashed = hash_(build(config.model), config.ratio, init="sample", progress=False)
        model = equal_size(config.model, inspect_report(hashed).unique_params)
    else:
        model = build(config.model)
        reference = model
    result: dict[str, Any] = {}

    def train(m: nn.Module, epochs: float, lr: float, seed: int, **kw: Any) -> Any:
        return fit(m, train_set, epochs=epochs, lr=lr, batch_size=config.batch_size,
                   augment=augment, seed=seed, progress=progress, **kw)

    if config.sharing in FROM_DENSE:
        if init is not None:
            load(init, model)  # checked to be a dense file of this network (_check_init)
        else:
            train(model, config.epochs, config.lr, config.seed)  # type: ignore[arg-type]
        result["dense_test_error"] = evaluate(model, mnist.test)["error"]
        seconds["dense"] = time.perf_counter() - start
    begin = time.perf_counter()
    if config.sharing == "hash":
        hash_(model, config.ratio, init="sample", progress=False)
    if config.sharing in ("none", "small", "hash"):
        run_ = train(model, config.epochs, config.lr, config.seed)  # type: ignore[arg-type]
        result["seconds_per_step"] = run_.seconds_per_step
    elif config.sharing == "prune-cluster":
        _deep_compression(model, config, train, result)
    else:
        _soft(model, config, train, result)
    seconds["train"] = time.perf_counter() - begin
    result["test_error"] = evaluate(model, mnist.test)["error"]
    if held is not None:
        result["validation_error"] = evaluate(model, held)["error"]
    # the widths only (a few dozen bytes): enough to rebuild the skeleton (load_row)
    extra = {"lenet": widths(model)}
    save(model, out, extra=extra, entropy=config.entropy)
    seconds["total"] = time.perf_counter() - start
    if config.entropy:  # what the same model takes at fixed width, also from a file
        with tempfile.TemporaryDirectory() as tmp:
            result["fixed_width_bytes"] = save(model, Path(tmp) / "fixed.safetensors",
                                               extra=extra).stat().st_size
    report = inspect_report(out)
    dense_bytes = dense_file_bytes(reference)
    file_bytes = out.stat().st_size
    result.update({
        "model": config.model, "sharing": config.sharing, "output": str(out),
        "file_bytes": file_bytes, "dense_file_bytes": dense_bytes,
        "ratio": dense_bytes / file_bytes, "params": report.total_params,
        "stored_params": report.unique_params, "widths": widths(model),
        "seconds": seconds, "config": dataclasses.asdict(config),
        "kinds": sorted({r.scheme for r in report.rows}),
    })
    return result


def _check_start(config: TrainConfig, init: str | os.PathLike | None) -> None:
    """ConfigError, before any data is read or training starts, for an ``init`` the row
    would not use and for ``soft_refit_bits`` layers the network does not have."""
    if init is not None:
        if config.sharing not in FROM_DENSE:
            raise ConfigError(f"init (--init) is for {' and '.join(FROM_DENSE)}, which start "
                              f"from a dense file; sharing {config.sharing} trains from "
                              "scratch: leave it out")
        _check_init(config.model, init)
    if config.sharing == "soft" and config.soft_refit:
        check_refit_layers(build(config.model), config.soft_refit_bits or "3", config.model)


def _check_init(model: str, init: str | os.PathLike) -> None:
    """ConfigError, from the file's metadata alone (no tensor read), for an ``init`` that
    holds shared weights or another network than ``model``."""
    fix = f"init (--init) needs the file of `weightshare train {model} --sharing none`"
    try:
        meta = read_metadata(init)
    except FormatError as error:  # its own advice (e.g. "run weightshare compress") would mislead
        raise FormatError(f"{str(error).split(';')[0]}: {fix}") from None
    kinds = sorted({str(scheme.get("kind")) for scheme in meta.get("schemes", {}).values()})
    if kinds:
        raise ConfigError(f"{init} holds {', '.join(kinds)} weights, not a dense network: {fix}")
    spec = meta.get("extra", {}).get("lenet")
    name = spec.get("name") if isinstance(spec, dict) else None
    if name is not None and name != model:  # without the description (a file the user
        # saved with ws.save) its tensors are checked when it loads
        raise ConfigError(f"{init} holds a {name}, not a {model}: {fix}")


def _deep_compression(model: nn.Module, config: TrainConfig, train: Any,
                      result: dict[str, Any]) -> None:
    pruning = GradualPruning(model, config.sparsity, scope="global",  # type: ignore[arg-type]
                             every=50, end=0.7)
    train(model, config.prune_epochs, config.lr, config.seed + 1, callbacks=[pruning])
    pruning.finish()
    cluster_(model, ClusterConfig(bits=config.bits, zero=True, min_size=0), progress=False)
    if config.finetune_epochs:
        train(model, config.finetune_epochs, config.lr / 4, config.seed + 2)


def _soft(model: nn.Module, config: TrainConfig, train: Any, result: dict[str, Any]) -> None:
    # the nonzero components' mixing proportions stay equal (learning-rate multiplier 0):
    # learned, they collapse onto a few components within minutes of training
    prior = SoftSharingPrior(model, config.components, weight=config.prior_weight,
                             zero_mixing=config.zero_mixing, zero_std=config.zero_std,
                             biases=config.soft_biases, scale=config.soft_scale,
                             every=config.soft_every, lrs=(0.2, 6.0, 0.0))
    ramp = None if config.zero_std_start is None else (config.zero_std_start, config.zero_std)
    anneal = AnnealPrior(prior, config.prior_weight, config.prior_weight_end,  # type: ignore[arg-type]
                         zero_std=ramp)  # type: ignore[arg-type]
    callbacks: list[Any] = [anneal]
    if config.soft_harden:
        callbacks.append(HardenZero(model, prior, config.soft_harden))
    # a constant learning rate while the prior pulls and the zeros harden (a rate decayed
    # early would leave the weights where they are), then, with ``soft_decay``, a linear
    # decay to 0 over the last part of the run
    decay = config.soft_decay or 0.0
    train(model, config.soft_epochs, config.lr / 2, config.seed + 1, regularizers=[prior],
          callbacks=callbacks, schedule="linear" if decay else "constant",
          decay_start=min(1.0 - decay, 0.999))
    soft_to_codebook_(model, prior)
    if config.finetune_epochs:
        # the shared values only (codes and zeros fixed): the codebooks and the biases
        train(model, config.finetune_epochs, config.lr / 4, config.seed + 2)
    if config.soft_refit:
        # the prior chose the zeros; the survivors, held near its few shared values, then
        # train freely (zeros kept) and are clustered again per layer
        refit_(model, config.soft_refit_bits or "3", train, config.soft_refit,
               config.soft_refit_finetune or 0.0, config.lr, config.seed)


def dense_file_bytes(model: nn.Module) -> int:
    """Bytes of the fp32 weightshare file of ``model``'s architecture with plain dense
    weights (what every ratio is measured against), measured by writing it."""
    spec = widths(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = save(rebuild(spec), Path(tmp) / "dense.safetensors")
        return path.stat().st_size


def load_row(path: str | os.PathLike) -> nn.Module:
    """A file written by :func:`run`, loaded into the LeNet its metadata describes."""
    spec = read_metadata(path).get("extra", {}).get("lenet")
    if not isinstance(spec, dict):
        raise ConfigError(f"{path} was not written by weightshare train (no LeNet "
                          "description); load it with weightshare.load(path, model)")
    return load(path, rebuild(spec))
