"""inspect(): what a model or a weightshare file holds, tensor by tensor, and what it costs.

Glossary (used everywhere, README included):

* ``total_params``: values the model computes with, every alias of a tie counted;
  a shared weight counts its dense size. Persistent float buffers (norm statistics)
  count too, as they are stored in files; integer buffers do not.
* ``unique_params``: float values actually stored: a tie counts once, a shared weight
  counts the float tensors it stores (a codebook's entries, a relaxed tie's deltas; codes
  are indices, not parameters).
* ``dense_bytes``: ``total_params`` at 4 bytes (fp32), the size with no sharing at all.
* ``stored_bytes``: what storing it takes: floats at their dtype, codes packed at
  ``bits`` per value, each tied tensor once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.names import user_name
from ..core.protocol import SharedWeight, iter_shared
from ..io.read import StoredTensors, unpack_part
from ..io.schema import part_name, scheme_body

FP32 = 4


@dataclass
class Row:
    """One parameter tensor: how it is shared and what it costs."""

    name: str
    shape: list[int]
    scheme: str  # "dense", "tied", or the kind of a shared weight ("codebook", "relaxed", ...)
    dense_bytes: int
    stored_bytes: int
    bits: int | None = None
    distinct: int | None = None  # distinct values the weight takes (codebook weights)
    source: str | None = None  # for a tie: the name it shares storage with
    detail: str = ""


@dataclass
class Report:
    """Counts and bytes of a model or file; ``str(report)`` is a table, ``to_dict()`` JSON."""

    rows: list[Row] = field(default_factory=list)
    total_params: int = 0
    unique_params: int = 0
    dense_bytes: int = 0
    stored_bytes: int = 0
    file_bytes: int | None = None

    @property
    def ratio(self) -> float:
        """dense_bytes / stored_bytes (or / file_bytes for a file)."""
        denom = self.file_bytes if self.file_bytes else self.stored_bytes
        return self.dense_bytes / denom if denom else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_params": self.total_params,
            "unique_params": self.unique_params,
            "dense_bytes": self.dense_bytes,
            "stored_bytes": self.stored_bytes,
            "file_bytes": self.file_bytes,
            "ratio": self.ratio,
            "rows": [asdict(r) for r in self.rows],
        }

    def summary(self) -> str:
        lines = [
            f"parameters: {self.total_params:,} used, {self.unique_params:,} stored",
            f"dense fp32: {_mib(self.dense_bytes)}   stored: {_mib(self.stored_bytes)}"
            + (f"   file: {_mib(self.file_bytes)}" if self.file_bytes else "")
            + f"   ratio: {self.ratio:.2f}x",
        ]
        by_scheme: dict[str, int] = {}
        for r in self.rows:
            by_scheme[r.scheme] = by_scheme.get(r.scheme, 0) + 1
        lines.append("tensors: " + ", ".join(f"{n} {s}" for s, n in sorted(by_scheme.items())))
        return "\n".join(lines)

    def __str__(self) -> str:
        head = ("name", "shape", "scheme", "bits", "distinct", "dense", "stored")
        body = [(r.name, "x".join(map(str, r.shape)), r.scheme if not r.source
                 else f"tied -> {r.source}", "-" if r.bits is None else str(r.bits),
                 "-" if r.distinct is None else str(r.distinct), _mib(r.dense_bytes),
                 _mib(r.stored_bytes)) for r in self.rows]
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
                  for i, h in enumerate(head)]
        fmt = "  ".join(f"{{:{'<' if i < 3 else '>'}{w}}}" for i, w in enumerate(widths))
        out = [fmt.format(*head)] + [fmt.format(*b) for b in body]
        return "\n".join(out + ["", self.summary()])


def _mib(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def inspect(model_or_path: nn.Module | str | Path) -> Report:
    """Report parameters and bytes, per tensor and in total, of a model or a weightshare file.

    Example:
        >>> import torch, weightshare as ws
        >>> m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
        >>> m[1].weight = m[0].weight
        >>> r = ws.inspect(m)
        >>> r.total_params, r.unique_params
        (40, 24)
    """
    if isinstance(model_or_path, (str, Path)):
        return _inspect_file(Path(model_or_path))
    return _inspect_model(model_or_path)


def _inspect_model(model: nn.Module) -> Report:
    rep = Report()
    seen: dict[Any, str] = {}  # tensor or shared weight -> the row that counted it
    # what a file stores: parameters and persistent float buffers (integer buffers such as
    # position ids are stored but are no parameters), the same on both sides
    for name, tensor in model.state_dict(keep_vars=True).items():
        if ".parametrizations." in f".{name}" or not tensor.is_floating_point():
            continue  # shared weights are counted below
        _dense_row(rep, seen, name, list(tensor.shape), tensor.numel(),
                   tensor.numel() * tensor.element_size(), id(tensor))
    owners: dict[int, tuple[str, torch.Tensor]] = {}  # id(stored tensor) -> (its weight, it)
    for fqn, _m, _a, weight, original in iter_shared(model, remove_duplicate=False):
        _shared_row(rep, seen, fqn, weight, original, owners)
    order: dict[str, int] = {}
    for i, n in enumerate(model.state_dict(keep_vars=True)):
        order.setdefault(user_name(n), i)
    return _finish(rep, order)


def _dense_row(rep: Report, seen: dict, name: str, shape: list[int], numel: int, nbytes: int,
               key: object) -> None:
    source = seen.get(key)
    rep.total_params += numel
    if source is not None:
        rep.rows.append(Row(name, shape, "tied", numel * FP32, 0, source=source))
        return
    seen[key] = name
    rep.rows.append(Row(name, shape, "dense", numel * FP32, nbytes))
    rep.unique_params += numel


def _shared_row(rep: Report, seen: dict, fqn: str, weight: SharedWeight,
                original: torch.Tensor, owners: dict[int, tuple[str, torch.Tensor]]) -> None:
    """One row for a shared weight; its parts are counted once however many weights use them."""
    scheme = weight.scheme(original)
    cls = type(weight)
    shape = list(cls.dense_shape(scheme))
    numel = math.prod(shape)
    rep.total_params += numel
    key = (id(weight), id(original))
    if key in seen:
        rep.rows.append(Row(fqn, shape, "tied", numel * FP32, 0, source=seen[key]))
        return
    seen[key] = fqn
    specs = cls.part_specs(scheme)
    own = weight.parts()
    stored, borrowed = 0, []
    for part, spec in specs.items():
        t = original if part == weight.original_part else own[part]
        if id(t) in owners:  # stored by another weight (a codebook shared across layers, ...)
            borrowed.append(f"{part} of {owners[id(t)][0]}")
            continue
        owners[id(t)] = (fqn, t)  # t kept alive: parts() may build new tensors, ids get reused
        stored += spec.stored_bytes
        rep.unique_params += spec.numel if spec.is_float else 0
    detail = ", ".join([d for d in [weight.describe(original), *borrowed] if d])
    with torch.no_grad():
        distinct = weight.distinct_values(original)
    rep.rows.append(Row(fqn, shape, weight.kind, numel * FP32, stored, bits=weight.code_bits(),
                        distinct=distinct, detail=detail))


def _finish(rep: Report, order: dict[str, int]) -> Report:
    rep.rows.sort(key=lambda r: order.get(r.name, len(order)))
    rep.dense_bytes = rep.total_params * FP32
    rep.stored_bytes = sum(r.stored_bytes for r in rep.rows)
    return rep


_INTEGER_TAGS = ("I64", "I32", "I16", "I8", "U8", "BOOL", "U64", "U32", "U16")


def _inspect_file(path: Path) -> Report:
    """Rows from the file's header and metadata, each shared weight rebuilt through the
    protocol (its parts read; no dense weight expanded)."""
    stored = StoredTensors(path)
    meta, infos, layout = stored.metadata, stored.infos, stored.layout
    ties = meta["ties"]
    rep = Report(file_bytes=path.stat().st_size)
    seen: dict[Any, str] = {}
    for name in layout.dense:
        info = infos[name]
        if info.dtype in _INTEGER_TAGS:
            continue  # integer buffers (position ids...): stored, but not parameters
        _dense_row(rep, seen, name, list(info.shape), info.numel, info.nbytes, name)
    originals: dict[str, torch.Tensor] = {}  # stored tensor name -> the one object read
    owners: dict[int, tuple[str, torch.Tensor]] = {}
    rebuilt = []  # kept alive: rows tell weights apart by id
    for fqn, cls in layout.weights.items():
        body = scheme_body(meta["schemes"][fqn])
        slot = layout.slot(fqn, cls.original_part, ties)
        if slot not in originals:
            spec = layout.parts.get(slot)
            originals[slot] = stored[slot] if spec is None else unpack_part(stored[slot], spec)
        own = {part: stored.part(fqn, part) for part in layout.specs[fqn]
               if part != cls.original_part}
        rebuilt.append((cls.from_scheme(body, own), own))
        _shared_row(rep, seen, fqn, rebuilt[-1][0], originals[slot], owners)
    for alias, source in ties.items():
        if alias in layout.parts:
            continue
        src = next((r for r in rep.rows if r.name == source), None)
        if src is None:  # a dense name tied to a part of a shared weight
            shape = list(layout.parts[source].shape)
            rep.rows.append(Row(alias, shape, "tied", math.prod(shape) * FP32, 0, source=source))
            rep.total_params += math.prod(shape)
            continue
        rep.rows.append(Row(alias, src.shape, "tied", src.dense_bytes, 0, source=source))
        rep.total_params += math.prod(src.shape)
    order = {n: i for i, n in enumerate(infos)}
    order.update({f: order.get(part_name(f, c.original_part), len(order))
                  for f, c in layout.weights.items()})
    return _finish(rep, order)
