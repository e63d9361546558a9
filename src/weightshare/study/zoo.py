"""The vision and recurrent models of the studies, each with its unshared (or equal-size)
counterpart, built from the project's own layers: LeNets (``models.lenet``), the locally
connected and per-step twins (``ws.unshare``), hashed layers (``ws.hash_``).

Twins are *re-initialised* after ``unshare``: ``unshare`` copies the shared weights to
every position / step (the twin then computes exactly what the shared model computes),
which starts the twin at a shared solution. A locally connected net or an unshared
recurrence that one trains from scratch draws every position's or step's weights
independently, so the studies do that (same distribution as the shared layer's init).
"""

from __future__ import annotations

import torch
from torch import nn

from ..methods.hash import hash_
from ..models.charlm import CharGRU
from ..models.lenet import LeNet5, LeNet300, equal_size, lenet5, lenet300
from ..nn import LocallyConnected2d, UnsharedGRU, unshare

MNIST_SHAPE = (1, 1, 28, 28)
# HashedNets' compression factors: each hashed layer stores 1/f of its weights
FACTORS = (2, 4, 8, 16, 32, 64)
# LeNet-300-100 widened to LeNet-5's size (436,210 vs 431,080 parameters): the dense MLP
# "of similar size" of the limited-data study
MLP_HIDDEN = (480, 120)


def conv_net(seed: int) -> LeNet5:
    """Caffe's LeNet-5 (spatial sharing), seeded."""
    torch.manual_seed(seed)
    return lenet5()


def local_net(seed: int) -> nn.Module:
    """LeNet-5's locally connected twin: every convolution unshared across positions,
    every position's filters drawn independently."""
    twin = unshare(conv_net(seed), torch.zeros(MNIST_SHAPE))
    torch.manual_seed(seed + 10_000)
    for module in twin.modules():
        if isinstance(module, LocallyConnected2d):
            module.reset_parameters()
    return twin


def mlp_net(seed: int) -> LeNet300:
    """A dense MLP the size of LeNet-5 (784-480-120-10)."""
    torch.manual_seed(seed)
    return lenet300(MLP_HIDDEN)


def hashed_net(ratio: float, seed: int) -> LeNet300:
    """LeNet-300-100 whose three weight matrices are hashed to ``ratio`` of their size
    (biases dense), buckets drawn from a fresh initialisation."""
    torch.manual_seed(seed)
    model = lenet300()
    hash_(model, ratio=ratio, init="sample", seed=seed)
    return model


def dense_net(hidden: tuple[int, int], seed: int) -> LeNet300:
    """A 784-hidden[0]-hidden[1]-10 perceptron, seeded."""
    torch.manual_seed(seed)
    return lenet300(hidden)


def equal_size_hidden(params: int) -> tuple[int, int]:
    """The widths of HashedNets' equal-size dense baseline: LeNet-300-100 with its widths
    scaled down until it stores at most ``params`` parameters (``models.lenet.equal_size``:
    the last hidden layer keeps 10 units, no strawman bottleneck).

    Example:
        >>> equal_size_hidden(266_610 // 8)  # LeNet-300-100 hashed to 1/8
        (41, 13)
    """
    model = equal_size("lenet300", params)
    assert isinstance(model, LeNet300)
    h1, h2 = model.hidden
    return h1, h2


def gru_pair(vocab: int, dim: int, hidden: int, length: int, seed: int
             ) -> tuple[CharGRU, nn.Module]:
    """A char GRU (temporal sharing) and its per-step twin for windows of ``length``,
    each step's weights drawn independently."""
    torch.manual_seed(seed)
    gru = CharGRU(vocab, embedding=dim, hidden=hidden)
    twin = unshare(gru, torch.zeros(1, length, dtype=torch.long))
    torch.manual_seed(seed + 10_000)
    for module in twin.modules():
        if isinstance(module, UnsharedGRU):
            module.reset_parameters()
    return gru, twin


__all__ = ["FACTORS", "conv_net", "dense_net", "equal_size_hidden", "gru_pair", "hashed_net",
           "local_net", "mlp_net"]
