"""Structural sharing on all-MiniLM-L6-v2: held-out fidelity vs unique parameters.

Tying layers of a small pretrained model after the fact is expensive; this measures by
how much. Each run ties a fresh copy of the model, optionally distils it for a CPU time
budget toward the original (``distill_`` on the 2,021 built-in calibration sentences and
variants of them, cosine learning-rate decay), and measures the cosine of mean-pooled
sentence embeddings vs the original on the 642 held-out evaluation sentences.

Runs: strategy x init x scope x relaxation rank (the grid), the tie plans that the
redundancy analysis suggests (10% and 23% parameter cuts, 3 unique blocks), each for
every distillation budget; and one training step of a tied vs an untied twin, step time
and peak memory, measured in the same run (fresh subprocess each).

    python benchmarks/tying.py --grid quick --distill-seconds 30 --eval-sentences 200
    python benchmarks/tying.py --grid targets --distill-seconds 120 600      # ~30 minutes
    python benchmarks/tying.py --grid pareto --distill-seconds 120          # ~20 minutes
    python benchmarks/tying.py --grid default --distill-seconds 120 600     # a few hours
    python benchmarks/tying.py --grid full --distill-seconds 120 600        # longer

Writes benchmarks/results/tying.json and docs/tying_pareto.png.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import platform
import re
import resource
import sys
import time
from pathlib import Path

import torch

from weightshare.analysis.fidelity import embed, embedding_fidelity
from weightshare.data.sentences import calibration_sentences, eval_sentences
from weightshare.methods.tie import TieConfig, tie_
from weightshare.models import load_model
from weightshare.pipeline import suggest
from weightshare.train.distill import distill_

SCOPES = {"block": None, "attention": "attention", "ffn": r"^(intermediate|output)\."}
MIDDLE = {"scope": "attention", "layers": "1..4", "strategy": "all"}  # chosen layers


def grid(kind: str) -> list[dict]:
    """Run specs: name, TieConfig kwargs, whether distillation budgets apply."""
    runs: list[dict] = []

    def add(strategy: str, init: str, scope: str, rank: int, distill: bool,
            unique: int | None = 3, **extra) -> None:
        kw = {"strategy": strategy, "unique": unique, "init": init, "scope": SCOPES.get(scope),
              "rank": rank, **extra}
        name = f"{strategy}{unique or ''}-{scope}-{init}-r{rank}"
        runs.append({"name": name, "scope_kind": scope, "config": kw, "distill": distill})

    if kind in ("quick", "targets", "pareto"):  # targets: only the tie plans are distilled
        distill = kind != "targets"
        add("sequence", "first", "block", 0, distill)
        add("cycle", "first", "block", 0, distill)
        add("sequence", "first", "attention", 0, distill)
        add("sequence", "first", "ffn", 0, distill)
        add("sequence", "mean", "block", 8, distill)
        if kind == "pareto":
            add("sequence", "mean", "block", 32, True)
            add("sequence", "stepwise", "attention", 0, True)
    else:
        full = kind == "full"
        for strategy in ("sequence", "cycle", "cycle_rev", "repeat"):
            for init in ("first", "mean", "stepwise"):
                for scope in SCOPES:
                    for rank in (0, 8, 32):
                        if full or rank == 0 or (strategy == "sequence" and scope != "ffn"):
                            distill = full or (init == "first" and strategy == "sequence"
                                               and scope != "ffn")
                            add(strategy, init, scope, rank, distill)
        for scope in ("block", "attention"):
            add("all", "mean", scope, 0, full, unique=None)
    runs.append({"name": "all-attention-layers1..4-first-r0", "scope_kind": "layers",
                 "config": {**MIDDLE, "unique": None, "init": "first", "rank": 0},
                 "distill": kind != "targets"})
    return runs


def unique_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fidelity(model, tokenizer, sentences, reference) -> dict:
    return embedding_fidelity(reference, embed(model, tokenizer, sentences))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:  # Linux: resident pages are the second field
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    """Peak resident memory while a block runs, sampled every few milliseconds (large torch
    CPU tensors are mmapped and unmapped, so RSS follows live tensors closely)."""

    def __enter__(self) -> RssSampler:
        import threading
        self.peak, self._stop = _rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.003):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def train_step_probe(tied: bool, steps: int, queue) -> None:  # runs in a fresh subprocess
    torch.set_num_threads(int(os.environ.get("WS_THREADS", "2")))
    lm = load_model("minilm")
    model, tok = lm.model, lm.tokenizer
    if tied:
        tie_(model, TieConfig(strategy="sequence", unique=3))
    model.train()
    batch = dict(tok(calibration_sentences()[:16], padding=True, truncation=True,
                     max_length=128, return_tensors="pt"))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    import gc
    gc.collect()
    rss_before = _rss_bytes()
    times = []
    with RssSampler() as rss:
        for i in range(steps + 1):  # the first step warms up (allocates optimizer state)
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            model(**batch).last_hidden_state.pow(2).mean().backward()
            opt.step()
            if i:
                times.append(time.perf_counter() - t)
    state = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                if torch.is_tensor(t))
    queue.put({"tied": tied, "unique_params": unique_params(model),
               "step_seconds_median": sorted(times)[len(times) // 2], "step_seconds": times,
               "param_bytes": sum(p.numel() * p.element_size() for p in params),
               "grad_bytes": sum(p.numel() * p.element_size() for p in params),
               "optimizer_state_bytes": state,
               "rss_before_training_mib": rss_before / 2**20,
               "peak_rss_training_mib": rss.peak / 2**20,
               "peak_training_increase_mib": (rss.peak - rss_before) / 2**20,
               "process_max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def measure_train_step(steps: int) -> dict:
    ctx = multiprocessing.get_context("spawn")
    out = {}
    for tied in (False, True):
        queue = ctx.Queue()
        proc = ctx.Process(target=train_step_probe, args=(tied, steps, queue))
        proc.start()
        out["tied" if tied else "untied"] = queue.get()
        proc.join()
    u, t = out["untied"], out["tied"]
    out["step_time_ratio_tied_over_untied"] = t["step_seconds_median"] / u["step_seconds_median"]
    out["optimizer_state_ratio"] = t["optimizer_state_bytes"] / u["optimizer_state_bytes"]
    out["peak_training_rss_ratio"] = t["peak_rss_training_mib"] / u["peak_rss_training_mib"]
    return out


def pareto_plot(runs: list[dict], reference_params: int, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"block": "o", "attention": "s", "ffn": "^", "layers": "D", "plan": "*"}
    budgets = sorted({r["distill_seconds"] for r in runs})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for k, budget in enumerate(budgets):
        pts = [r for r in runs if r["distill_seconds"] == budget]
        for r in pts:
            ax.scatter(r["unique_params"] / 1e6, r["cosine_mean"], s=60 if r["rank"] else 36,
                       marker=markers.get(r["scope_kind"], "o"), color=colors[k % len(colors)],
                       edgecolors="black" if r["rank"] else "none", alpha=0.85)
        front, best = [], -1.0  # Pareto: fewer params and higher cosine
        for r in sorted(pts, key=lambda r: (r["unique_params"], -r["cosine_mean"])):
            if r["cosine_mean"] > best:
                front.append(r)
                best = r["cosine_mean"]
        ax.plot([r["unique_params"] / 1e6 for r in front], [r["cosine_mean"] for r in front],
                color=colors[k % len(colors)], label=f"distilled {budget:g} s")
    ax.axvline(reference_params / 1e6, color="grey", ls=":", label="original")
    for kind, m in markers.items():
        ax.scatter([], [], marker=m, color="grey", label=kind)
    ax.set_xlabel("unique parameters (M)")
    ax.set_ylabel("held-out cosine vs original")
    ax.set_title("all-MiniLM-L6-v2: tying after the fact (edged markers: relaxed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", choices=["quick", "targets", "pareto", "default", "full"],
                    default="default",
                    help="targets: the issue's checks (suggested plans for a 10%% and a 23%% "
                         "cut, distilled) plus the quick grid undistilled; pareto: the quick "
                         "grid and a few more, each distilled, without the plans")
    ap.add_argument("--distill-seconds", type=float, nargs="*", default=[120.0],
                    help="distillation budgets in CPU seconds (0 is always included)")
    ap.add_argument("--eval-sentences", type=int, default=0, help="0 = all held-out sentences")
    ap.add_argument("--distill-batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--no-augment", action="store_true", help="distill on the sentences only")
    ap.add_argument("--no-plans", action="store_true")
    ap.add_argument("--only", default=None, metavar="REGEX",
                    help="run only the grid entries whose name this regular expression finds")
    ap.add_argument("--train-steps", type=int, default=3, help="0 skips the step probe")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/tying.json")
    ap.add_argument("--plot", default="docs/tying_pareto.png")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["WS_THREADS"] = str(args.threads)
    budgets = sorted({0.0, *args.distill_seconds})

    lm = load_model("minilm")
    ref_model, tok = lm.model, lm.tokenizer
    held_out = eval_sentences()
    held_out = held_out[:args.eval_sentences] if args.eval_sentences else held_out
    calibration = calibration_sentences()
    reference = embed(ref_model, tok, held_out)
    n0 = unique_params(ref_model)
    print(f"all-MiniLM-L6-v2: {n0:,} parameters, {len(held_out)} held-out sentences, "
          f"budgets {budgets} s", flush=True)

    specs = grid(args.grid)
    if args.only:
        specs = [s for s in specs if re.search(args.only, s["name"])]
    plans = []
    if not args.no_plans and args.grid != "pareto":
        wanted = (("plan-cut-10%", {"cut": 0.10}), ("plan-cut-23%", {"cut": 0.23}),
                  ("plan-unique-3", {"unique": 3}))
        for label, kw in wanted[:2] if args.grid == "targets" else wanted:
            t = time.perf_counter()
            plan = suggest(lm, **kw)  # what `weightshare tie --cut F` ties
            seconds = time.perf_counter() - t
            print(f"{label}: {plan.describe()} [{seconds:.0f} s]", flush=True)
            plans.append({"name": label, "seconds": seconds, **plan.to_dict()})
            specs.append({"name": label, "scope_kind": "plan", "plan": plan.config,
                          "distill": True, "config": {"rank": 0}})

    runs = []
    for spec in specs:
        config = spec.get("plan") or TieConfig(**spec["config"])
        for budget in budgets if spec["distill"] else [0.0]:
            t = time.perf_counter()
            student = tie_(copy.deepcopy(ref_model), config)  # fresh for every budget
            tie_seconds = time.perf_counter() - t
            log: list[dict] = []
            if budget:
                distill_(student, ref_model, calibration, steps=None, time_budget=budget,
                         tokenizer=tok, batch_size=args.distill_batch, lr=args.lr,
                         augment=not args.no_augment, history=log)
            fid = fidelity(student, tok, held_out, reference)
            row = {"name": spec["name"], "scope_kind": spec["scope_kind"],
                   "config": spec["config"] if "plan" not in spec else "plan",
                   "rank": spec["config"].get("rank", 0), "distill_seconds": budget,
                   "distill_steps": len(log), "final_loss": log[-1]["loss"] if log else None,
                   "unique_params": unique_params(student),
                   "fraction_of_params": unique_params(student) / n0,
                   "tie_seconds": tie_seconds, **fid}
            runs.append(row)
            print(f"{spec['name']:<40} {row['fraction_of_params']:6.1%} params  distill "
                  f"{budget:>5.0f}s ({len(log):>3} steps)  cos {fid['cosine_mean']:.3f}  "
                  f"min {fid['cosine_min']:.3f}", flush=True)

    train_step = measure_train_step(args.train_steps) if args.train_steps else None
    if train_step:
        u, t = train_step["untied"], train_step["tied"]
        ratio = train_step["step_time_ratio_tied_over_untied"]
        print(f"train step (16 sentences, AdamW): untied {u['step_seconds_median']:.2f} s, "
              f"tied {t['step_seconds_median']:.2f} s (x{ratio:.2f}); "
              f"optimizer state {u['optimizer_state_bytes'] / 2**20:.0f} -> "
              f"{t['optimizer_state_bytes'] / 2**20:.0f} MiB; peak RSS while training "
              f"{u['peak_rss_training_mib']:.0f} -> {t['peak_rss_training_mib']:.0f} MiB "
              f"(+{u['peak_training_increase_mib']:.0f} / +{t['peak_training_increase_mib']:.0f} "
              "over the loaded model)", flush=True)

    result = {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "threads": args.threads},
        "model": "all-MiniLM-L6-v2", "reference_params": n0,
        "held_out_sentences": len(held_out), "distill_budgets_seconds": budgets,
        "runs": runs, "plans": plans, "train_step": train_step,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)
    try:
        pareto_plot(runs, n0, Path(args.plot))
        print(f"wrote {out} and {args.plot}")
    except ImportError:
        print(f"wrote {out} (no matplotlib: no plot)")


if __name__ == "__main__":
    main()
