"""SoftSharingPrior: a Gaussian-mixture prior that pulls weights to a few shared values.

Soft weight sharing (Nowlan & Hinton 1992; Ullrich, Meeds & Welling 2017): during
training the loss gains ``-weight * log p(w)`` with

    p(w) = prod_i sum_j pi_j N(w_i | mu_j, 1 / lambda_j)

over the chosen weights, with learnable means ``mu``, precisions ``lambda`` (with Gamma
hyper-priors) and mixing proportions ``pi``. Component 0 is pinned at mean 0 with a
large fixed proportion (``zero_mixing``): sharing the value zero is pruning. Weights
gather around the means as training goes on; ``soft_to_codebook_`` then snaps each to
its most responsible component and turns the model into ordinary zero-sharing
codebook weights (one codebook shared by every layer).

It is a regulariser for ``train.fit`` (``regularizers=[prior]``), which also trains
the prior's own parameters at the learning rates of ``param_groups``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ...core.protocol import dense_weight
from ...core.select import select_targets
from ...errors import ConfigError, DataError
from ..prune.cluster import zero_kmeans

_LOG_2PI = math.log(2 * math.pi)
SCALES = ("none", "layer")


def zero_reach(zero_std: float, zero_mixing: float, others: int) -> float:
    """How far from 0 the zero component claims weights from a component of its own width
    at the others' proportion: ``zero_std * sqrt(2 log(zero_mixing * others /
    (1 - zero_mixing)))`` (at least ``2 * zero_std``).

    Example:
        >>> round(zero_reach(0.03, 0.999, 16) / 0.03, 2)
        4.4
    """
    odds = zero_mixing * others / (1 - zero_mixing)
    return zero_std * max(2.0, math.sqrt(2 * math.log(odds)) if odds > 1 else 0.0)


class _MixtureLogLikelihood(torch.autograd.Function):
    """sum_i logsumexp_j (log pi_j + log N(w_i | mu_j, 1/lambda_j)) and its exact gradients,
    in a few in-place passes over one (n, K) array. Autograd over the plain expression
    keeps every intermediate and runs ~3x slower: this term runs on every weight at every
    step, so it decides how long soft weight sharing trains."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, means: torch.Tensor, log_precision: torch.Tensor,
                log_pi: torch.Tensor) -> torch.Tensor:
        precision = log_precision.exp()
        d = w.reshape(-1, 1) - means  # (n, K)
        a = d * d
        a *= -0.5 * precision
        a += log_pi + 0.5 * (log_precision - _LOG_2PI)
        top = a.max(1, keepdim=True).values
        a -= top
        a.exp_()
        total = a.sum(1, keepdim=True)
        a /= total  # the responsibilities, kept for backward
        ctx.save_for_backward(a, d, precision)
        return (top + total.log()).sum()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
        r, d, precision = ctx.saved_tensors
        rs = r.sum(0)
        rld = r * d
        rld *= precision  # r * lambda * d
        grad_w = rld.sum(1) * (-g)
        grad_means = rld.sum(0) * g
        rld *= d  # r * lambda * d**2
        grad_log_precision = 0.5 * g * (rs - rld.sum(0))
        return grad_w, grad_means, grad_log_precision, g * rs


