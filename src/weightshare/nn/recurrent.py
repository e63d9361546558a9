"""UnsharedRNN / UnsharedGRU: recurrences unrolled over a fixed length with their own
weights at every time step.

A recurrent layer applies one set of weights at every step (temporal weight sharing).
Its unshared twin has a set per step: the same equations as ``nn.RNN`` / ``nn.GRU``
(gate order r, z, n for the GRU), the same outputs when all per-step weights are equal,
``length`` times the parameters, and it only runs sequences of exactly ``length``
steps. Parameters are named like torch's with a leading step axis:
``weight_ih_l0`` is (length, gates * hidden, input) where ``nn.GRU``'s is
(gates * hidden, input).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, ShapeError

_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class _Unshared(nn.Module):
    gates = 1
    modes: tuple[str, ...] = ()  # the nn.RNNBase modes this is the twin of

    def __init__(self, input_size: int, hidden_size: int, length: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size),
                        ("length", length), ("num_layers", num_layers)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        self.input_size, self.hidden_size, self.length = input_size, hidden_size, length
        self.num_layers, self.bias, self.batch_first = num_layers, bias, batch_first
        self.dropout = float(dropout)
        g, h = self.gates * hidden_size, hidden_size
        for k in range(num_layers):
            width = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(length, g, width)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(length, g, h)))
            if bias:
                self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(length, g)))
                self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(length, g)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's recurrent initialisation, U(-1/sqrt(hidden), 1/sqrt(hidden)), every step."""
        bound = self.hidden_size ** -0.5
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _param(self, name: str, layer: int) -> torch.Tensor | None:
        return getattr(self, f"{name}_l{layer}", None)

    def _cell(self, gi: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor,
              b_hh: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(output, h_n) as ``nn.GRU`` / ``nn.RNN`` return them, for (T, B, I) inputs
        ((B, T, I) with ``batch_first``) with T == ``length``."""
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ShapeError(f"{type(self).__name__} takes (steps, batch, {self.input_size}) "
                             f"inputs (batch first: (batch, steps, {self.input_size})), got "
                             f"{tuple(x.shape)}")
        seq = x.transpose(0, 1) if self.batch_first else x  # (T, B, I)
        steps, batch = seq.shape[0], seq.shape[1]
        if steps != self.length:
            raise ShapeError(f"{type(self).__name__} was built for sequences of {self.length} "
                             f"steps, got {steps}; cut the input to {self.length} steps or "
                             "build it for this length")
        if h0 is not None and tuple(h0.shape) != (self.num_layers, batch, self.hidden_size):
            raise ShapeError(f"h0 must be ({self.num_layers}, {batch}, {self.hidden_size}), "
                             f"got {tuple(h0.shape)}")
        finals = []
        for k in range(self.num_layers):
            w_ih = self._param("weight_ih", k)
            assert w_ih is not None
            # every step's input projection at once: (T, B, gates*H)
            gi = torch.einsum("tbi,tgi->tbg", seq, w_ih)
            b_ih = self._param("bias_ih", k)
            if b_ih is not None:
                gi = gi + b_ih[:, None, :]
            h = seq.new_zeros(batch, self.hidden_size) if h0 is None else h0[k]
            w_hh, b_hh = self._param("weight_hh", k), self._param("bias_hh", k)
            assert w_hh is not None
            outs = []
            for t in range(steps):  # each step with its own weights
                h = self._cell(gi[t], h, w_hh[t], None if b_hh is None else b_hh[t])
                outs.append(h)
            seq = torch.stack(outs)  # (T, B, H)
            finals.append(h)
            if self.dropout and self.training and k < self.num_layers - 1:
                seq = nn.functional.dropout(seq, self.dropout)
        out = seq.transpose(0, 1) if self.batch_first else seq
        return out, torch.stack(finals)

    @classmethod
    @torch.no_grad()
    def from_shared(cls, rnn: nn.RNNBase, length: int) -> _Unshared:
        """The unshared twin of ``rnn`` for ``length`` steps: its weights copied to every
        step (so it computes exactly what ``rnn`` computes)."""
        if rnn.mode not in cls.modes or rnn.bidirectional or int(getattr(rnn, "proj_size", 0)):
            raise ConfigError(f"{cls.__name__} is the twin of a one-directional "
                              f"{cls.modes[0].split('_')[0]}, got {rnn}")
        twin = cls(rnn.input_size, rnn.hidden_size, length, rnn.num_layers, rnn.bias,
                   rnn.batch_first, rnn.dropout, **cls._extra(rnn))
        ref = next(rnn.parameters())
        twin.to(device=ref.device, dtype=ref.dtype)
        for k in range(rnn.num_layers):
            for name in _NAMES:
                mine = twin._param(name, k)
                if mine is not None:
                    mine.copy_(getattr(rnn, f"{name}_l{k}").expand_as(mine))
        return twin

    @staticmethod
    def _extra(rnn: nn.RNNBase) -> dict:
        return {}

    @torch.no_grad()
    def to_shared(self) -> nn.RNNBase:
        """Tie the steps back: the shared recurrence whose weights are the mean over steps."""
        shared = self._shared_class()
        ref = next(self.parameters())
        shared.to(device=ref.device, dtype=ref.dtype)
        for k in range(self.num_layers):
            for name in _NAMES:
                mine = self._param(name, k)
                if mine is not None:
                    getattr(shared, f"{name}_l{k}").copy_(mine.mean(0))
        return shared

    def _shared_class(self) -> nn.RNNBase:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, length={self.length}, "
                f"num_layers={self.num_layers}, batch_first={self.batch_first}")


class UnsharedRNN(_Unshared):
    """An Elman RNN (``nn.RNN``'s equations, tanh or relu) with separate weights per step.

    Example:
        >>> import torch
        >>> rnn = UnsharedRNN(8, 16, length=5, batch_first=True)
        >>> out, h = rnn(torch.zeros(2, 5, 8))
        >>> out.shape, h.shape, rnn.weight_hh_l0.shape
        (torch.Size([2, 5, 16]), torch.Size([1, 2, 16]), torch.Size([5, 16, 16]))
    """

    gates = 1
    modes = ("RNN_TANH", "RNN_RELU")

    def __init__(self, input_size: int, hidden_size: int, length: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 nonlinearity: str = "tanh") -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ConfigError(f"nonlinearity must be tanh or relu, got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, length, num_layers, bias, batch_first, dropout)

    @classmethod
    def from_rnn(cls, rnn: nn.RNN, length: int) -> UnsharedRNN:
        """See ``from_shared``."""
        twin = cls.from_shared(rnn, length)
        assert isinstance(twin, UnsharedRNN)
        return twin

    @staticmethod
    def _extra(rnn: nn.RNNBase) -> dict:
        return {"nonlinearity": getattr(rnn, "nonlinearity", "tanh")}

    def _cell(self, gi: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor,
              b_hh: torch.Tensor | None) -> torch.Tensor:
        pre = gi + h @ w_hh.T
        if b_hh is not None:
            pre = pre + b_hh
        return torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)

    def _shared_class(self) -> nn.RNNBase:
        return nn.RNN(self.input_size, self.hidden_size, self.num_layers, self.nonlinearity,
                      self.bias, self.batch_first, self.dropout)


class UnsharedGRU(_Unshared):
    """A GRU (``nn.GRU``'s equations, gates r, z, n) with separate weights per step.

    Example:
        >>> import torch
        >>> gru = UnsharedGRU(8, 16, length=5)
        >>> out, h = gru(torch.zeros(5, 2, 8))
        >>> out.shape, gru.weight_ih_l0.shape
        (torch.Size([5, 2, 16]), torch.Size([5, 48, 8]))
    """

    gates = 3
    modes = ("GRU",)

    @classmethod
    def from_gru(cls, gru: nn.GRU, length: int) -> UnsharedGRU:
        """See ``from_shared``."""
        twin = cls.from_shared(gru, length)
        assert isinstance(twin, UnsharedGRU)
        return twin

    def _cell(self, gi: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor,
              b_hh: torch.Tensor | None) -> torch.Tensor:
        gh = h @ w_hh.T  # (B, 3H)
        if b_hh is not None:
            gh = gh + b_hh
        i_r, i_z, i_n = gi.chunk(3, -1)
        h_r, h_z, h_n = gh.chunk(3, -1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h

    def _shared_class(self) -> nn.RNNBase:
        return nn.GRU(self.input_size, self.hidden_size, self.num_layers, self.bias,
                      self.batch_first, self.dropout)
