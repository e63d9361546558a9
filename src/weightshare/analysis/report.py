"""inspect(): what a model or a weightshare file holds, tensor by tensor, and what it costs.

Glossary (used everywhere, README included):

* ``total_params``: values the model computes with, every alias of a tie counted;
  a shared weight counts its dense size. Persistent float buffers (norm statistics)
  count too, as they are stored in files; integer buffers do not.
* ``unique_params``: float values actually stored: a tie counts once, a shared weight
  counts the float tensors it stores (a codebook's entries, a relaxed tie's deltas; codes
  are indices, not parameters).
* ``dense_bytes``: the baseline every ratio divides: the bytes of the model as the user
  had it before sharing, each shared tensor once, every tensor at its own dtype
  (``dense_dtype``: a bf16 model is compared at bf16), buffers included
  (``core/baseline.py``). The same number for a model, its directory and its files.
* ``stored_bytes``: what storing it takes: floats at their dtype, codes packed at
  ``bits`` per value, each tied tensor once, buffers included.
* the codes of shared weights (``analysis.codes``), per tensor in bits per dense weight
  and in total in bytes: fixed-width (``fixed_bits``, ``codes_fixed_bytes``), entropy-coded
  as ``save(..., entropy=True)`` stores them (``coded_bits``, ``codes_coded_bytes``) and
  the Shannon limit of their histograms (``entropy_bits``, ``codes_entropy_bytes``).

Per row, ``dense_bytes`` is that tensor alone, dense, at its dtype.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.baseline import BASELINE_KEY, baseline, dtype_label, valid_baseline
from ..core.names import user_name
from ..core.protocol import DTYPE_BYTES, SharedWeight, dtype_name, iter_shared
from ..io.read import StoredTensors
from ..io.schema import part_name, scheme_body
from .codes import CodeStats, file_stats, per_weight, weight_stats


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
    dtype: str = ""  # of the dense tensor
    fixed_bits: float | None = None  # codes at their width, bits per dense weight
    entropy_bits: float | None = None  # Shannon limit of the code histogram, per weight
    coded_bits: float | None = None  # codes entropy-coded (as saved with entropy=True)


@dataclass
class Report:
    """Counts and bytes of a model or file; ``str(report)`` is a table, ``to_dict()`` JSON."""

    rows: list[Row] = field(default_factory=list)
    total_params: int = 0
    unique_params: int = 0
    dense_bytes: int = 0
    stored_bytes: int = 0
    file_bytes: int | None = None
    dense_dtype: str = "float32"
    buffer_bytes: int = 0  # integer buffers (position ids, ...): stored, no parameters
    codes: CodeStats = field(default_factory=CodeStats)

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
            "dense_dtype": self.dense_dtype,
            "ratio": self.ratio,
            "codes_fixed_bytes": self.codes.fixed_bytes,
            "codes_coded_bytes": self.codes.coded_bytes,
            "codes_entropy_bytes": self.codes.entropy_bytes,
            "rows": [asdict(r) for r in self.rows],
        }

    def summary(self) -> str:
        lines = [
            f"parameters: {self.total_params:,} used, {self.unique_params:,} stored",
            f"dense {dtype_label(self.dense_dtype)}: {_mib(self.dense_bytes)}   "
            f"stored: {_mib(self.stored_bytes)}"
            + (f"   file: {_mib(self.file_bytes)}" if self.file_bytes else "")
            + f"   ratio: {self.ratio:.2f}x",
        ]
        by_scheme: dict[str, int] = {}
        for r in self.rows:
            by_scheme[r.scheme] = by_scheme.get(r.scheme, 0) + 1
        lines.append("tensors: " + ", ".join(f"{n} {s}" for s, n in sorted(by_scheme.items())))
        c = self.codes
        if c.codes:
            coded = "-" if c.coded_bytes is None else _mib(c.coded_bytes)
            limit = f"{c.entropy_bytes / 2**20:.2f} MiB" if c.entropy_bytes >= 2**20 \
                else f"{c.entropy_bytes / 1024:.1f} KiB"
            lines.append(f"codes: {c.codes:,} at {8 * c.fixed_bytes / c.codes:.3f} bits "
                         f"fixed-width ({_mib(c.fixed_bytes)}), entropy-coded {coded}, Shannon "
                         f"limit {limit} ({8 * c.entropy_bytes / c.codes:.3f} bits/code)")
        return "\n".join(lines)

    def __str__(self) -> str:
        head = ("name", "shape", "scheme", "bits", "distinct", "dense", "stored", "bpw fixed",
                "coded", "entropy")
        body = [(r.name, "x".join(map(str, r.shape)), r.scheme if not r.source
                 else f"tied -> {r.source}", "-" if r.bits is None else str(r.bits),
                 "-" if r.distinct is None else str(r.distinct), _mib(r.dense_bytes),
                 _mib(r.stored_bytes), _bpw(r.fixed_bits), _bpw(r.coded_bits),
                 _bpw(r.entropy_bits)) for r in self.rows]
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
                  for i, h in enumerate(head)]
        fmt = "  ".join(f"{{:{'<' if i < 3 else '>'}{w}}}" for i, w in enumerate(widths))
        out = [fmt.format(*head)] + [fmt.format(*b) for b in body]
        return "\n".join(out + ["", self.summary()])


def _bpw(bits: float | None) -> str:
    return "-" if bits is None else f"{bits:.3f}"


def _code_columns(rep: Report, row: Row, stats: CodeStats | None) -> None:
    """Fill a row's code columns and add them to the totals."""
    if stats is None:
        return
    weights = math.prod(row.shape)
    row.fixed_bits = per_weight(stats.fixed_bytes, weights)
    row.entropy_bits = per_weight(stats.entropy_bytes, weights)
    row.coded_bits = per_weight(stats.coded_bytes, weights)
    rep.codes.add(stats)


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
        if ".parametrizations." in f".{name}":
            continue  # shared weights are counted below
        nbytes = tensor.numel() * tensor.element_size()
        if not tensor.is_floating_point():  # integer buffers: stored bytes, no parameters
            rep.buffer_bytes += nbytes if id(tensor) not in seen else 0
            seen.setdefault(id(tensor), name)
            continue
        _dense_row(rep, seen, name, list(tensor.shape), tensor.numel(), nbytes, id(tensor),
                   dtype_name(tensor.dtype))
    owners: dict[int, tuple[str, torch.Tensor]] = {}  # id(stored tensor) -> (its weight, it)
    for fqn, _m, _a, weight, original in iter_shared(model, remove_duplicate=False):
        _shared_row(rep, seen, fqn, weight, original, owners)
    order: dict[str, int] = {}
    for i, n in enumerate(model.state_dict(keep_vars=True)):
        order.setdefault(user_name(n), i)
    return _finish(rep, order, baseline(model))


