"""Peak training memory as the operating system sees it (resident set size), not as tensor
sizes predict it.

Each measurement runs in a fresh process (``spawn``): memory a previous model freed stays
in the allocator of the process that freed it and would hide the next model's peak. In
the child, the data is loaded first, then the kernel's peak counter is reset
(``/proc/self/clear_refs``), then the model is built and trained for a few steps; the
peak resident size above the level before the model is the training memory: parameters,
gradients, optimizer state, activations and the allocator's own overhead together.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import DataError
from .context import rss_bytes


def reset_peak() -> int:
    """Reset this process's peak resident size to its current size; returns that size.

    Linux only (``/proc/self/clear_refs``); where it is not writable, the peak since the
    process started stays, which overstates nothing measured after a larger earlier peak.
    """
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return rss_bytes("VmRSS")


def train_peak(model_fn: Callable[[], nn.Module], batch: tuple[torch.Tensor, torch.Tensor],
               steps: int, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
               ) -> dict[str, Any]:
    """In this process: build ``model_fn()``, train ``steps`` Adam steps on ``batch``; the
    peak resident memory above the level before building, and what the tensors predict."""
    torch.manual_seed(0)
    before = reset_peak()
    model = model_fn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = batch
    for _ in range(steps):
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    peak = rss_bytes("VmHWM") - before
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"peak_bytes": peak, "param_bytes": params,
            # parameters + gradients + Adam's two moments
            "state_bytes": 4 * params}


def _child(conn: Any, fn: Callable[..., dict], args: tuple, threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        conn.send(fn(*args))
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises
        conn.send({"error": f"{type(e).__name__}: {e}"})
    finally:
        conn.close()


def isolated(fn: Callable[..., dict], *args: Any, timeout: float = 900.0) -> dict:
    """``fn(*args)`` in a fresh spawned process (``fn`` a module-level function); its
    result dict."""
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, args, torch.get_num_threads()))
    proc.start()
    send.close()
    try:
        if not recv.poll(timeout):
            raise DataError(f"memory probe {fn.__name__} gave no result in {timeout:.0f} s")
        out = recv.recv()
    except EOFError:
        raise DataError(f"memory probe {fn.__name__} died (exit code {proc.exitcode})"
                        ) from None
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    if "error" in out:
        raise DataError(f"memory probe {fn.__name__} failed: {out['error']}")
    return out
