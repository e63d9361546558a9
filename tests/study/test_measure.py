"""Memory from the OS in a fresh process; curves read at a time."""

from __future__ import annotations

import math

import pytest

from weightshare.study.memory import isolated, train_peak
from weightshare.study.trainer import Run, at_seconds


def _probe(n: int) -> dict:
    import torch

    def loss(out, y):
        return torch.nn.functional.cross_entropy(out, y)

    batch = (torch.randn(64, n), torch.zeros(64, dtype=torch.long))
    return train_peak(lambda: torch.nn.Linear(n, 2000), batch, 2, loss)


def test_peak_memory_of_a_fresh_process_sees_the_model():
    out = isolated(_probe, 1000)
    # 2 M parameters: 8 MB each of weights, gradients and Adam's two moments
    assert out["state_bytes"] == 4 * out["param_bytes"] == 4 * 4 * 2_002_000
    assert out["peak_bytes"] > 0.6 * out["state_bytes"]


def test_at_seconds_interpolates():
    run = Run("x", 0)
    run.evals = [{"seconds": 1.0, "loss": 4.0}, {"seconds": 3.0, "loss": 2.0}]
    assert at_seconds(run, 2.0) == pytest.approx(3.0)
    assert math.isnan(at_seconds(run, 0.5)) and math.isnan(at_seconds(run, 3.5))
