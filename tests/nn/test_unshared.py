"""The unshared twins: a locally connected layer is a convolution when its filters are
equal, an unshared recurrence is the shared one when its steps' weights are equal, and
unshare / reshare go between them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import weightshare as ws
from weightshare.errors import SelectionError, ShapeError


@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1)])
def test_locally_connected_equals_a_convolution_when_all_filters_are_equal(stride, padding):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, stride=stride, padding=padding)
    lc = ws.nn.LocallyConnected2d(3, 5, 3, input_size=(9, 7), stride=stride, padding=padding)
    with torch.no_grad():
        lc.weight.copy_(conv.weight.expand_as(lc.weight))
        lc.bias.copy_(conv.bias[:, None, None].expand_as(lc.bias))
    x = torch.randn(2, 3, 9, 7)
    assert torch.allclose(lc(x), conv(x), atol=1e-5)
    # its own filters: one position changed changes only that output position
    with torch.no_grad():
        lc.weight[0, 0].add_(1.0)
    diff = (lc(x) - conv(x)).abs().sum(dim=(0, 1))
    assert diff[0, 0] > 0 and diff.flatten()[1:].max() < 1e-4


def test_locally_connected_refuses_an_input_size_it_was_not_built_for():
    lc = ws.nn.LocallyConnected2d(1, 2, 3, input_size=8)
    with pytest.raises(ShapeError, match=r"for inputs \(batch, 1, 8, 8\).*got \(1, 1, 9, 9\)"):
        lc(torch.zeros(1, 1, 9, 9))


@pytest.mark.parametrize("cls, twin", [(nn.GRU, ws.nn.UnsharedGRU), (nn.RNN, ws.nn.UnsharedRNN)])
@pytest.mark.parametrize("batch_first", [False, True])
def test_unshared_recurrence_equals_the_shared_one_when_steps_are_equal(cls, twin, batch_first):
    torch.manual_seed(0)
    rnn = cls(4, 6, num_layers=2, batch_first=batch_first)
    unshared = twin(4, 6, length=5, num_layers=2, batch_first=batch_first)
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            getattr(unshared, name).copy_(p.expand_as(getattr(unshared, name)))
    x = torch.randn(3, 5, 4) if batch_first else torch.randn(5, 3, 4)
    h0 = torch.randn(2, 3, 6)
    (out, h), (ref, href) = unshared(x, h0), rnn(x, h0)
    assert torch.allclose(out, ref, atol=1e-5) and torch.allclose(h, href, atol=1e-5)
    with pytest.raises(ShapeError, match="built for sequences of 5 steps, got 4"):
        unshared(x[:, :4] if batch_first else x[:4])


def test_relu_rnn_twin_keeps_its_nonlinearity():
    rnn = nn.RNN(3, 4, nonlinearity="relu")
    twin = ws.nn.UnsharedRNN.from_rnn(rnn, length=6)
    x = torch.randn(6, 2, 3)
    assert torch.allclose(twin(x)[0], rnn(x)[0], atol=1e-6)


class ConvGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.gru = nn.GRU(4 * 6, 8, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))  # (B, 4, 6, 6): rows as steps
        seq = h.permute(0, 2, 1, 3).flatten(2)  # (B, 6, 24)
        return self.head(self.gru(seq)[0][:, -1])


def test_unshare_builds_the_twin_initialised_from_the_model_and_reshare_ties_back():
    torch.manual_seed(0)
    model = ConvGRU()
    x = torch.randn(2, 1, 6, 6)
    twin = ws.unshare(model, x)
    assert isinstance(twin.conv, ws.nn.LocallyConnected2d)
    assert isinstance(twin.gru, ws.nn.UnsharedGRU) and twin.gru.length == 6
    assert isinstance(model.conv, nn.Conv2d)  # the model itself is unchanged
    assert torch.allclose(twin(x), model(x), atol=1e-5)
    params = sum(p.numel() for p in twin.parameters())
    assert params > 5 * sum(p.numel() for p in model.parameters())
    back = ws.reshare(twin)
    assert type(back.conv) is nn.Conv2d and type(back.gru) is nn.GRU
    assert torch.allclose(back(x), model(x), atol=1e-5)
    only_conv = ws.unshare(model, x, include=("conv",))
    assert type(only_conv.gru) is nn.GRU


def test_unshare_needs_a_layer_it_knows():
    with pytest.raises(SelectionError, match="no nn.Conv2d, nn.RNN or nn.GRU"):
        ws.unshare(nn.Sequential(nn.Linear(2, 2)), torch.zeros(1, 2))
    with pytest.raises(SelectionError, match="reshare undoes"):
        ws.reshare(nn.Sequential(nn.Linear(2, 2)))
