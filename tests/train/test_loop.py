"""The training loop: seeded, learns, stops on time, runs hooks, refuses bad input."""

from __future__ import annotations

import pytest
import torch

import weightshare as ws
from tests.zoo import mlp
from weightshare.errors import ConfigError, DataError


def data(n: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 32, generator=torch.Generator().manual_seed(0))
    return x, x[:, :10].argmax(1)


def test_same_seed_same_run():
    a, b = mlp(), mlp()
    ra = ws.fit(a, data(), epochs=2, batch_size=16, seed=3, progress=False)
    ws.fit(b, data(), epochs=2, batch_size=16, seed=3, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert ra.steps == 16 and ra.epochs == 2


def test_it_learns_and_hooks_run():
    model, seen, history = mlp(), [], []
    before = ws.evaluate(model, data())["error"]
    penalty = lambda m: 0.0 * m[0].weight.sum()  # noqa: E731
    ws.fit(model, data(), epochs=15, batch_size=16, lr=3e-3, regularizers=[penalty],
           callbacks=[lambda info: seen.append((info.step, info.total))], history=history,
           progress=False)
    assert ws.evaluate(model, data())["error"] < before / 2
    assert seen[0] == (1, 120) and len(history) == 15
    stop = ws.fit(mlp(), data(), epochs=5, batch_size=16, callbacks=[lambda i: i.step < 3],
                  progress=False)
    assert stop.steps == 3


def test_time_budget_and_sequence_targets():
    result = ws.fit(mlp(), data(), epochs=1000, time_budget=0.2, progress=False)
    assert result.seconds < 5 and result.epochs < 1000
    lm = torch.nn.Sequential(torch.nn.Embedding(7, 8), torch.nn.Linear(8, 7))
    ids = torch.randint(0, 7, (16, 5))
    ws.fit(lm, (ids, ids), epochs=1, batch_size=4, progress=False)  # (B, T, V) outputs
    assert 0 <= ws.evaluate(lm, (ids, ids))["error"] <= 1


def test_decay_start_holds_the_rate_then_decays_it_to_zero():
    lrs: list[float] = []
    ws.fit(mlp(), data(), epochs=1, batch_size=16, lr=1e-2, schedule="linear",
           decay_start=0.5, callbacks=[lambda info: lrs.append(info.lr)], progress=False)
    assert lrs[:4] == [1e-2] * 4  # the first half of the 8 steps: constant
    assert lrs[4:] == pytest.approx([1e-2, 7.5e-3, 5e-3, 2.5e-3])  # then linear toward 0
    with pytest.raises(ConfigError, match="decay_start"):
        ws.fit(mlp(), data(), decay_start=1.0)


def test_bad_input_is_refused():
    with pytest.raises(DataError, match="pair of tensors"):
        ws.fit(mlp(), [1, 2, 3])
    with pytest.raises(DataError, match="same"):
        ws.fit(mlp(), (torch.zeros(3, 32), torch.zeros(2, dtype=torch.long)))
    with pytest.raises(ConfigError, match="optimizer"):
        ws.fit(mlp(), data(), optimizer="lion")
    with pytest.raises(DataError, match="loss became nan"):
        ws.fit(mlp(), data(), regularizers=[lambda m: torch.tensor(float("nan"))],
               progress=False)
