"""The two shared-vs-unshared pairs that the training-speed and convergence studies train:

* **vision**: LeNet-5 (convolutions: filters shared across positions) vs its locally
  connected twin, on MNIST;
* **language**: the all-shared (ALBERT-style, one block used 6 times) char transformer vs
  the untied one of the same depth, on Shakespeare.

Within a pair both models do the same computation per example (same layers, same
depth), so any difference in speed comes from the parameters themselves: their number,
what the optimizer and the memory system do with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..data.mnist import load_mnist
from . import lm
from .context import Context
from .trainer import Data, Run, Target, train
from .zoo import conv_net, local_net

SIDES = ("shared", "unshared")


@dataclass
class Pair:
    """One shared model and its unshared counterpart, with their data and recipe."""

    key: str
    names: dict[str, str]  # side -> reader's name
    builders: dict[str, Callable[[int], nn.Module]]  # side -> seed -> fresh model
    train_data: Data
    held_out: Data
    batch: int
    lr: float
    target: Target
    metric_name: str  # what the curves plot: "loss" of the held-out set

    def train_side(self, ctx: Context, side: str, seed: int, steps: int, eval_every: int,
                   stop_at_target: bool = False) -> Run:
        return train(ctx, self.names[side], self.builders[side](seed), self.train_data,
                     steps=steps, seed=seed, batch_size=self.batch, lr=self.lr,
                     held_out=self.held_out, eval_every=eval_every, target=self.target,
                     stop_at_target=stop_at_target)


def vision(ctx: Context) -> Pair:
    mnist = load_mnist(ctx.mnist_path())
    x, y = mnist.train
    held = ctx.pick(300, 1000)
    if ctx.quick:
        x, y = x[:2000], y[:2000]
    return Pair("vision", {"shared": "LeNet-5 (conv)", "unshared": "locally connected twin"},
                {"shared": conv_net, "unshared": local_net}, (x, y),
                (mnist.test[0][:held], mnist.test[1][:held]), batch=64, lr=1e-3,
                target=Target("error", ctx.pick(0.5, 0.04)),
                metric_name="held-out loss (MNIST test images)")


def language(ctx: Context) -> Pair:
    size = ctx.pick(lm.QUICK, lm.FULL)
    corpus = lm.corpus(ctx.shakespeare_path())
    vocab = corpus.vocab_size

    def shared(seed: int) -> nn.Module:
        return lm.build("all", vocab, size, seed)

    def unshared(seed: int) -> nn.Module:
        return lm.build("untied", vocab, size, seed)

    return Pair("language", {"shared": lm.label("all", size), "unshared": lm.label("untied",
                                                                                   size)},
                {"shared": shared, "unshared": unshared},
                corpus.train(size.context), corpus.held_out(size.context, ctx.pick(64, 256)),
                batch=ctx.pick(8, 16), lr=2e-3, target=Target("loss", ctx.pick(4.0, 2.5)),
                metric_name="validation loss (held-out plays)")


def pairs(ctx: Context) -> list[Pair]:
    return [vision(ctx), language(ctx)]


def batch_of(pair: Pair, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``size`` training examples (for memory probes)."""
    return pair.train_data[0][:size], pair.train_data[1][:size]


def memory_probe(pair_key: str, side: str, data: str, quick: bool, steps: int) -> dict:
    """Peak training memory of one side of a pair, run in a fresh process by
    ``memory.isolated`` (module level so that ``spawn`` can find it)."""
    from pathlib import Path

    import torch.nn.functional as F

    from .context import Progress
    from .memory import train_peak

    ctx = Context("memory", quick, (0,), Path("."), Path(data), Progress("", show=False))
    pair = vision(ctx) if pair_key == "vision" else language(ctx)

    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))

    return train_peak(lambda: pair.builders[side](0), batch_of(pair, pair.batch), steps, loss)
