"""The one walk-match-replace loop that methods replacing weights share.

A method selects its targets (``select.select_targets``), says how to build the shared
weight of one target, and :func:`share_targets` does the rest: checks, a progress bar,
one worker thread per core (the builders run numpy/torch kernels that release the GIL),
attaching each result on the calling thread, and sharing it with the target's aliases
so that a tied weight is shared once and stays tied.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import SelectionError
from .protocol import SharedWeight, attach, dense_weight, foreign_parametrization, shared_of
from .select import Target

Build = Callable[[Target], tuple[SharedWeight, torch.Tensor]]


def check_targets(targets: Sequence[Target], reshare: tuple[type[SharedWeight], ...] = ()
                  ) -> None:
    """SelectionError when a target already is a shared weight the method cannot re-share
    (only kinds in ``reshare`` can), or holds a parametrization weightshare does not know."""
    for t in targets:
        foreign = foreign_parametrization(t.module, "weight")
        found = shared_of(t.module, "weight")
        if foreign is not None or (found is not None and not isinstance(found[0], reshare)):
            kind = foreign or found[0].kind  # type: ignore[index]
            raise SelectionError(f"{t.fqn} is already a shared weight ({kind}); apply structural "
                                 "sharing before value sharing, or ws.materialize_ it first")


def share_targets(targets: Sequence[Target], build: Build, *, progress: bool | None = None,
                  desc: str = "sharing", parallel: bool = True) -> None:
    """Build and attach the shared weight of every target, in place.

    ``build(target)`` returns ``(shared weight, original)``; the original becomes a
    Parameter on the device of the target's current weight, trainable when it was. An
    original that already is a Parameter is attached as it is: targets built with the
    same Parameter share it (a codebook shared across layers).
    """
    show = progress if progress is not None else sys.stderr.isatty()
    bar = tqdm(total=len(targets), desc=desc, unit="layer", disable=not show, file=sys.stderr)
    workers = max(1, min(len(targets), torch.get_num_threads())) if parallel else 1
    # smallest first: each attach frees a dense weight, so by the time the largest
    # tensors (embeddings) are built, with their large transient memory, most of the
    # model is already shared (BERT-base: peak memory of compress 1.29 -> ~0.9 GB)
    ordered = sorted(targets, key=lambda t: dense_weight(t.module).numel())
    with bar, ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(build, t) for t in ordered]
        for target, future in zip(ordered, futures):
            weight, original = future.result()
            current = dense_weight(target.module)
            if isinstance(original, nn.Parameter):
                param = original
            else:
                param = nn.Parameter(original.detach().to(current.device).contiguous(),
                                     requires_grad=current.requires_grad)
            attach(target.module, "weight", weight, param)
            for _name, alias in target.aliases:
                attach(alias, "weight", weight, param)
            bar.update()
