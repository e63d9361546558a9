"""``recurrence``: what sharing across time buys a recurrent language model.

A character GRU (one set of weights for every step) and its per-step twin
(``ws.unshare``: its own weights at each of the T steps it was built for), both trained on
windows of T characters of Shakespeare. Then both are evaluated on the validation plays at
the trained length, at shorter lengths and at lengths the GRU never saw in training.

The twin cannot run more than T steps: it has no weights for step T+1. The study does not
invent any (no reuse of the last step's weights, no averaging): past T it reports the twin
as *not runnable*, and compares the GRU against the one thing the twin can do with a long
text, reading it in chunks of T with its state reset at every chunk. Shorter lengths L < T
are exact for the twin: both models are causal, so the loss over the first L positions of
a T-step run is the loss of an L-step run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import lm
from ..context import Claim, Context, Result, Table
from ..registry import Study, register
from ..stats import compare, summarize
from ..trainer import param_count, train
from ..zoo import gru_pair


@torch.no_grad()
def position_losses(model: nn.Module, ids: torch.Tensor, chunk: int | None = None,
                    batch: int = 64) -> torch.Tensor:
    """Mean next-character loss at every position of windows ``ids`` (N, L+1), (L,).
    ``chunk``: reset the state every ``chunk`` positions (run each chunk on its own)."""
    model.eval()
    x, y = ids[:, :-1], ids[:, 1:]
    steps = x.shape[1]
    total = torch.zeros(steps)
    for i in range(0, x.shape[0], batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        if chunk is None:
            logits = model(xb)
        else:
            logits = torch.cat([model(xb[:, s:s + chunk]) for s in range(0, steps, chunk)], 1)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1),
                               reduction="none").view(yb.shape)
        total += loss.sum(0)
    return total / x.shape[0]


def run(ctx: Context) -> Result:
    corpus = lm.corpus(ctx.shakespeare_path())
    vocab = corpus.vocab_size
    length = ctx.pick(8, 32)
    dim, hidden = ctx.pick((8, 16), (32, 128))
    # 500 steps: the per-step twin's step costs ~6x the GRU's; 15 minutes on one thread
    steps, batch, lr = ctx.pick(20, 500), ctx.pick(8, 32), 2e-3
    multiples = (2, 4, 8)
    longest = length * multiples[-1]
    count = ctx.pick(32, 256)
    train_data = corpus.train(length)
    # evaluation windows: the same `count` start positions in the validation plays for
    # every length (longest + 1 characters each: inputs and next characters)
    valid = corpus.corpus.validation
    n = valid.numel() - longest - 1
    starts = torch.linspace(0, n - 1, count).long()
    windows = valid[starts[:, None] + torch.arange(longest + 1)[None, :]]
    short = sorted({max(1, length // 4), max(1, length // 2), length})
    long_lengths = [length * m for m in multiples]
    ctx.progress.start(2 * steps * len(ctx.seeds))

    per_seed: list[dict] = []
    params: dict[str, int] = {}
    for seed in ctx.seeds:
        gru, twin = gru_pair(vocab, dim, hidden, length, seed)
        params = {"gru": param_count(gru), "twin": param_count(twin)}
        runs = {}
        for key, model in (("gru", gru), ("twin", twin)):
            runs[key] = train(ctx, key, model, train_data, steps=steps, seed=seed,
                              batch_size=batch, lr=lr).to_dict()
        gru_carried = position_losses(gru, windows)  # (longest,)
        gru_chunked = position_losses(gru, windows, chunk=length)
        twin_chunked = position_losses(twin, windows, chunk=length)
        per_seed.append({
            "seed": seed, "train": runs,
            "gru_positions": gru_carried.tolist(),
            "gru_chunked_positions": gru_chunked.tolist(),
            "twin_positions": twin_chunked[:length].tolist(),
            "twin_chunked_positions": twin_chunked.tolist()})

    def mean_to(key: str, upto: int) -> list[float]:
        return [sum(s[key][:upto]) / upto for s in per_seed]

    # loss of a run of L characters = mean over its first L positions
    lengths = {}
    for L in short + long_lengths:
        lengths[str(L)] = {
            "gru": summarize(mean_to("gru_positions", L)).to_dict(),
            "twin": summarize(mean_to("twin_positions", L)).to_dict() if length >= L else None,
            "twin_chunked": summarize(mean_to("twin_chunked_positions", L)).to_dict(),
            "gru_chunked": summarize(mean_to("gru_chunked_positions", L)).to_dict()}
    trained = Claim("trained-length", f"At lengths up to the trained one ({length} characters), "
                    "sharing across time does as well as separate weights per step or better "
                    "(lower validation loss).",
                    [compare("validation loss", mean_to("gru_positions", L),
                             mean_to("twin_positions", L), better="lower", a="GRU (shared)",
                             b="per-step twin", condition=f"length {L}") for L in short])
    other = Claim("other-lengths", "Sharing across time generalises to lengths never trained "
                  "on: the GRU carried over a long text beats the twin, which must restart "
                  f"every {length} steps.",
                  [compare("validation loss", mean_to("gru_positions", L),
                           mean_to("twin_chunked_positions", L), better="lower",
                           a="GRU (shared)", b=f"twin restarted every {length}",
                           condition=f"length {L}") for L in long_lengths])
    context = Claim("uses-context", "The GRU uses the context beyond its trained length: "
                    f"carrying its state is better than restarting it every {length} steps.",
                    [compare("validation loss", mean_to("gru_positions", L),
                             mean_to("gru_chunked_positions", L), better="lower",
                             a="GRU carried", b=f"GRU restarted every {length}",
                             condition=f"length {L}") for L in long_lengths])
    rows = []
    for L, v in lengths.items():
        rows.append([L, summarize(mean_to("gru_positions", int(L))).fmt(4),
                     summarize(mean_to("twin_positions", int(L))).fmt(4)
                     if v["twin"] else "cannot run",
                     summarize(mean_to("gru_chunked_positions", int(L))).fmt(4),
                     summarize(mean_to("twin_chunked_positions", int(L))).fmt(4)])
    table = Table(f"Validation loss (nats/char) by evaluated length (trained on {length})",
                  ["length", "GRU", "per-step twin", f"GRU restarted every {length}",
                   f"twin restarted every {length}"], rows)
    ptable = Table("Models", ["model", "parameters", "train s/run"],
                   [["GRU", f"{params['gru']:,}", summarize(
                       [s["train"]["gru"]["train_seconds"] for s in per_seed]).fmt(1)],
                    [f"per-step twin ({length} steps)", f"{params['twin']:,}", summarize(
                        [s["train"]["twin"]["train_seconds"] for s in per_seed]).fmt(1)]])
    plot = "recurrence.png"
    with ctx.figure(plot, width=7.5) as ax:
        for key, name, color in (("gru_positions", "GRU (state carried)", "C0"),
                                 ("gru_chunked_positions", f"GRU restarted every {length}",
                                  "C2"),
                                 ("twin_chunked_positions",
                                  f"per-step twin (restarted every {length})", "C1")):
            vals = torch.tensor([s[key] for s in per_seed])  # (seeds, positions)
            mean = vals.mean(0)
            ax.plot(range(1, longest + 1), _smooth(mean.tolist(), max(1, length // 8)),
                    color=color, label=name)
        ax.axvline(length, color="grey", ls="--", lw=1, label=f"trained length {length}")
        ax.set_xscale("log")
        ax.set_xlabel("position in the text (characters)")
        ax.set_ylabel("validation loss at that position (nats)")
        ax.legend(fontsize=8)
    notes = ["The per-step twin has weights for exactly "
             f"{length} steps and raises an error on any other length; it is never given "
             "invented weights for later steps. Past its length it is reported as 'cannot "
             f"run', and compared in the only way it can read a long text: chunks of {length} "
             "with its state reset.",
             f"Shorter lengths: the twin runs {length} steps and only the first L positions "
             "are scored, which equals an L-step run (both models are causal).",
             f"Evaluation: {count} windows at fixed positions of the validation plays "
             f"({', '.join(corpus.valid_files)}), the same for every length and model.",
             f"Training: {steps} Adam steps of {batch} windows of {length} characters, lr {lr} "
             "with cosine decay; the twin's steps are drawn independently at initialisation."]
    return Result(figures={"params": params, "lengths": lengths, "per_seed": per_seed},
                  claims=[trained, other, context], tables=[table, ptable], plots=[plot],
                  notes=notes,
                  setup={"length": length, "dim": dim, "hidden": hidden, "steps": steps,
                         "batch": batch, "lr": lr, "eval_windows": count,
                         "longest": longest})


def _smooth(values: list[float], k: int) -> list[float]:
    if k <= 1:
        return values
    out = []
    for i in range(len(values)):
        lo = max(0, i - k // 2)
        window = values[lo:lo + k]
        out.append(sum(window) / len(window))
    return out


STUDY = register(Study(
    "recurrence", "Recurrence: sharing across time, and lengths never trained on",
    "recurrent networks share across time and so generalise to other lengths",
    ("shakespeare",), run))