def _dense_row(rep: Report, seen: dict, name: str, shape: list[int], numel: int, nbytes: int,
               key: object, dtype: str) -> None:
    source = seen.get(key)
    rep.total_params += numel
    if source is not None:
        rep.rows.append(Row(name, shape, "tied", nbytes, 0, source=source, dtype=dtype))
        return
    seen[key] = name
    rep.rows.append(Row(name, shape, "dense", nbytes, nbytes, dtype=dtype))
    rep.unique_params += numel


def _shared_row(rep: Report, seen: dict, fqn: str, weight: SharedWeight,
                original: torch.Tensor, owners: dict[int, tuple[str, torch.Tensor]],
                stats: CodeStats | None = None) -> None:
    """One row for a shared weight; its parts are counted once however many weights use them."""
    scheme = weight.scheme(original)
    cls = type(weight)
    shape = list(cls.dense_shape(scheme))
    numel = math.prod(shape)
    rep.total_params += numel
    # the dtype the weight computes in (a float32 codebook of a bf16 model: bf16)
    dtype = cls.dense_dtype_name(scheme) if original.is_floating_point() else "float32"
    dense = numel * DTYPE_BYTES.get(dtype, 4)
    key = (id(weight), id(original))
    if key in seen:
        rep.rows.append(Row(fqn, shape, "tied", dense, 0, source=seen[key], dtype=dtype))
        return
    seen[key] = fqn
    specs = cls.part_specs(scheme)
    own = weight.packed_parts()  # (a packed form: no unpacked copy of its codes)
    if not set(own) >= set(specs) - {weight.original_part}:
        own = {**weight.parts(), **own}
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
        codes = weight_stats(weight, specs) if stats is None else stats
    rep.rows.append(Row(fqn, shape, weight.kind, dense, stored, bits=weight.code_bits(),
                        distinct=distinct, detail=detail, dtype=dtype))
    _code_columns(rep, rep.rows[-1], codes)


