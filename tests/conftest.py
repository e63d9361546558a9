"""Fixtures shared by every test; the models themselves live in ``zoo.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from tests.zoo import ConvNet, TinyLM, mlp


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models: one intra-op thread. On a busy 2-core machine two threads spin-wait on
    each other and tiny ops get 10-40x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_mlp() -> nn.Module:
    return mlp()


@pytest.fixture
def tiny_lm() -> nn.Module:
    torch.manual_seed(0)
    return TinyLM()


@pytest.fixture
def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return ConvNet()
