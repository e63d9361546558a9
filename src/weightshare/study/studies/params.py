"""``params``: what sharing saves in parameters and bytes, for every model of the studies.

Each model is counted by ``ws.inspect`` (total parameters it computes with, unique
parameters it stores, stored bytes) and saved with ``ws.save`` to measure its file on
disk. Counts do not depend on the seed; each model is still built with every seed, so the
table shows (zero) spreads like every other.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from torch import nn

from ...analysis.report import inspect
from ...errors import DataError
from ...io import save
from .. import lm
from ..context import Claim, Context, Result, Table
from ..registry import Study, register
from ..stats import compare, summarize
from ..zoo import (
    FACTORS,
    conv_net,
    dense_net,
    equal_size_hidden,
    gru_pair,
    hashed_net,
    local_net,
    mlp_net,
)
from .expressiveness import QUICK_VARIANTS, VARIANTS

# the Shakespeare vocabulary's size (76 characters, id 0 included) when no --data is given
DEFAULT_VOCAB = 76


def models(ctx: Context, vocab: int) -> dict[str, tuple[str, Callable[[int], nn.Module]]]:
    """name -> (study, seed -> model): every model the other studies train."""
    size = ctx.pick(lm.QUICK, lm.FULL)
    length, dim, hidden = ctx.pick((8, 8, 16), (32, 32, 128))
    factors = ctx.pick((8, 64), FACTORS)
    out: dict[str, tuple[str, Callable[[int], nn.Module]]] = {
        "LeNet-5 (conv)": ("limited-data, training-speed, convergence", conv_net),
        "LeNet-5 locally connected twin": ("limited-data, training-speed, convergence",
                                           local_net),
        "dense MLP 784-480-120-10": ("limited-data", mlp_net),
        "LeNet-300-100": ("hashing", partial(dense_net, (300, 100))),
    }
    for f in factors:
        out[f"LeNet-300-100 hashed 1/{f}"] = ("hashing", partial(hashed_net, 1 / f))
        hashed = inspect(hashed_net(1 / f, 0)).unique_params
        h = equal_size_hidden(hashed)
        out[f"dense 784-{h[0]}-{h[1]}-10 (= hashed 1/{f})"] = ("hashing", partial(dense_net, h))
    for v in ctx.pick(QUICK_VARIANTS, VARIANTS):
        used = ", training-speed, convergence" if v in ("untied", "all") else ""
        out[f"char transformer {lm.label(v, size)}"] = (
            "expressiveness" + used, partial(_transformer, v, vocab, size))
    out["char GRU"] = ("recurrence", partial(_gru, 0, vocab, dim, hidden, length))
    out[f"char GRU per-step twin ({length} steps)"] = (
        "recurrence", partial(_gru, 1, vocab, dim, hidden, length))
    return out


def _transformer(variant: str, vocab: int, size: lm.LMSize, seed: int) -> nn.Module:
    return lm.build(variant, vocab, size, seed)


def _gru(which: int, vocab: int, dim: int, hidden: int, length: int, seed: int) -> nn.Module:
    return gru_pair(vocab, dim, hidden, length, seed)[which]


def run(ctx: Context) -> Result:
    try:
        vocab, source = lm.corpus(ctx.shakespeare_path()).vocab_size, "measured"
    except DataError:
        vocab, source = DEFAULT_VOCAB, "default (no --data)"
    zoo = models(ctx, vocab)
    ctx.progress.start(len(zoo) * len(ctx.seeds), unit="model")
    counts: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (study, build) in zoo.items():
            per_seed = []
            for seed in ctx.seeds:
                model = build(seed)
                path = Path(tmp) / "m.safetensors"
                save(model, path)
                report = inspect(model)
                per_seed.append({"total_params": report.total_params,
                                 "unique_params": report.unique_params,
                                 "dense_bytes": report.dense_bytes,
                                 "stored_bytes": report.stored_bytes,
                                 "file_bytes": path.stat().st_size})
                ctx.progress.update(1)
            counts[name] = {"study": study, "per_seed": per_seed,
                            **{k: summarize([p[k] for p in per_seed]).to_dict()
                               for k in per_seed[0]}}

    def vals(name: str, key: str) -> list[float]:
        return [float(p[key]) for p in counts[name]["per_seed"]]

    size = ctx.pick(lm.QUICK, lm.FULL)
    length = ctx.pick(8, 32)
    pairs = [("LeNet-5 (conv)", "LeNet-5 locally connected twin", "spatial sharing"),
             ("char GRU", f"char GRU per-step twin ({length} steps)", "temporal sharing"),
             (f"char transformer {lm.label('cycle3', size)}",
              f"char transformer {lm.label('untied', size)}", "cycle-3 ties"),
             (f"char transformer {lm.label('all', size)}",
              f"char transformer {lm.label('untied', size)}", "all-shared ties")]
    pairs += [(f"LeNet-300-100 hashed 1/{f}", "LeNet-300-100", f"hashing 1/{f}")
              for f in ctx.pick((8, 64), FACTORS)]
    unique = Claim("fewer-params", "Sharing reduces the number of parameters stored.",
                   [compare("unique parameters", vals(a, "unique_params"),
                            vals(b, "unique_params"), better="lower", a=a, b=b, condition=c)
                    for a, b, c in pairs])
    files = Claim("smaller-files", "Sharing makes the saved model smaller on disk "
                  "(weightshare file, each shared tensor stored once).",
                  [compare("file bytes", vals(a, "file_bytes"), vals(b, "file_bytes"),
                           better="lower", a=a, b=b, condition=c) for a, b, c in pairs])
    table = Table("Parameters and bytes (identical for every seed)",
                  ["model", "used in", "total params", "unique params", "stored bytes",
                   "file bytes", "dense fp32 / file"],
                  [[name, c["study"], f"{int(c['total_params']['mean']):,}",
                    f"{int(c['unique_params']['mean']):,}",
                    f"{int(c['stored_bytes']['mean']):,}", f"{int(c['file_bytes']['mean']):,}",
                    f"{c['dense_bytes']['mean'] / c['file_bytes']['mean']:.2f}x"]
                   for name, c in counts.items()])
    plot = "params.png"
    with ctx.figure(plot, width=8, height=0.28 * len(counts) + 1.5) as ax:
        names = list(counts)
        ys = range(len(names))
        ax.barh(ys, [counts[n]["total_params"]["mean"] for n in names], color="0.8",
                label="total (computed with)")
        ax.barh(ys, [counts[n]["unique_params"]["mean"] for n in names], color="C0",
                label="unique (stored)")
        ax.set_yticks(list(ys), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.legend(fontsize=8)
    notes = [f"Character vocabulary: {vocab} ({source}).",
             "total params: what the model computes with (a tie counted at every use); unique "
             "params: what is stored (a tie once, a hashed weight's bucket); file bytes: the "
             "size of the ws.save file on disk, header included."]
    return Result(figures={"models": counts, "vocab": vocab}, claims=[unique, files],
                  tables=[table], plots=[plot], notes=notes,
                  setup={"vocab": vocab, "vocab_source": source})


STUDY = register(Study(
    "params", "Parameters and bytes: what sharing saves",
    "sharing reduces the number of parameters and the bytes stored", (), run))
