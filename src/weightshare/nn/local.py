"""LocallyConnected2d: a convolution whose filters are not shared across positions.

A convolution applies one filter bank at every position of its input (spatial weight
sharing); a locally connected layer has its own filter bank, and bias, at each output
position. It is the convolution's unshared twin: same receptive fields, same outputs
when all its filters are equal, ``out_h * out_w`` times the parameters. Built for one
input size, like a linear layer.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ShapeError


def _pair(v: Any, name: str) -> tuple[int, int]:
    pair = (v, v) if isinstance(v, int) else tuple(v)
    if len(pair) != 2 or not all(isinstance(p, int) and p >= 0 for p in pair):
        raise ConfigError(f"{name} must be an int or a pair of ints >= 0, got {v!r}")
    return pair


class LocallyConnected2d(nn.Module):
    """Like ``nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)`` on inputs
    of exactly ``input_size`` (height, width), with one filter bank per output position.

    ``weight``: (out_h, out_w, out_channels, in_channels, kh, kw); ``bias``:
    (out_channels, out_h, out_w).

    Example:
        >>> import torch
        >>> lc = LocallyConnected2d(1, 20, 5, input_size=(28, 28))
        >>> lc(torch.zeros(2, 1, 28, 28)).shape, lc.weight.shape
        (torch.Size([2, 20, 24, 24]), torch.Size([24, 24, 20, 1, 5, 5]))
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any,
                 input_size: Any, stride: Any = 1, padding: Any = 0, bias: bool = True) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.input_size = _pair(input_size, "input_size")
        self.stride, self.padding = _pair(stride, "stride"), _pair(padding, "padding")
        if min(self.stride) < 1 or min(self.kernel_size) < 1:
            raise ConfigError(f"kernel_size and stride must be >= 1, got {self.kernel_size}, "
                              f"{self.stride}")
        self.output_size = tuple(
            (i + 2 * p - k) // s + 1 for i, p, k, s in
            zip(self.input_size, self.padding, self.kernel_size, self.stride))
        if min(self.output_size) < 1:
            raise ShapeError(f"a {self.kernel_size} kernel does not fit an input of "
                             f"{self.input_size} with padding {self.padding}; enlarge the input")
        oh, ow = self.output_size
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(oh, ow, out_channels, in_channels, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels, oh, ow)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation ``nn.Conv2d`` gives its filters, drawn at every position."""
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        bound = fan_in ** -0.5
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.in_channels, *self.input_size):
            raise ShapeError(f"LocallyConnected2d was built for inputs (batch, "
                             f"{self.in_channels}, {self.input_size[0]}, {self.input_size[1]}), "
                             f"got {tuple(x.shape)}; build it for this input size")
        oh, ow = self.output_size
        cols = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)
        # cols: (B, C*kh*kw, L) with L = oh*ow positions; weight: (L, out, C*kh*kw)
        w = self.weight.reshape(oh * ow, self.out_channels, -1)
        out = torch.bmm(cols.permute(2, 0, 1), w.transpose(1, 2))  # (L, B, out)
        out = out.permute(1, 2, 0).reshape(x.shape[0], self.out_channels, oh, ow)
        return out if self.bias is None else out + self.bias

    @classmethod
    @torch.no_grad()
    def from_conv(cls, conv: nn.Conv2d, input_size: Any) -> LocallyConnected2d:
        """The unshared twin of ``conv`` for inputs of ``input_size``: its filter and bias
        copied to every position (so it computes exactly what ``conv`` computes)."""
        if conv.groups != 1 or _pair(conv.dilation, "dilation") != (1, 1) \
                or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ConfigError(f"only plain convolutions (groups=1, dilation=1, numeric zero "
                              f"padding) have a locally connected twin here; got {conv}")
        lc = cls(conv.in_channels, conv.out_channels, conv.kernel_size, input_size,
                 conv.stride, conv.padding, bias=conv.bias is not None)
        lc.to(device=conv.weight.device, dtype=conv.weight.dtype)
        lc.weight.copy_(conv.weight.expand_as(lc.weight))
        if lc.bias is not None and conv.bias is not None:
            lc.bias.copy_(conv.bias[:, None, None].expand_as(lc.bias))
        lc.weight.requires_grad_(conv.weight.requires_grad)
        return lc

    @torch.no_grad()
    def to_conv(self) -> nn.Conv2d:
        """Tie the filters back: the convolution whose filter (and bias) is the mean over
        positions, the least-squares tie of the position filters."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                         self.padding, bias=self.bias is not None)
        conv.to(device=self.weight.device, dtype=self.weight.dtype)
        conv.weight.copy_(self.weight.mean(dim=(0, 1)))
        if self.bias is not None and conv.bias is not None:
            conv.bias.copy_(self.bias.mean(dim=(1, 2)))
        return conv

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"input_size={self.input_size}, stride={self.stride}, padding={self.padding}, "
                f"bias={self.bias is not None}")