def _finish(rep: Report, order: dict[str, int], base: dict[str, Any]) -> Report:
    rep.rows.sort(key=lambda r: order.get(r.name, len(order)))
    rep.dense_bytes, rep.dense_dtype = base["bytes"], base["dtype"]
    rep.stored_bytes = sum(r.stored_bytes for r in rep.rows) + rep.buffer_bytes
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
            rep.buffer_bytes += info.nbytes  # integer buffers: stored, but not parameters
            continue
        _dense_row(rep, seen, name, list(info.shape), info.numel, info.nbytes, name,
                   _TAG_DTYPES.get(info.dtype, ""))
    originals: dict[str, torch.Tensor] = {}  # stored tensor name -> the one object read
    owners: dict[int, tuple[str, torch.Tensor]] = {}
    rebuilt = []  # kept alive: rows tell weights apart by id
    for fqn, cls in layout.weights.items():
        body = scheme_body(meta["schemes"][fqn])
        slot = layout.slot(fqn, cls.original_part, ties)
        if slot not in originals:
            originals[slot] = stored.reader.part(slot, packed=False)
        own = {part: stored.part(fqn, part) for part in layout.specs[fqn]
               if part != cls.original_part}
        rebuilt.append((cls.from_scheme(body, own), own))
        _shared_row(rep, seen, fqn, rebuilt[-1][0], originals[slot], owners,
                    file_stats(stored, fqn, cls, layout.specs[fqn]))
    for alias, source in ties.items():
        if alias in layout.parts:
            continue
        src = next((r for r in rep.rows if r.name == source), None)
        if src is None:  # a dense name tied to a part of a shared weight
            spec = layout.parts[source]
            shape = list(spec.shape)
            rep.rows.append(Row(alias, shape, "tied", spec.numel * DTYPE_BYTES.get(spec.dtype, 4),
                                0, source=source, dtype=spec.dtype))
            rep.total_params += math.prod(shape)
            continue
        rep.rows.append(Row(alias, src.shape, "tied", src.dense_bytes, 0, source=source,
                            dtype=src.dtype))
        rep.total_params += math.prod(src.shape)
    order = {n: i for i, n in enumerate(infos)}
    order.update({f: order.get(part_name(f, c.original_part), len(order))
                  for f, c in layout.weights.items()})
    recorded = (meta.get("extra") or {}).get(BASELINE_KEY)
    base = recorded if isinstance(recorded, dict) and valid_baseline(recorded) \
        else _rows_baseline(rep)
    return _finish(rep, order, base)


_TAG_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def _rows_baseline(rep: Report) -> dict[str, Any]:
    """The baseline of a file that records none: what it holds, each tensor once, dense."""
    rows = [r for r in rep.rows if r.scheme != "tied"]
    by_dtype: dict[str, int] = {}
    for r in rows:
        by_dtype[r.dtype] = by_dtype.get(r.dtype, 0) + r.dense_bytes
    dtype = max(by_dtype, key=lambda d: by_dtype[d]) if by_dtype else "float32"
    return {"bytes": sum(r.dense_bytes for r in rows) + rep.buffer_bytes,
            "params": sum(math.prod(r.shape) for r in rows), "dtype": dtype or "float32"}
