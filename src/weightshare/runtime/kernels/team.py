"""The compiled kernels run on torch's own OpenMP threads.

torch's CPU operations run on one OpenMP team (GNU libgomp in the Linux wheels, already
loaded by torch). A kernel on one thread leaves the other cores idle while it decodes a
tile: measured on MiniLM at batch 1 with two threads, decoding took a quarter of the
forward pass (2.0 of 8.1 ms). A second thread pool beside torch's (numba's parallel
layers, a Python pool) would fight torch's threads for the cores and pay a wake-up per
call. Instead the kernels are handed to the same OpenMP runtime through ``GOMP_parallel``,
the entry point compilers emit for ``#pragma omp parallel``: the team torch's threads
already form runs them, as it runs torch's own loops.

Each task is a numba ``cfunc`` (``numba_kernels.task``, ``avx512.task``) over a block of
int64 parameters (:data:`FIELDS`); its
threads take chunks of rows from an atomic counter in the block, so a thread that the
system delays does not hold the others back. Where the runtime is not torch's libgomp
(another OpenMP, a build without one), :func:`available` is False and the kernels run on
the calling thread, as before.

Example:
    >>> import torch
    >>> from weightshare.runtime.kernels import team
    >>> isinstance(team.available(), bool)
    True
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import numpy as np
import torch

#: the parameter block of a task (int64 each): op, code buffer, codebook, output, inputs
FIELDS = ("op", "flat", "nbytes", "row_bytes", "cb", "groups", "k", "table", "group_size",
          "bits", "r0", "n", "cols", "out", "x", "m", "chunk", "next")
(OP, FLAT, NBYTES, ROW_BYTES, CB, GROUPS, K, TABLE, GROUP_SIZE, BITS, R0, N, COLS, OUT, X, M,
 CHUNK, NEXT) = range(len(FIELDS))
DECODE, GATHER, MATVEC = 0, 1, 2

MIN_VALUES = 1 << 15  # below this many decoded values a call stays on the calling thread

_gomp: Any = None


def _runtime() -> Any:
    """``GOMP_parallel`` of the libgomp torch loaded, or False."""
    global _gomp
    if _gomp is None:
        _gomp = False
        try:
            if "OpenMP" in torch.__config__.parallel_info():
                lib = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD)  # torch's, never a new one
                fn = lib.GOMP_parallel
                fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
                fn.restype = None
                _gomp = fn
        except (OSError, AttributeError):  # no libgomp loaded (macOS libomp, another build)
            _gomp = False
    return _gomp


def available() -> bool:
    """torch runs on a libgomp team that the kernels can join."""
    return bool(_runtime())


def threads(values: int) -> int:
    """How many threads a call producing ``values`` values should use (1: the caller's)."""
    n = torch.get_num_threads()
    return n if n > 1 and values >= MIN_VALUES and available() else 1


def run(task_address: int, params: np.ndarray, n_threads: int) -> None:
    """Run the task on ``n_threads`` threads of torch's team (the GIL is released)."""
    params[NEXT] = 0
    _runtime()(task_address, params.ctypes.data, n_threads, 0)


def block(**fields: int) -> np.ndarray:
    """A parameter block with the named fields set (the others 0)."""
    params = np.zeros(len(FIELDS), np.int64)
    for name, value in fields.items():
        params[FIELDS.index(name)] = value
    return params
