"""Cross-layer strategies: which of M unique slots each of N blocks uses.

| strategy    | N = 6, M = 3  | source                                              |
| ----------- | ------------- | --------------------------------------------------- |
| all         | 0 0 0 0 0 0   | ALBERT, Universal Transformer (M = 1)               |
| sequence    | 0 0 1 1 2 2   | consecutive blocks share; any M <= N                |
| cycle       | 0 1 2 0 1 2   | the M unique blocks loop (Recursive Transformers)   |
| cycle_rev   | 0 1 2 2 1 0   | the loop runs forward then backward                 |
| repeat      | 0 0 1 1 2 2   | MobileLLM block-wise immediate sharing              |

``repeat`` and ``sequence`` give the same map when N = 2M. They differ in intent
and in what they accept: ``repeat`` is MobileLLM's "each unique block runs twice in
a row", so it *requires* N = 2M; ``sequence`` accepts any M <= N and spreads the
blocks as evenly as it can (N = 5, M = 2: 0 0 0 1 1). Slots are numbered in order
of first use, so slot s's first member is the earliest block using it.
"""

from __future__ import annotations

from ...errors import ConfigError, TieError


def default_unique(strategy: str, n: int) -> int:
    """M when the user gives none: 1 for ``all``, otherwise pairs (N // 2)."""
    return 1 if strategy == "all" else max(1, n // 2)


def assign(strategy: str, n: int, m: int) -> tuple[int, ...]:
    """Slot of each of ``n`` blocks under ``strategy`` with ``m`` unique slots.

    Example:
        >>> assign("cycle_rev", 6, 3)
        (0, 1, 2, 2, 1, 0)
        >>> assign("sequence", 5, 2)
        (0, 0, 0, 1, 1)
    """
    if n < 2:
        raise TieError(f"strategy {strategy!r} needs a stack of at least 2 blocks, got {n}; "
                       "widen layers or pick another stack")
    if m < 1 or m > n:
        raise TieError(f"unique={m} does not fit a stack of {n} blocks; use 1 <= unique <= {n}")
    if strategy == "all":
        if m != 1:
            raise ConfigError(f"strategy 'all' keeps one unique block, got unique={m}")
        return (0,) * n
    if strategy == "sequence":
        return tuple(i * m // n for i in range(n))
    if strategy == "cycle":
        return tuple(i % m for i in range(n))
    if strategy == "cycle_rev":
        # period 2M: 0 .. M-1, M-1 .. 0, then again
        return tuple(k if k < m else 2 * m - 1 - k for k in (i % (2 * m) for i in range(n)))
    if strategy == "repeat":
        if n != 2 * m:
            raise TieError(f"strategy 'repeat' runs each unique block twice in a row, so it needs "
                           f"N = 2M: the stack has {n} blocks, unique={m}; use unique={n // 2} "
                           "(even N) or strategy 'sequence'")
        return tuple(i // 2 for i in range(n))
    raise ConfigError(f"unknown tie strategy {strategy!r}")


def normalize(assignment: tuple[int, ...]) -> tuple[int, ...]:
    """Renumber slots in order of first use: (2, 0, 2, 1) -> (0, 1, 0, 2)."""
    first: dict[int, int] = {}
    return tuple(first.setdefault(s, len(first)) for s in assignment)


def stepwise_sources(n: int, m: int) -> tuple[int, ...]:
    """Block position that initialises each slot under ``init='stepwise'``.

    Evenly spaced blocks of the stack, every (N / M)-th, as in Relaxed Recursive
    Transformers: with a looped (``cycle``) model one pass over the M slots then
    approximates the whole original depth. For ``sequence`` these are members of
    their slot; for ``cycle`` they generally are not (slot 1 of N = 6, M = 3 starts
    from block 2).

    Example:
        >>> stepwise_sources(6, 3)
        (0, 2, 4)
    """
    return tuple(s * n // m for s in range(m))


def slots(assignment: tuple[int, ...]) -> list[list[int]]:
    """Positions of the blocks in each slot: (0, 1, 0) -> [[0, 2], [1]]."""
    out: list[list[int]] = [[] for _ in range(max(assignment) + 1)]
    for pos, s in enumerate(assignment):
        out[s].append(pos)
    return out
