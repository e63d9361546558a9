"""inspect(): what a model or a weightshare file holds, tensor by tensor, and what it costs.

Glossary (used everywhere, README included):

* ``total_params``: values the model computes with, every alias of a tie counted;
  a codebook weight counts its dense size.
* ``unique_params``: float values actually stored: a tie counts once, a codebook
  weight counts its codebook entries (its codes are indices, not parameters).
* ``dense_bytes``: ``total_params`` at 4 bytes (fp32), the size with no sharing at all.
* ``stored_bytes``: what storing it takes: floats at their dtype, codes packed at
  ``bits`` per value, each tied tensor once.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .codebook.parametrization import codebook_of, iter_codebooks, strip_parametrization_names

FP32 = 4
# `x.parametrizations.weight.0.lora_A`: a tensor held by a parametrization module
_PARAMETRIZATION_OWN = re.compile(r"\.parametrizations\.[^.]+\.\d+\.")


@dataclass
class Row:
    """One parameter tensor: how it is shared and what it costs."""

    name: str
    shape: list[int]
    scheme: str  # "dense", "codebook", "tied", "relaxed", ...
    dense_bytes: int
    stored_bytes: int
    bits: int | None = None
    distinct: int | None = None  # distinct values the layer uses (codebook weights)
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


def packed_bytes(numel: int, bits: int) -> int:
    return (numel * bits + 7) // 8


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
    codebook_ids = {id(codebook): fqn for fqn, _, _, codebook in iter_codebooks(model)}
    seen: dict[int, str] = {}
    for raw_name, tensor in model.named_parameters(remove_duplicate=False):
        name = strip_parametrization_names(raw_name)
        if id(tensor) in codebook_ids:
            continue  # reported below, per weight
        numel = tensor.numel()
        if id(tensor) in seen:
            rep.rows.append(Row(name, list(tensor.shape), "tied", numel * FP32, 0,
                                source=seen[id(tensor)]))
            rep.total_params += numel
            continue
        seen[id(tensor)] = name
        scheme = "dense" if "parametrizations" not in raw_name else _param_kind(model, raw_name)
        # a parametrization's own tensors (a relaxed tie's low-rank delta) are stored
        # but are no weight the model computes with: the weight they adjust counts
        own = _PARAMETRIZATION_OWN.search(raw_name) is not None
        rep.rows.append(Row(name, list(tensor.shape), scheme, 0 if own else numel * FP32,
                            numel * tensor.element_size(), detail="delta" if own else ""))
        rep.total_params += 0 if own else numel
        rep.unique_params += numel
    _add_codebook_rows(model, rep)
    order: dict[str, int] = {}
    for i, (n, _) in enumerate(model.named_parameters(remove_duplicate=False)):
        order.setdefault(strip_parametrization_names(n), i)
    rep.rows.sort(key=lambda r: order.get(r.name, len(order)))
    rep.dense_bytes = rep.total_params * FP32
    rep.stored_bytes = sum(r.stored_bytes for r in rep.rows)
    return rep


def _add_codebook_rows(model: nn.Module, rep: Report) -> None:
    tied_to: dict[int, str] = {}  # same codes and codebook: a tie
    codebook_owner: dict[int, str] = {}  # same codebook, own codes: a cross-layer codebook
    for mname, module in model.named_modules(remove_duplicate=False):
        plists = getattr(module, "parametrizations", None)
        for pname in list(plists.keys()) if plists is not None else ():
            found = codebook_of(module, pname)
            if found is None:
                continue
            param, codebook = found
            fqn = f"{mname}.{pname}" if mname else pname
            numel = param.codes.numel()
            rep.total_params += numel
            if id(param) in tied_to:
                rep.rows.append(Row(fqn, list(param.codes.shape), "tied", numel * FP32, 0,
                                    source=tied_to[id(param)]))
                continue
            tied_to[id(param)] = fqn
            own = id(codebook) not in codebook_owner
            codebook_owner.setdefault(id(codebook), fqn)
            with torch.no_grad():
                distinct = int(torch.unique(getattr(module, pname)).numel())
            stored = packed_bytes(numel, param.bits)
            if own:
                stored += codebook.numel() * codebook.element_size()
                rep.unique_params += codebook.numel()
            detail = f"{param.granularity}, {param.num_groups} codebook(s)"
            if not own:
                detail += f", codebook of {codebook_owner[id(codebook)]}"
            rep.rows.append(Row(fqn, list(param.codes.shape), "codebook", numel * FP32, stored,
                                bits=param.bits, distinct=distinct, detail=detail))


def _param_kind(model: nn.Module, raw_name: str) -> str:
    owner_name, _, rest = raw_name.partition(".parametrizations.")
    owner = model.get_submodule(owner_name) if owner_name else model
    pname = rest.split(".")[0]
    plist = owner.parametrizations[pname]
    for p in plist:
        kind = getattr(p, "scheme", None)
        if callable(kind):
            return str(kind().get("kind", type(p).__name__))
    return type(plist[0]).__name__


def _inspect_file(path: Path) -> Report:
    """Rows from the file's header and metadata; only codes and codebooks are read."""
    from .io import read_tensors, unpack_codes
    from .io.schema import codebook_name, codes_name, dense_tensor_names

    stored = read_tensors(path)
    meta, infos = stored.metadata, stored.infos
    rep = Report(file_bytes=path.stat().st_size)
    for name in dense_tensor_names(meta, infos):
        info = infos[name]
        if info.dtype in ("I64", "I32", "I16", "I8", "U8", "BOOL", "U64", "U32", "U16"):
            continue  # integer buffers (position ids...): stored, but not parameters
        rep.rows.append(Row(name, list(info.shape), "dense", info.numel * FP32, info.nbytes))
        rep.unique_params += info.numel
        rep.total_params += info.numel
    for fqn, scheme in meta["schemes"].items():
        numel = math.prod(scheme["shape"])
        cb_name = codebook_name(scheme.get("codebook_from", fqn))
        codebook = stored[cb_name].reshape(-1)
        codes = unpack_codes(stored[codes_name(fqn)], scheme["bits"], numel).long()
        rows = scheme["shape"][scheme["axis"]]
        codes = codes.reshape(scheme["shape"]).movedim(scheme["axis"], 0).reshape(rows, -1)
        group = torch.arange(rows) // scheme["group_size"]
        used = torch.zeros(codebook.numel(), dtype=torch.bool)
        used[((group << scheme["bits"]).unsqueeze(1) + codes).reshape(-1)] = True
        own = "codebook_from" not in scheme
        stored_bytes = infos[codes_name(fqn)].nbytes + (infos[cb_name].nbytes if own else 0)
        rep.rows.append(Row(fqn, list(scheme["shape"]), "codebook", numel * FP32, stored_bytes,
                            bits=scheme["bits"], distinct=int(codebook[used].unique().numel()),
                            detail=scheme["granularity"]))
        rep.total_params += numel
        rep.unique_params += codebook.numel() if own else 0
    for alias, source in meta["ties"].items():
        src = next(r for r in rep.rows if r.name == source)
        rep.rows.append(Row(alias, src.shape, "tied", src.dense_bytes, 0, source=source))
        rep.total_params += math.prod(src.shape)
    order = {n: i for i, n in enumerate(infos)}
    rep.rows.sort(key=lambda r: order.get(r.name, order.get(codes_name(r.name), len(order))))
    rep.dense_bytes = rep.total_params * FP32
    rep.stored_bytes = sum(r.stored_bytes for r in rep.rows)
    return rep
