"""The compiled kernels on torch's own OpenMP threads (``kernels.team``): the same values
as on one thread, and no thread pool of their own."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from weightshare.io.bitpack import pack_codes
from weightshare.runtime import kernels
from weightshare.runtime.kernels import Decoder, PackedRows, team

COMPILED = [k for k in ("numba", "avx512") if kernels._load_numba() is not None
            and (k == "numba" or kernels._load_avx512())]
pytestmark = pytest.mark.skipif(not COMPILED or not team.available(),
                                reason="needs numba and torch on libgomp (the kernels extra)")


@pytest.fixture
def two_threads(monkeypatch):
    monkeypatch.setattr(team, "MIN_VALUES", 0)  # tiny weights go to the team too
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def decoded(kind: str, bits: int, rows: int, cols: int, group_size: int,
            threads: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 1 << bits, (rows, cols), generator=g)
    cb = torch.randn(rows // group_size, 1 << bits, generator=g)
    torch.set_num_threads(threads)
    with kernels.use(kind):
        d = Decoder(PackedRows.from_stream(pack_codes(codes, bits), rows, cols, bits), cb,
                    group_size)
        out = torch.empty(rows - 3, cols)
        d.decode(3, out)
        ids = torch.randint(0, rows, (50,), generator=g)
        rows_of = torch.empty(50, cols)
        d.gather(ids, rows_of)
        y = d.matvec(torch.randn(3, cols, generator=g))
    dense = cb.repeat_interleave(group_size, 0).gather(1, codes)
    assert torch.equal(out, dense[3:]) and torch.equal(rows_of, dense[ids])
    return out, rows_of, y


@pytest.mark.parametrize("kind", COMPILED)
@pytest.mark.parametrize("bits,rows,cols,group_size", [
    (4, 96, 64, 1), (3, 70, 48, 7), (2, 33, 32, 33), (1, 40, 16, 4), (5, 64, 24, 2),
    (8, 50, 40, 1)])
def test_team_equals_one_thread(two_threads, monkeypatch, kind, bits, rows, cols, group_size):
    calls = []
    run = team.run
    monkeypatch.setattr(team, "run", lambda *a: calls.append(a[2]) or run(*a))
    on_team = decoded(kind, bits, rows, cols, group_size, threads=2)
    assert calls == [2, 2, 2]  # decode, gather and matvec each ran on two threads
    alone = decoded(kind, bits, rows, cols, group_size, threads=1)
    assert len(calls) == 3
    assert torch.equal(on_team[0], alone[0]) and torch.equal(on_team[1], alone[1])
    # the products sum in float32 in a compiled order: within the runtime's tolerance
    assert float((on_team[2] - alone[2]).abs().max()) <= 1e-5 * float(alone[2].abs().max())


def test_small_calls_stay_on_the_callers_thread(monkeypatch):
    monkeypatch.setattr(team, "MIN_VALUES", 1 << 15)
    assert team.threads(100) == 1
    assert team.threads(1 << 20) == torch.get_num_threads()  # one thread under the tests


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/task")
def test_no_pool_of_their_own(two_threads):
    torch.ones(1 << 20).sum()  # torch's team exists
    before = len(os.listdir("/proc/self/task"))
    decoded(COMPILED[0], 4, 256, 64, 1, threads=2)
    assert len(os.listdir("/proc/self/task")) == before
