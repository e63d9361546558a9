"""What the codes of a shared weight cost: fixed-width, entropy-coded, and the Shannon limit.

Generic over the protocol: every part a kind declares with ``bits`` (``PartSpec.bits``) is
a part of codes, whatever the kind; its histogram is counted from the part itself (in a
model: ``parts()`` or ``packed_parts()``; in a file: the stored stream, or the histogram an
entropy-coded part stores). "Entropy-coded" is what ``save(..., entropy=True)`` stores for
it: the coded part (histogram included), or the bit-packed one where coding would not be
smaller; it is computed by running the coder (None when ``constriction`` is missing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.protocol import PartSpec, SharedWeight
from ..io import entropy
from ..io.bitpack import packed_length
from ..io.read import StoredTensors


@dataclass
class CodeStats:
    """Bytes of the parts of codes of one shared weight."""

    codes: int = 0  # number of codes
    fixed_bytes: int = 0  # bit-packed at their width
    entropy_bytes: float = 0.0  # Shannon limit of each part's code histogram, summed
    coded_bytes: int | None = 0  # as an entropy-coded file stores them

    def add(self, other: CodeStats) -> None:
        self.codes += other.codes
        self.fixed_bytes += other.fixed_bytes
        self.entropy_bytes += other.entropy_bytes
        self.coded_bytes = None if self.coded_bytes is None or other.coded_bytes is None \
            else self.coded_bytes + other.coded_bytes


def _of_source(source: entropy.CodeSource, spec: PartSpec) -> CodeStats:
    bits, numel = int(spec.bits or 0), spec.numel
    fixed = packed_length(numel, bits)
    counts = entropy.histogram(source, bits, numel)
    coded: int | None = None
    if entropy.available():
        coded = min(fixed, int(entropy.encode(source, bits, numel).blob.size))
    return CodeStats(numel, fixed, entropy.shannon_bytes(counts), coded)


def weight_stats(weight: SharedWeight, specs: dict[str, PartSpec]) -> CodeStats | None:
    """Stats of the parts of codes a shared weight holds itself (None if it has none)."""
    coded_parts = [p for p, s in specs.items() if s.bits is not None and p != weight.original_part]
    if not coded_parts:
        return None
    packed = weight.packed_parts()
    logical = {} if set(packed) >= set(coded_parts) else weight.parts()
    total = CodeStats()
    for part in coded_parts:
        spec = specs[part]
        assert spec.bits is not None
        source = entropy.packed_source(packed[part], spec.bits, spec.numel) if part in packed \
            else entropy.logical_source(logical[part])
        total.add(_of_source(source, spec))
    return total


def file_stats(stored: StoredTensors, fqn: str, cls: type[SharedWeight],
               specs: dict[str, PartSpec]) -> CodeStats | None:
    """Stats of the parts of codes a file stores for shared weight ``fqn``."""
    coded_parts = [p for p, s in specs.items() if s.bits is not None and p != cls.original_part]
    if not coded_parts:
        return None
    total = CodeStats()
    for part in coded_parts:
        spec, name = specs[part], f"{fqn}.{part}"
        assert spec.bits is not None
        coding = stored.layout.coding.get(name)
        if coding is None:
            total.add(_of_source(entropy.packed_source(stored[name], spec.bits, spec.numel),
                                 spec))
            continue
        blob = stored[name].numpy()  # coded: its histogram is stored, its size is the cost
        counts = blob[: 4 << spec.bits].view("<u4").astype(np.int64)
        total.add(CodeStats(spec.numel, packed_length(spec.numel, spec.bits),
                            entropy.shannon_bytes(counts), int(blob.size)))
    return total


def per_weight(nbytes: float | None, weights: int) -> float | None:
    """Bytes as bits per dense weight."""
    return None if nbytes is None or not weights else 8.0 * nbytes / weights