class SoftSharingPrior(nn.Module):
    """A mixture of ``components`` Gaussians (one pinned at zero) over ``model``'s weights.

    ``weight``: multiplies ``-log p(w)`` in the loss (Ullrich et al.'s tau divided by the
    training-set size, for a loss that is a mean over a batch). ``zero_mixing``: the fixed
    proportion of the zero component. ``init``: the initial means, ``kmeans`` (k-means of
    the weights with the zero pinned: components where the weights are) or ``linear``
    (evenly spaced over the weights' range, as Ullrich et al.). ``init_std``: initial
    standard deviation of every component (default: the median spread of the k-means
    clusters, or a quarter of the linear spacing). ``zero_std``: fix the zero component's
    standard deviation instead of learning it. It sets how large a weight the zero
    component claims, hence the sparsity: with a learned one the zero component narrows
    onto the weights it already holds and the sparsity stalls. ``biases``: cover the
    chosen modules' biases too (they then share the codebook: small networks spend a
    noticeable part of their file on fp32 biases). ``gamma``
    and ``zero_gamma``: (shape, rate) of the Gamma hyper-priors on the precisions of the
    nonzero components and of the zero component. ``lrs``: learning-rate multipliers of
    (means, log-precisions, mixing logits) relative to the model's. ``every``: evaluate
    the term on every k-th call only, k times as strong (the same pull on average, k times
    cheaper: the term visits every weight and component). ``scale``: ``"none"`` (the
    prior sees the weights as they are, one scale for all layers, as Ullrich et al.) or
    ``"layer"`` (it sees each covered tensor divided by its own root mean square when the
    prior is made, a constant from then on). The layer scale makes the prior
    blind to rescaling a layer: networks whose layers can trade scale (ReLU, max-pooling
    and the linear convolutions of LeNet-5 are positively homogeneous) otherwise shrink a
    whole layer into the zero component's reach, where its weights keep working while
    tiny and are lost when snapped to exactly zero. Means and standard deviations are
    then in units of each layer's RMS, and each layer gets its own codebook at snapping.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(20, 20))
        >>> prior = SoftSharingPrior(model, components=5, weight=1e-3)
        >>> prior(model).shape, prior.means.shape
        (torch.Size([]), torch.Size([4]))
    """

    def __init__(self, model: nn.Module, components: int = 17, *, weight: float = 1e-5,
                 include: Sequence[str] = (), exclude: Sequence[str] = (), min_size: int = 0,
                 zero_mixing: float = 0.99, init_std: float | None = None,
                 gamma: tuple[float, float] = (250.0, 0.1),
                 zero_gamma: tuple[float, float] = (5000.0, 2.0),
                 lrs: tuple[float, float, float] = (0.2, 6.0, 6.0), every: int = 1,
                 init: str = "kmeans", zero_std: float | None = None,
                 biases: bool = False, scale: str = "none") -> None:
        super().__init__()
        if scale not in SCALES:
            raise ConfigError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
        self.scale = scale
        if isinstance(components, bool) or not isinstance(components, int) or components < 2:
            raise ConfigError(f"components must be an integer >= 2 (zero + at least one "
                              f"shared value), got {components!r}")
        if not 0 < zero_mixing < 1:
            raise ConfigError(f"zero_mixing must be a fraction in (0, 1), got {zero_mixing!r}")
        if not weight > 0:
            raise ConfigError(f"weight must be > 0, got {weight!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"every must be a positive integer, got {every!r}")
        self.every, self.calls = every, 0
        if zero_std is not None and not zero_std > 0:
            raise ConfigError(f"zero_std must be > 0 (or None: learned), got {zero_std!r}")
        self.zero_std = zero_std
        targets = select_targets(model, include, exclude, min_size, what="regularise")
        self.names = [t.name for t in targets]  # resolved in the model at every call
        # (module name, attribute) of every tensor covered: the weights, then the biases
        self.tensors = [(n, "weight") for n in self.names] + [
            (t.name, "bias") for t in targets
            if biases and isinstance(getattr(t.module, "bias", None), torch.Tensor)]
        self.aliases = {t.name: [n for n, _ in t.aliases] for t in targets if t.aliases}
        self.weight, self.zero_mixing = float(weight), float(zero_mixing)
        self.gamma, self.zero_gamma, self.lrs = tuple(gamma), tuple(zero_gamma), tuple(lrs)
        with torch.no_grad():
            # each layer's unit: its RMS when the prior is made (a constant from then on)
            self.scales = [float(t.square().mean().sqrt().clamp_min(1e-12))
                           if scale == "layer" else 1.0 for t in self.weights_of(model)]
            w = torch.cat([t.reshape(-1) for t in self.seen_weights(model)])
            span = float(w.abs().max())
        if not span > 0 or not math.isfinite(span):
            raise DataError(f"the chosen weights are all zero or not finite (max |w| = {span}); "
                            "train or initialise the model first")
        k = components - 1
        if init == "kmeans":
            # where the weights are: k-means of the weights with the zero pinned (most
            # trained weights are small; an even grid would leave them between components)
            # with a fixed zero_std the zero component claims the small weights: the others
            # start outside its reach, or they collapse onto zero and compete with it
            # beyond the zero component's reach: where a component as wide as it, at
            # the nonzero components' proportion, would still lose to it at its own mean
            # (with zero_mixing 0.999 and 16 others that is 4.4 zero_std; one placed
            # nearer is swallowed and the survivors share fewer values)
            outside = w[w.abs() > zero_reach(zero_std, zero_mixing, k)] \
                if zero_std is not None else w
            fit_on = outside if outside.numel() >= k else w
            centers, codes = zero_kmeans(fit_on.double(), k)
            means = centers.float()
            spread = [float((fit_on[codes == j + 1] - means[j]).square().mean().sqrt())
                      if bool((codes == j + 1).any()) else 0.0 for j in range(k)]
            std = init_std if init_std is not None else max(
                float(torch.tensor(spread).median()), 1e-3 * span)
        elif init == "linear":
            # means spread evenly over the range of the weights (Ullrich et al.), zero
            # left out (it is pinned)
            grid = torch.linspace(-span, span, k + 2 if k % 2 else k + 1)
            means = grid[grid.abs() > 1e-12 * span][:k] if k > 1 else grid[-1:]
            std = init_std if init_std is not None else 0.25 * 2 * span / max(k, 1)
        else:
            raise ConfigError(f"init must be kmeans or linear, got {init!r}")
        self.means = nn.Parameter(means.clone())
        log_precision = torch.full((k + 1,), -2 * math.log(std))
        if zero_std is not None:
            log_precision[0] = -2 * math.log(zero_std)
        self.log_precision = nn.Parameter(log_precision)
        self.mixing_logits = nn.Parameter(torch.zeros(k))

    # -- the mixture -------------------------------------------------------------------

    def weights_of(self, model: nn.Module) -> list[torch.Tensor]:
        """The covered tensors of ``model`` (as the layers compute with them), in the order
        of ``tensors``."""
        return [dense_weight(model.get_submodule(n) if n else model, a) for n, a in self.tensors]

    def seen_weights(self, model: nn.Module) -> list[torch.Tensor]:
        """The covered tensors as the prior sees them: as they are, or (``scale="layer"``)
        each divided by its current root mean square."""
        weights = self.weights_of(model)
        if self.scale == "none":
            return weights
        return [w / s for w, s in zip(weights, self.scales)]

    def log_precisions(self) -> torch.Tensor:
        """log lambda of all components, zero first (its entry fixed when ``zero_std``)."""
        if self.zero_std is None:
            return self.log_precision
        fixed = self.log_precision.new_tensor([-2 * math.log(self.zero_std)])
        return torch.cat([fixed, self.log_precision[1:]])

    def mixture(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(means, precisions, log proportions) of all components, zero first."""
        means = torch.cat([self.means.new_zeros(1), self.means])
        log_pi = torch.cat([self.means.new_tensor([math.log(self.zero_mixing)]),
                            math.log1p(-self.zero_mixing) + self.mixing_logits.log_softmax(0)])
        return means, self.log_precisions().exp(), log_pi

    def component_log_density(self, w: torch.Tensor) -> torch.Tensor:
        """log(pi_j N(w_i | mu_j, 1/lambda_j)) for every weight and component: (n, K)."""
        means, precision, log_pi = self.mixture()
        x = w.reshape(-1, 1)
        return (log_pi + 0.5 * (self.log_precisions() - _LOG_2PI)
                - 0.5 * precision * (x - means).square())

    def log_likelihood(self, w: torch.Tensor) -> torch.Tensor:
        """sum_i log p(w_i) under the mixture."""
        means, _, log_pi = self.mixture()
        return _MixtureLogLikelihood.apply(w.reshape(-1), means, self.log_precisions(), log_pi)

    def log_hyperprior(self) -> torch.Tensor:
        """log Gamma(lambda_j | shape, rate) summed over components (up to a constant)."""
        log_precision = self.log_precisions()
        precision = log_precision.exp()
        shape = precision.new_tensor([self.zero_gamma[0]] + [self.gamma[0]] * len(self.means))
        rate = precision.new_tensor([self.zero_gamma[1]] + [self.gamma[1]] * len(self.means))
        return ((shape - 1) * log_precision - rate * precision).sum()

    def forward(self, model: nn.Module) -> torch.Tensor:
        """The regulariser term: ``-weight * (log p(w) + log p(lambda))`` (on every
        ``every``-th call, times ``every``; 0 on the others)."""
        self.calls += 1
        if (self.calls - 1) % self.every:
            return self.means.new_zeros(())
        w = torch.cat([t.reshape(-1) for t in self.seen_weights(model)])
        return -self.weight * self.every * (self.log_likelihood(w) + self.log_hyperprior())

    @torch.no_grad()
    def responsibilities(self, w: torch.Tensor) -> torch.Tensor:
        """Posterior probability of each component for each weight: (n, K), rows sum to 1."""
        return self.component_log_density(w).softmax(1)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer groups of the prior's parameters (``train.fit`` uses them)."""
        return [{"params": [p], "lr": lr * m} for p, m in
                zip((self.means, self.log_precision, self.mixing_logits), self.lrs)]

    def extra_repr(self) -> str:
        return (f"components={len(self.means) + 1}, covers={len(self.tensors)} tensors, "
                f"weight={self.weight:g}, zero_mixing={self.zero_mixing}, scale={self.scale}")


class AnnealPrior:
    """A step callback for ``train.fit`` that raises ``prior.weight`` geometrically from
    ``start`` to ``end`` over the run (``StepInfo.total`` steps).

    Early on the data term dominates and the network stays accurate while the mixture
    finds its components; at the end the prior dominates and the weights sit on the
    components, so snapping them (``soft_to_codebook_``) costs little: the deterministic
    annealing of soft-to-hard quantisation.

    ``zero_std=(first, last)`` (a prior with a fixed ``zero_std``) also widens the zero
    component geometrically from ``first`` to ``last`` over the first ``ramp`` of the
    run: its width decides which weights it claims, so a wide one from the start prunes
    them all at once and the network has no time to move what they did into the weights
    that stay. (Trained weights crowd around zero: a width growing by a constant factor
    claims them at a roughly even pace, as gradual pruning does.)

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(4, 4)
        >>> prior = SoftSharingPrior(m, components=3)
        >>> anneal = AnnealPrior(prior, 1e-6, 1e-2)
        >>> from weightshare.train.hooks import StepInfo
        >>> anneal(StepInfo(5, 0.0, m, 0.0, 1e-3, total=10)); round(prior.weight, 6)
        0.0001
    """

    def __init__(self, prior: SoftSharingPrior, start: float, end: float,
                 zero_std: tuple[float, float] | None = None, ramp: float = 0.7) -> None:
        if not (start > 0 and end > 0):
            raise ConfigError(f"start and end must be > 0, got {start!r}, {end!r}")
        if zero_std is not None:
            if prior.zero_std is None:
                raise ConfigError("zero_std=(first, last) needs a prior with a fixed zero_std")
            if not (len(zero_std) == 2 and all(z > 0 for z in zero_std)):
                raise ConfigError(f"zero_std must be two widths > 0, got {zero_std!r}")
            if not 0 < ramp <= 1:
                raise ConfigError(f"ramp must be a fraction in (0, 1], got {ramp!r}")
            prior.zero_std = float(zero_std[0])
        self.prior, self.start, self.end = prior, float(start), float(end)
        self.zero_std, self.ramp = zero_std, float(ramp)
        prior.weight = self.start

    def __call__(self, info: Any) -> None:
        done = min(info.step / max(info.total or info.step, 1), 1.0)
        self.prior.weight = self.start * (self.end / self.start) ** done
        if self.zero_std is not None:
            first, last = self.zero_std
            self.prior.zero_std = first * (last / first) ** min(done / self.ramp, 1.0)
