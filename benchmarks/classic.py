"""The classic weight-sharing results on MNIST, reproduced: Deep Compression, soft weight
sharing and HashedNets on LeNet-300-100 and LeNet-5, and what spatial and temporal
sharing are worth (LeNet-5 vs its locally connected twin, a GRU language model vs its
unshared twin, at equal training time).

    python benchmarks/classic.py --data ../shared/data/mnist.npz \
        [--text ../shared/data/shakespeare] [--only REGEX] [--threads 2] \
        [--out benchmarks/results/classic.json] [--plot docs/classic.png]

Every MNIST row is one ``weightshare.train.recipes.run`` (what ``weightshare train``
runs), seeded, on this CPU: test error on the MNIST test set, the saved file's bytes on
disk and the ratio to the fp32 dense file (both measured from files). Compressed rows
start from the dense row's file; their time excludes the dense training, which the
dense row reports. Codes and gaps are entropy-coded (``save(entropy=True)``, Deep
Compression's Huffman stage); the fixed-width size of the same model is recorded too.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import torch

import weightshare as ws
from weightshare.data.mnist import load_mnist, random_shift
from weightshare.train.recipes import TrainConfig, run

# the papers' numbers (../shared/ANCHORS.md): (error of their dense net, their error, ratio)
PAPERS = {
    ("lenet300", "prune-cluster"): ("Deep Compression (Han et al. 2016)", 1.64, 1.58, 40),
    ("lenet5", "prune-cluster"): ("Deep Compression (Han et al. 2016)", 0.80, 0.74, 39),
    ("lenet300", "soft"): ("Soft weight sharing (Ullrich et al. 2017)", 1.89, 1.94, 64),
    ("lenet5", "soft"): ("Soft weight sharing (Ullrich et al. 2017)", 0.88, 0.97, 162),
}
TARGETS = {  # the bar: (ratio at least, error at most, %)
    ("lenet300", "prune-cluster"): (40, 1.7), ("lenet5", "prune-cluster"): (39, 0.85),
    ("lenet300", "soft"): (64, 2.0), ("lenet5", "soft"): (100, 1.0),
}
ROW_LIMIT = 15 * 60  # seconds a row may take on this machine
ARGS: argparse.Namespace


def mnist_rows() -> list[tuple[str, TrainConfig]]:
    rows = []
    for model in ("lenet300", "lenet5"):
        # every file entropy-coded (codes and gaps; nothing to code in dense and hashed
        # files); the fixed-width size is recorded beside it
        rows.append((f"{model}/dense", TrainConfig(model=model, entropy=True)))
        rows.append((f"{model}/prune-cluster", TrainConfig(model=model, sharing="prune-cluster",
                                                           entropy=True)))
        rows.append((f"{model}/soft", TrainConfig(model=model, sharing="soft", entropy=True)))
        for ratio, label in ((1 / 8, "1/8"), (1 / 64, "1/64")):
            for sharing in ("hash", "small"):
                rows.append((f"{model}/{sharing} {label}", TrainConfig(
                    model=model, sharing=sharing, ratio=ratio, entropy=True)))
    return rows


def recode(record: dict) -> None:
    """Rows saved at fixed width (before entropy coding existed here): the same trained
    model, loaded from its file and written again by today's writer, entropy-coded and at
    fixed width, and the dense reference too; every byte from the files."""
    import tempfile

    from weightshare.train.recipes import dense_file_bytes, load_row

    test = load_mnist(ARGS.data).test
    for r in record.get("rows", []):
        if ("fixed_width_bytes" in r and not r.get("recoded")) or not Path(r["output"]).is_file():
            continue
        model = load_row(r["output"])
        error = ws.evaluate(model, test)["error"]
        if abs(error - r["test_error"]) > 1e-9:
            raise SystemExit(f"{r['row']}: reloaded error {error} != {r['test_error']}")
        extra = {"lenet": r["widths"]}
        with tempfile.TemporaryDirectory() as tmp:
            fixed = ws.save(model, Path(tmp) / "fixed.safetensors", extra=extra)
            r["fixed_width_bytes"] = fixed.stat().st_size
        ws.save(model, r["output"], extra=extra, entropy=True)
        r["file_bytes"] = Path(r["output"]).stat().st_size
        r["dense_file_bytes"] = dense_file_bytes(model)
        r["ratio"] = r["dense_file_bytes"] / r["file_bytes"]
        r["recoded"] = True
        print(f"{r['row']}: {r['fixed_width_bytes']:,} bytes at fixed width, "
              f"{r['file_bytes']:,} entropy-coded, {r['ratio']:.1f}x", file=sys.stderr)


def run_mnist(args: argparse.Namespace, only: re.Pattern[str], out_dir: Path) -> list[dict]:
    data = load_mnist(args.data)
    results = []
    for name, config in mnist_rows():
        if not only.search(name):
            continue
        dense_file = out_dir / f"{config.model}-none.safetensors"
        init = dense_file if config.sharing in ("prune-cluster", "soft") else None
        if init is not None and not dense_file.is_file():
            print(f"{name}: skipped, run the {config.model}/dense row first", file=sys.stderr)
            continue
        suffix = f"-{round(1 / config.ratio)}" if config.sharing in ("hash", "small") else ""
        output = out_dir / f"{config.model}-{config.sharing}{suffix}.safetensors"
        print(f"running {name} ...", file=sys.stderr, flush=True)
        result = run(config, data, output, init=init, progress=False)
        result["row"] = name
        results.append(result)
        print(f"  test error {100 * result['test_error']:.2f}%, {result['file_bytes']:,} bytes, "
              f"{result['ratio']:.1f}x, {result['seconds']['train']:.0f} s", file=sys.stderr,
              flush=True)
    return results


def equal_time(model: torch.nn.Module, data: tuple, evaluation: tuple, seconds: float,
               lr: float, batch_size: int, augment=None) -> dict:  # noqa: ANN001
    """Train ``model`` for ``seconds`` of wall time (Adam, cosine decay over the budget),
    then evaluate it: parameters, steps, ms per step, loss and error."""
    run_ = ws.fit(model, data, epochs=1000, time_budget=seconds, lr=lr, batch_size=batch_size,
                  augment=augment, seed=0, progress=False)
    scores = ws.evaluate(model, evaluation)
    return {"params": sum(p.numel() for p in model.parameters()), "steps": run_.steps,
            "seconds": run_.seconds, "ms_per_step": 1000 * run_.seconds_per_step,
            "loss": scores["loss"], "error": scores["error"]}


def run_spatial(args: argparse.Namespace) -> dict:
    """LeNet-5 against its locally connected twin, the same seconds of training each, on
    the full MNIST training set; test error on the MNIST test set. The models are issue
    12's studies' (``weightshare.study.zoo``): the twin's filters drawn independently at
    every position, as one trains a locally connected net from scratch."""
    from weightshare.study.zoo import conv_net, local_net

    data = load_mnist(args.data)
    out = {}
    for name, build in (("conv (shared)", conv_net), ("locally connected", local_net)):
        print(f"running spatial/{name} ...", file=sys.stderr, flush=True)
        out[name] = equal_time(build(0), data.train, data.test, args.twin_seconds, 1e-3, 100,
                               random_shift)
        print(f"  {out[name]}", file=sys.stderr, flush=True)
    return out


def run_temporal(args: argparse.Namespace) -> dict:
    """A character GRU language model against its unshared twin (its own weights at each
    of the 32 steps), the same seconds of training each, on windows of Shakespeare's
    training plays; validation loss and perplexity on 1,000 windows of the held-out plays.
    Models and data splits are issue 12's recurrence study's (``study.zoo.gru_pair``,
    ``study.lm.corpus``)."""
    from weightshare.study import lm
    from weightshare.study.zoo import gru_pair

    length = 32
    text = lm.corpus(Path(args.text))
    gru, twin = gru_pair(text.vocab_size, 32, 128, length, seed=0)
    train, val = text.train(length), text.held_out(length, 1000)
    out = {}
    for name, model in (("GRU (shared)", gru), ("unshared GRU", twin)):
        print(f"running temporal/{name} ...", file=sys.stderr, flush=True)
        r = equal_time(model, train, val, args.twin_seconds, 2e-3, 32)
        r["perplexity"] = math.exp(r["loss"])
        r["bits_per_char"] = r["loss"] / math.log(2)
        out[name] = r
        print(f"  {r}", file=sys.stderr, flush=True)
    return out


def run_hash_cost(args: argparse.Namespace) -> dict:
    """What the hash costs: milliseconds per training step (batch 100, forward + backward +
    Adam) of the dense LeNets and of their 1/8 hashed versions with the hash cached as an
    index or recomputed every forward, and the index's memory. Median of 30 steps after 5
    warm-up steps."""
    from weightshare.models.lenet import build

    out = {}
    x = torch.rand(100, 1, 28, 28)
    y = torch.randint(0, 10, (100,))
    for name in ("lenet300", "lenet5"):
        for variant in ("dense", "hash cached", "hash on the fly"):
            torch.manual_seed(0)
            model = build(name)
            if variant != "dense":
                ws.hash_(model, ratio=1 / 8, init="sample", cache=variant == "hash cached",
                         progress=False)
            index_bytes = sum(b.numel() * b.element_size() for n, b in model.named_buffers()
                              if n.endswith("index"))
            opt = torch.optim.Adam(model.parameters(), 1e-3)
            times = []
            for i in range(35):
                start = time.perf_counter()
                loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if i >= 5:
                    times.append(time.perf_counter() - start)
            ms = 1000 * sorted(times)[len(times) // 2]
            out[f"{name} {variant}"] = {"ms_per_step": ms, "index_bytes": index_bytes}
            print(f"hash cost {name} {variant}: {ms:.1f} ms/step, index {index_bytes:,} B",
                  file=sys.stderr, flush=True)
    return out


def table(results: list[dict]) -> str:
    lines = ["| row | test error | file bytes | ratio | fixed-width bytes (ratio) | stored floats "
             "| train s | paper: error, ratio | target |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        key = (r["model"], r["sharing"])
        paper = PAPERS.get(key)
        target = TARGETS.get(key)
        ok = "" if target is None else (
            "met" if r["ratio"] >= target[0] and 100 * r["test_error"] <= target[1] else "missed")
        lines.append(
            f"| {r['row']} | {100 * r['test_error']:.2f}% | {r['file_bytes']:,} | "
            f"{r['ratio']:.1f}x | " + (
                f"{r['fixed_width_bytes']:,} "
                f"({r['dense_file_bytes'] / r['fixed_width_bytes']:.1f}x)"
                if "fixed_width_bytes" in r else "") +
            f" | {r['stored_params']:,} | {r['seconds']['train']:.0f} | "
            + (f"{paper[2]:.2f}% at {paper[3]}x (dense {paper[1]:.2f}%)" if paper else "")
            + f" | {'' if target is None else f'>= {target[0]}x, <= {target[1]}%: {ok}'} |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, model, title in ((axes[0], "lenet300", "LeNet-300-100"),
                             (axes[1], "lenet5", "LeNet-5 (Caffe)")):
        marks = {"none": "ks", "prune-cluster": "bo", "soft": "go", "hash": "r^", "small": "mv"}
        for r in results:
            if r["model"] != model:
                continue
            ax.plot(r["ratio"], 100 * r["test_error"], marks[r["sharing"]], ms=8)
            label = r["row"].split("/", 1)[1].split(" (")[0] + (" (1st run)" if "(" in r["row"]
                                                                 else "")
            ax.annotate(label, (r["ratio"], 100 * r["test_error"]),
                        textcoords="offset points", xytext=(5, 4), fontsize=8)
        for (m, sharing), (_label, _dense, err, ratio) in PAPERS.items():
            if m == model:
                ax.plot(ratio, err, marks[sharing][0] + "x", ms=9)
                ax.annotate(f"paper {sharing}", (ratio, err), textcoords="offset points",
                            xytext=(5, -10), fontsize=8, color="gray")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.set_xlabel("compression ratio (fp32 dense file / weightshare file)")
        ax.set_ylabel("MNIST test error (%)")
        ax.set_title(f"{title}: weightshare (dots) vs papers (x)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="mnist.npz or a directory of IDX files")
    ap.add_argument("--text", default=None, help="Shakespeare directory for the GRU rows")
    ap.add_argument("--only", default=".", help="regex on row names (e.g. 'lenet300/')")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--twin-seconds", type=float, default=180.0)
    ap.add_argument("--work", default="out/classic",
                    help="directory for the saved files (the dense rows' files are reused)")
    ap.add_argument("--out", default="benchmarks/results/classic.json")
    ap.add_argument("--plot", default=None, help="PNG of error vs ratio (needs matplotlib)")
    ap.add_argument("--recode", action="store_true",
                    help="entropy-code the files of rows saved at fixed width (no training)")
    args = ap.parse_args()
    global ARGS
    ARGS = args
    torch.set_num_threads(args.threads)
    only = re.compile(args.only)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out_path = Path(args.out)
    started = time.time()
    results = run_mnist(args, only, work)
    # read the previous record only now: other runs of this script (other rows, in
    # parallel) may have written theirs meanwhile
    previous = json.loads(out_path.read_text()) if out_path.is_file() else {}
    record = dict(previous)
    rows = {r["row"]: r for r in previous.get("rows", [])}
    rows.update({r["row"]: r for r in results})
    record["rows"] = list(rows.values())
    if args.recode:
        recode(record)
    if only.search("hash-cost"):
        record["hash_cost"] = run_hash_cost(args)
    if only.search("spatial"):
        record["spatial"] = run_spatial(args)
    if args.text and only.search("temporal"):
        record["temporal"] = run_temporal(args)
    record["machine"] = {"threads": args.threads, "torch": torch.__version__,
                         "seconds": time.time() - started}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(record, indent=1))
    print(table(record["rows"]))
    for key in ("hash_cost", "spatial", "temporal"):
        for name, r in record.get(key, {}).items():
            print(f"{key}/{name}: {r}")
    if args.plot:
        plot(record["rows"], Path(args.plot))


if __name__ == "__main__":
    main()
