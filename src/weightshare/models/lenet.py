"""The two MNIST networks of the weight-sharing literature, as the papers trained them.

* **LeNet-300-100** (LeCun et al. 1998): a 784-300-100-10 perceptron with ReLUs
  (266,610 parameters). Deep Compression, soft weight sharing and HashedNets all report
  on it.
* **LeNet-5, Caffe variant** (the ``lenet_train_test.prototxt`` of Caffe's MNIST
  example that Deep Compression and soft weight sharing use, not LeCun's original):
  conv 5x5x20 -> max-pool 2 -> conv 5x5x50 -> max-pool 2 -> fc 800-500 -> ReLU -> fc
  500-10 (431,080 parameters). As in Caffe, the convolutions have no nonlinearity of
  their own: max-pooling is the only one until the first fully connected layer.

Both take images of shape (batch, 1, 28, 28) or (batch, 28, 28) with values in [0, 1]
and return logits (batch, 10). Module names (``fc1``, ``conv1``, ...) are what
``include=`` patterns search.

Example:
    >>> import torch
    >>> lenet5()(torch.zeros(2, 1, 28, 28)).shape, sum(p.numel() for p in lenet300().parameters())
    (torch.Size([2, 10]), 266610)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError, ShapeError

MODELS = ("lenet300", "lenet5")


class LeNet300(nn.Module):
    """784 -> hidden[0] -> hidden[1] -> 10 with ReLUs; ``hidden=(300, 100)`` is LeNet-300-100.

    Other widths give the equal-size dense nets HashedNets is compared with.
    """

    def __init__(self, hidden: Sequence[int] = (300, 100), classes: int = 10) -> None:
        super().__init__()
        if len(hidden) != 2 or not all(isinstance(h, int) and h >= 1 for h in hidden):
            raise ConfigError(f"hidden must be two positive widths, got {tuple(hidden)!r}")
        self.hidden = tuple(hidden)
        self.fc1 = nn.Linear(28 * 28, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _images(x).flatten(1)  # (B, 784)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """Caffe's LeNet-5: conv(20) pool conv(50) pool fc(500) ReLU fc(10).

    ``channels`` and ``hidden`` change the widths (the defaults are the papers' network).
    """

    def __init__(self, channels: Sequence[int] = (20, 50), hidden: int = 500,
                 classes: int = 10) -> None:
        super().__init__()
        if len(channels) != 2 or not all(isinstance(c, int) and c >= 1 for c in channels) \
                or not isinstance(hidden, int) or hidden < 1:
            raise ConfigError(f"channels must be two positive widths and hidden a positive "
                              f"width, got {tuple(channels)!r}, {hidden!r}")
        self.channels, self.hidden = tuple(channels), hidden
        self.conv1 = nn.Conv2d(1, channels[0], 5)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 5)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(channels[1] * 4 * 4, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv1(_images(x)))  # (B, 20, 12, 12)
        x = self.pool(self.conv2(x))  # (B, 50, 4, 4)
        x = torch.relu(self.fc1(x.flatten(1)))  # (B, 500)
        return self.fc2(x)


def lenet300(hidden: Sequence[int] = (300, 100)) -> LeNet300:
    """LeNet-300-100 (or another width), freshly initialised (seed it with torch.manual_seed)."""
    return LeNet300(hidden)


def lenet5(channels: Sequence[int] = (20, 50), hidden: int = 500) -> LeNet5:
    """Caffe's LeNet-5 (or another width), freshly initialised."""
    return LeNet5(channels, hidden)


def build(name: str) -> nn.Module:
    """``"lenet300"`` or ``"lenet5"`` at the papers' widths.

    Example:
        >>> type(build("lenet5")).__name__
        'LeNet5'
    """
    if name == "lenet300":
        return lenet300()
    if name == "lenet5":
        return lenet5()
    raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


def widths(model: nn.Module) -> dict[str, object]:
    """The width arguments that rebuild ``model`` (kept in files' ``extra``).

    Example:
        >>> widths(lenet300((30, 10)))
        {'name': 'lenet300', 'hidden': [30, 10]}
    """
    if isinstance(model, LeNet300):
        return {"name": "lenet300", "hidden": list(model.hidden)}
    if isinstance(model, LeNet5):
        return {"name": "lenet5", "channels": list(model.channels), "hidden": model.hidden}
    raise ConfigError(f"{type(model).__name__} is not a LeNet")


def rebuild(spec: dict) -> nn.Module:
    """The LeNet that :func:`widths` describes (e.g. a skeleton to load a file into)."""
    if spec.get("name") == "lenet300":
        return lenet300(tuple(spec.get("hidden", (300, 100))))
    if spec.get("name") == "lenet5":
        return lenet5(tuple(spec.get("channels", (20, 50))), int(spec.get("hidden", 500)))
    raise ConfigError(f"not a LeNet description: {str(spec)[:80]}")


def equal_size(name: str, params: int) -> nn.Module:
    """The network ``name`` with every width scaled by one factor, as large as it can be
    with at most ``params`` parameters: the equal-size dense baseline of HashedNets. The
    last hidden layer keeps at least 10 units (as many as the classes: a narrower
    bottleneck would make a strawman of the baseline).

    Example:
        >>> m = equal_size("lenet300", 266_610 // 8)
        >>> m.hidden, sum(p.numel() for p in m.parameters()) <= 266_610 // 8
        ((41, 13), True)
    """
    def count(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    def make(scale: float) -> nn.Module:
        def w(x: int, least: int = 1) -> int:
            return max(least, int(x * scale))
        return lenet300((w(300), w(100, 10))) if name == "lenet300" else lenet5(
            (w(20), w(50)), w(500, 10))

    build(name)  # the name is checked before the search
    lo, hi = 0.0, 1.0
    for _ in range(40):  # bisect the scale: counts grow with it
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count(make(mid)) <= params else (lo, mid)
    best = make(lo)
    if count(best) > params:
        raise ConfigError(f"no {name} has at most {params:,} parameters; raise the budget")
    return best


def _images(x: torch.Tensor) -> torch.Tensor:
    """(B, 28, 28) or (B, 1, 28, 28) -> (B, 1, 28, 28)."""
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise ShapeError(f"LeNets take MNIST images of shape (batch, 1, 28, 28), got "
                         f"{tuple(x.shape)}; reshape the input")
    return x
