"""The LeNets are the papers' networks: parameter counts, shapes, names."""

from __future__ import annotations

import pytest
import torch

from weightshare.errors import ConfigError, ShapeError
from weightshare.models.lenet import build, lenet5, lenet300


def test_the_papers_sizes():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(lenet300()) == 266_610
    assert count(lenet5()) == 431_080
    assert [n for n, _ in lenet5().named_children()] == ["conv1", "conv2", "pool", "fc1", "fc2"]
    assert count(lenet300((30, 10))) == 784 * 30 + 30 + 30 * 10 + 10 + 10 * 10 + 10


def test_inputs_and_bad_widths():
    x = torch.zeros(3, 28, 28)
    assert build("lenet5")(x).shape == (3, 10) == build("lenet300")(x.unsqueeze(1)).shape
    with pytest.raises(ShapeError, match="MNIST images"):
        lenet5()(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ConfigError, match="unknown model"):
        build("lenet1")
    with pytest.raises(ConfigError, match="two positive widths"):
        lenet300((300,))
