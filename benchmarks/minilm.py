"""Codebooks on all-MiniLM-L6-v2, side by side with coremltools, in one run.

Every weightshare method and the useful combinations, at 4, 3 and 2 bits per weight, next
to coremltools' PostTrainingPalettizer (per tensor, per grouped channel, per-channel
scale, vector palettization), SKMPalettizer (sensitive k-means, with and without
per-channel scale) and, for the fine-tuned rows, DKMPalettizer. For every row: seconds,
file bytes, bits per weight counting everything stored (codes, codebooks, scales,
outliers; over the weights each tool compresses), held-out cosine mean / min of
mean-pooled sentence embeddings vs the original and top-1 retrieval agreement.

Held out: fidelity is measured on the 642 built-in evaluation sentences; calibration
uses the first ``--calibration`` built-in calibration sentences and fine-tuning all 2,021
of them, both disjoint from the evaluation set.

    python benchmarks/minilm.py --bits 4 3 2 --out benchmarks/results/minilm.json \\
        --plot docs/minilm_fidelity.png
    python benchmarks/minilm.py --bits 4 3 2 --only "quality|DKM" --finetune-seconds 600 \\
        --out benchmarks/results/minilm_finetune.json

coremltools' torch palettizers return a dense PyTorch model (weights take the palette's
values; the palette, indices and scales sit in ``_COREML_`` buffers) and write no compact
file of their own, so their bytes are the ideal packed size read from those buffers:
indices at log2(palette size) bits, palettes and scales in fp32, other tensors as stored.
weightshare's bytes are those of the real .safetensors file it writes.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import multiprocessing
import os
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import weightshare as ws
from weightshare.analysis.fidelity import embed, embedding_fidelity
from weightshare.core.batches import as_batches
from weightshare.data.sentences import calibration_sentences, eval_sentences
from weightshare.methods.codebook.recipes import CALIBRATION_SAMPLES
from weightshare.models import load_model
from weightshare.train.distill import cosine_loss

GROUP = 16
FFN = (r"intermediate\.dense$", r"output\.dense$")  # shared-codebook sets (cross-layer)
EMB = ("word_embeddings",)


def ws_rows(bits: int) -> list[tuple[str, Any]]:
    """(name, configs applied in order, or a recipe name) of every weightshare row."""
    C = ws.ClusterConfig  # noqa: N806
    rows: list[tuple[str, Any]] = [
        ("weightshare exact (no calibration)", [C(bits=bits)]),
        ("weightshare recipe fast", "fast"),
        ("weightshare +scales", [C(bits=bits, scales="per_channel")]),
        ("weightshare +fisher", [C(bits=bits, weighting="fisher")]),
        ("weightshare +error_feedback", [C(bits=bits, error_feedback=True)]),
        ("weightshare +EF +outliers 0.1%", [C(bits=bits, error_feedback=True, outliers=0.001)]),
        ("weightshare +EF +fisher +outliers 0.1%", [
            C(bits=bits, error_feedback=True, weighting="fisher", outliers=0.001)]),
        ("weightshare +EF per_group 16", [
            C(bits=bits, include=EMB), C(bits=bits, error_feedback=True,
                                         granularity="per_group", exclude=EMB)]),
        ("weightshare +EF vector d=2", [C(bits=2 * bits, vector_dim=2, error_feedback=True)]),
        ("weightshare +EF +scales", [C(bits=bits, error_feedback=True, scales="per_channel")]),
        ("weightshare +EF +scales cross-layer FFN codebooks", [
            C(bits=bits, error_feedback=True, scales="per_channel", shared_codebooks=FFN)]),
        ("weightshare +EF +budget (allocation)", [
            C(bits=bits, error_feedback=True, budget=float(bits))]),
        ("weightshare recipe balanced", "balanced"),
        ("weightshare recipe quality", "quality"),
        # quality with codebooks per group of 16 rows where the budget finds them worth
        # their bits (every stored bit counted; the recipe itself from 3 bits up), and with
        # one codebook per tensor (the recipe at 2 bits, and before 3 bits it switched)
        ("weightshare quality per_group 16", ("quality", {"granularity": "per_group",
                                                          "group_size": GROUP})),
        ("weightshare quality per_tensor", ("quality", {"granularity": "per_tensor"})),
    ]
    if bits != 3:  # sequential costs a partial pass per stage: at the ends of the range only
        rows.insert(5, ("weightshare +EF +sequential", [
            C(bits=bits, error_feedback=True, sequential=True)]))
    if bits == 2:
        rows.insert(-3, ("weightshare +EF vector d=4", [
            C(bits=8, vector_dim=4, error_feedback=True)]))
    return rows


Spec = list[ws.ClusterConfig] | str | tuple[str, dict]  # configs, recipe, recipe + overrides


def calibration_count(spec: Spec, default: int) -> int:
    """Sentences a row calibrates on: a recipe's own count, else ``--calibration``."""
    if isinstance(spec, tuple):
        spec = spec[0]
    return CALIBRATION_SAMPLES[spec] if isinstance(spec, str) else default


def spec_configs(spec: Spec, bits: int) -> list[ws.ClusterConfig]:
    """The configs a row applies in order."""
    if isinstance(spec, str):
        return [ws.ClusterConfig.recipe(spec, bits=bits)]
    if isinstance(spec, tuple):
        return [ws.ClusterConfig.recipe(spec[0], bits=bits, **spec[1])]
    return spec


# ------------------------------------------------------------------- coremltools


def coreml_rows(bits: int) -> list[tuple[str, dict, str]]:
    """(name, module config, tool) of every coremltools row at ``bits`` per weight."""
    rows = [
        ("coremltools PostTraining per_tensor", {"n_bits": bits}, "ptp"),
        ("coremltools PostTraining per_grouped_channel 16",
         {"n_bits": bits, "granularity": "per_grouped_channel", "group_size": GROUP}, "ptp"),
        ("coremltools PostTraining per-channel scale",
         {"n_bits": bits, "enable_per_channel_scale": True}, "ptp"),
        ("coremltools PostTraining vector cluster_dim=2", {"n_bits": 2 * bits,
                                                           "cluster_dim": 2}, "ptp"),
        ("coremltools SKM per_tensor", {"n_bits": bits}, "skm"),
        ("coremltools SKM per-channel scale", {"n_bits": bits, "enable_per_channel_scale": True},
         "skm"),
    ]
    if bits == 2:
        rows.append(("coremltools PostTraining vector cluster_dim=4",
                     {"n_bits": 8, "cluster_dim": 4}, "ptp"))
    return rows


def coreml_compress(model: torch.nn.Module, module_cfg: dict, tool: str,
                    calib: list[dict]) -> torch.nn.Module:
    from coremltools.optimize.torch import palettization as pal

    if tool == "ptp":
        cfg = pal.PostTrainingPalettizerConfig.from_dict({"global_config": module_cfg})
        return pal.PostTrainingPalettizer(model, cfg).compress()
    # SKM: Fisher-weighted k-means; the loss is our Fisher default for embeddings (a
    # random projection of the output: its squared gradient estimates the Gauss-Newton
    # curvature of a distillation loss; the distillation loss itself has zero gradient at
    # the original weights). Every parameter with requires_grad must get a gradient, so
    # only the palettized weights are left trainable.
    for name, p in model.named_parameters():
        p.requires_grad_(p.dim() == 2 and "pooler" not in name)
    gen = torch.Generator().manual_seed(0)
    items = []
    for batch in calib:
        for i in range(batch["input_ids"].shape[0]):
            n = int(batch["attention_mask"][i].sum())
            one = {k: v[i:i + 1, :n] for k, v in batch.items()}
            items.append((one, torch.randn(1, n, model.config.hidden_size, generator=gen)))

    def loss_fn(m: torch.nn.Module, item: tuple) -> torch.Tensor:
        one, v = item
        return (m(**one).last_hidden_state * v).sum()

    cfg = pal.SKMPalettizerConfig.from_dict({"global_config": module_cfg,
                                             "module_name_configs": {"pooler.dense": None},
                                             "calibration_nsamples": len(items)})
    with tempfile.TemporaryDirectory() as tmp:
        out = pal.SKMPalettizer(model, cfg).compress(dataloader=items, loss_fn=loss_fn,
                                                     sensitivity_path=None)
        del tmp
    for p in out.parameters():
        p.requires_grad_(True)
    return out


def coreml_bits(model: torch.nn.Module) -> tuple[int, float]:
    """(ideal packed bytes of the whole model, bits per palettized weight)."""
    total, pal_bits, pal_values = 0, 0, 0
    for module in model.modules():
        bufs = dict(module.named_buffers(recurse=False))
        lut = bufs.get("_COREML_/weight/lut")
        for name, p in module.named_parameters(recurse=False):
            if name == "weight" and lut is not None:
                levels, dim = lut.shape[-2], lut.shape[-1]
                bits = (levels * 1).bit_length() - 1
                scale = bufs.get("_COREML_/weight/palettization_scale")
                nbits = math.ceil(p.numel() / dim) * bits + lut.numel() * 32 + (
                    0 if scale is None else scale.numel() * 32)
                total += (nbits + 7) // 8
                pal_bits += nbits
                pal_values += p.numel()
            else:
                total += p.numel() * p.element_size()
    for name, b in model.named_buffers():
        if "_COREML_" not in name:
            total += b.numel() * b.element_size()
    return total, pal_bits / max(pal_values, 1)


# ------------------------------------------------------------------- the run


def coreml_row(queue: Any, name: str, bits: int, module_cfg: dict, tool: str, count: int,
               reference: torch.Tensor, dense_bytes: int) -> None:
    """A coremltools row in a child process: compress a fresh model, measure, put the row
    in ``queue``. The seconds are the compress call (with calibration for SKM)."""
    warnings.filterwarnings("ignore")
    logging.disable(logging.INFO)
    base = load_model("minilm")
    calib = as_batches(calibration_sentences()[:count], base.tokenizer, batch_size=32) \
        if count else []
    t0 = time.perf_counter()
    try:
        out = coreml_compress(base.model, module_cfg, tool, calib)
    except Exception as exc:  # a peer failing is a result too
        print(f"{name:<46} {bits}b failed: {type(exc).__name__}: {str(exc)[:120]}", flush=True)
        queue.put({"tool": name, "bits": bits, "failed": f"{type(exc).__name__}: {exc}"[:300]})
        return
    seconds = time.perf_counter() - t0
    nbytes, bpw = coreml_bits(out)
    fid = embedding_fidelity(reference, embed(out, base.tokenizer, eval_sentences()))
    row = {"tool": name, "bits": bits, "seconds": seconds, "bytes": nbytes,
           "ratio": dense_bytes / nbytes, "bits_per_weight": bpw, **fid,
           "note": "ideal packed bytes", "calibration": count}
    print_row(row)
    queue.put(row)


def print_row(row: dict) -> None:
    print(f"{row['tool']:<46} {row['bits']}b {row['seconds']:7.1f} s "
          f"{row['bytes'] / 2**20:6.2f} MiB {row['bits_per_weight']:6.3f} b/w  "
          f"cos {row['cosine_mean']:.4f} (min {row['cosine_min']:.3f})  "
          f"top1 {row['top1_agreement']:.3f}", flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base = load_model("minilm")
        self.tok = self.base.tokenizer
        self.sentences = eval_sentences()
        self.reference = embed(self.base.model, self.tok, self.sentences)
        self.dense_bytes = ws.inspect(self.base.model).dense_bytes
        self.calibs: dict[int, list[dict]] = {}
        self.rows: list[dict] = []
        self.tmp = tempfile.mkdtemp()

    def record(self, tool: str, bits: int, seconds: float, nbytes: int, bpw: float,
               model: torch.nn.Module, note: str = "", **extra: Any) -> None:
        fid = embedding_fidelity(self.reference, embed(model, self.tok, self.sentences))
        row = {"tool": tool, "bits": bits, "seconds": seconds, "bytes": nbytes,
               "ratio": self.dense_bytes / nbytes, "bits_per_weight": bpw, **fid,
               "note": note, **extra}
        self.rows.append(row)
        print_row(row)
        self.save()

    def save(self) -> None:
        """Write the rows so far (a long run stopped early keeps what it measured)."""
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"command": " ".join([Path(sys.executable).name] + sys.argv),
                                   "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                                   "dense_bytes": self.dense_bytes, "rows": self.rows},
                                  indent=1))

    def calib(self, count: int) -> list[dict]:
        """The first ``count`` calibration sentences, tokenised in batches of 32."""
        if count not in self.calibs:
            self.calibs[count] = as_batches(calibration_sentences()[:count], self.tok,
                                            batch_size=32)
        return self.calibs[count]

    def wanted(self, name: str) -> bool:
        return self.args.only is None or re.search(self.args.only, name) is not None

    def ws_file(self, model: torch.nn.Module, name: str) -> tuple[int, float]:
        path = Path(self.tmp) / (re.sub(r"\W+", "_", name) + ".safetensors")
        ws.save(model, path)
        rep = ws.inspect(model)
        rows = [r for r in rep.rows if r.scheme in ("codebook", "vector_codebook")]
        values = sum(math.prod(r.shape) for r in rows)
        return path.stat().st_size, 8 * sum(r.stored_bytes for r in rows) / values

    def run_ws(self, name: str, bits: int, spec: Spec) -> Any:
        configs = spec_configs(spec, bits)
        model = copy.deepcopy(self.base.model)
        count = 0 if "no calibration" in name else calibration_count(spec,
                                                                      self.args.calibration)
        cal = self.calib(count) if count else None
        t0 = time.perf_counter()
        for cfg in configs:
            ws.cluster_(model, cfg, cal, progress=False)
        seconds = time.perf_counter() - t0
        nbytes, bpw = self.ws_file(model, f"{name}{bits}")
        self.record(name, bits, seconds, nbytes, bpw, model, "file bytes",
                    configs=[c.to_dict() for c in configs], calibration=count)
        return model

    def run_coreml(self, name: str, bits: int, module_cfg: dict, tool: str) -> None:
        """One coremltools row, in a fresh process (spawned: forking after torch has run
        threads deadlocks), stopped and recorded as such past ``--peer-timeout`` s."""
        count = self.args.calibration if tool == "skm" else 0
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        child = ctx.Process(target=coreml_row, args=(queue, name, bits, module_cfg, tool,
                                                     count, self.reference, self.dense_bytes))
        child.start()
        t0 = time.perf_counter()
        row = None
        while row is None and time.perf_counter() - t0 < self.args.peer_timeout:
            try:
                row = queue.get(timeout=5)
            except Exception:  # queue.Empty: still running
                if not child.is_alive():
                    break
        if row is None:
            child.kill()
            row = {"tool": name, "bits": bits, "seconds": time.perf_counter() - t0,
                   "failed": f"did not finish in {self.args.peer_timeout:.0f} s"
                   if child.exitcode is None or child.exitcode < 0 else
                   f"exit {child.exitcode}"}
            print(f"{name:<46} {bits}b {row['failed']}", flush=True)
        child.join()
        self.rows.append(row)
        self.save()

    def post_training(self, bits: int) -> None:
        if not self.args.skip_coreml:
            for name, cfg, tool in coreml_rows(bits):
                if self.wanted(name):
                    self.run_coreml(name, bits, cfg, tool)
        for name, spec in ws_rows(bits):
            if self.wanted(name):
                self.run_ws(name, bits, spec)

    def finetuned(self, bits: int, seconds: float) -> None:
        texts = calibration_sentences()
        name = "weightshare recipe quality +finetune"
        if self.wanted(name):
            model = copy.deepcopy(self.base.model)
            t0 = time.perf_counter()
            ws.cluster_(model, ws.ClusterConfig.recipe("quality", bits=bits),
                        self.calib(CALIBRATION_SAMPLES["quality"]), progress=False)
            t_cluster = time.perf_counter() - t0
            history: list[dict] = []
            options = {"lr": self.args.finetune_lr,
                       "train_embeddings": self.args.finetune_embeddings}
            ws.finetune_codebooks_(model, self.base.model, texts, seconds=seconds,
                                   tokenizer=self.tok, progress=False, history=history,
                                   **options)
            model.eval()
            nbytes, bpw = self.ws_file(model, f"ft{bits}")
            self.record(name, bits, time.perf_counter() - t0, nbytes, bpw, model,
                        "file bytes", cluster_seconds=t_cluster, finetune_seconds=seconds,
                        finetune_steps=sum(1 for h in history if "loss" in h),
                        finetune_options=options)

    def dkm(self, bits: int, seconds: float) -> None:
        """The two DKMs at ``bits``: ours over binned values, and coremltools'."""
        texts = calibration_sentences()
        name = "weightshare DKM (binned)"
        if self.wanted(name):
            model = copy.deepcopy(self.base.model)
            t0 = time.perf_counter()
            ws.cluster_(model, ws.ClusterConfig(bits=bits), progress=False)
            ws.finetune_codebooks_(model, self.base.model, texts, seconds=seconds,
                                   tokenizer=self.tok, method="dkm", lr=1e-5, progress=False)
            model.eval()
            nbytes, bpw = self.ws_file(model, f"dkm{bits}")
            self.record(name, bits, time.perf_counter() - t0, nbytes, bpw, model,
                        "file bytes", finetune_seconds=seconds)
        name = "coremltools DKMPalettizer"
        if self.wanted(name) and not self.args.skip_coreml:
            self.coreml_dkm(bits, seconds, texts)

    def coreml_dkm(self, bits: int, seconds: float, texts: list[str]) -> None:
        """coremltools' DKM: prepare, train with the same loss and data as ours for the
        same wall time, finalize."""
        from coremltools.optimize.torch import palettization as pal

        model = copy.deepcopy(self.base.model)
        cfg = pal.DKMPalettizerConfig.from_dict({"module_type_configs": {
            "Linear": {"n_bits": bits, "milestone": 0}}})
        t0 = time.perf_counter()
        palettizer = pal.DKMPalettizer(model, cfg)
        prepared = palettizer.prepare()
        opt = torch.optim.Adam([p for p in prepared.parameters() if p.requires_grad], lr=1e-5)
        batches = as_batches(texts, self.tok, batch_size=16)
        steps = 0
        while time.perf_counter() - t0 < seconds:
            batch = batches[steps % len(batches)]
            with torch.no_grad():
                target = self.base.model(**batch).last_hidden_state
            out = prepared(**batch).last_hidden_state
            loss = cosine_loss(out, target, batch["attention_mask"].bool())
            opt.zero_grad()
            loss.backward()
            opt.step()
            palettizer.step()
            steps += 1
        final = palettizer.finalize()
        nbytes, bpw = coreml_bits(final)
        self.record("coremltools DKMPalettizer", bits, time.perf_counter() - t0, nbytes, bpw,
                    final, f"ideal packed bytes; {steps} steps", steps=steps)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    styles: dict[str, tuple[str, str]] = {}
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf"]
    for r in rows:
        if "cosine_mean" not in r:
            continue
        family = ("coremltools " if r["tool"].startswith("coreml") else "weightshare ") + (
            "fine-tuned" if "finetune" in r["tool"] or "DKM" in r["tool"] else
            "recipe" if "recipe" in r["tool"] else "other")
        if family not in styles:
            styles[family] = (palette[len(styles) % len(palette)],
                              "o" if family.startswith("weightshare") else "s")
        color, marker = styles[family]
        ax.scatter(r["bits_per_weight"], r["cosine_mean"], c=color, marker=marker, s=28,
                   label=family if family not in ax.get_legend_handles_labels()[1] else None)
    for target in (0.985, 0.95, 0.85):  # the post-training targets at 4, 3, 2 bits
        ax.axhline(target, ls=":", c="grey", lw=0.8)
    ax.set_xlim(1.5, 4.5)
    ax.ticklabel_format(useOffset=False)
    ax.set_xlabel("bits per weight (everything stored)")
    ax.set_ylabel("cosine to the original (642 held-out sentences)")
    ax.set_ylim(max(0.3, min(r.get("cosine_mean", 1) for r in rows) - 0.02), 1.0)
    ax.set_title("all-MiniLM-L6-v2: fidelity vs bits per weight")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(rows: list[dict]) -> str:
    """The docs table: one line per row, ratios of seconds against SKM of the same bits."""
    skm = {r["bits"]: r["seconds"] for r in rows
           if r["tool"] == "coremltools SKM per_tensor" and "seconds" in r and "failed" not in r}
    lines = ["| bits | tool | seconds | vs SKM time | file MiB | bits/weight | cosine mean | "
             "cosine min | top-1 |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['bits']} | {r['tool']} | {r.get('seconds', 0):.0f} | | | | "
                         f"{r['failed']} | | |")
            continue
        ratio = f"{r['seconds'] / skm[r['bits']]:.2f}x" if r["bits"] in skm else ""
        lines.append(f"| {r['bits']} | {r['tool']} | {r['seconds']:.1f} | {ratio} | "
                     f"{r['bytes'] / 2**20:.2f} | {r['bits_per_weight']:.3f} | "
                     f"{r['cosine_mean']:.4f} | {r['cosine_min']:.3f} | "
                     f"{r['top1_agreement']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 3, 2])
    parser.add_argument("--only", default=None, help="regex: run only rows whose name matches")
    parser.add_argument("--calibration", type=int, default=128,
                        help="calibration sentences of SKM and of the single-method rows "
                             "(recipes use their own: fast 32, balanced 128, quality 512)")
    parser.add_argument("--finetune-seconds", type=float, default=None,
                        help="also run the fine-tuned rows with this budget each")
    parser.add_argument("--finetune-lr", type=float, default=1e-4,
                        help="learning rate of the quality +finetune rows")
    parser.add_argument("--finetune-embeddings", action="store_true",
                        help="quality +finetune rows: train the embedding tables' codebooks too")
    parser.add_argument("--dkm-bits", type=int, nargs="*", default=[3],
                        help="bits at which the fine-tuned rows include the two DKMs")
    parser.add_argument("--skip-coreml", action="store_true")
    parser.add_argument("--peer-timeout", type=float, default=1200,
                        help="stop a coremltools row after this many seconds")
    parser.add_argument("--out", default="benchmarks/results/minilm.json")
    parser.add_argument("--plot", default=None, help="PNG of fidelity vs bits per weight")
    parser.add_argument("--from-json", nargs="+", default=None,
                        help="run nothing: print the markdown table of these result files "
                             "(and write --plot)")
    args = parser.parse_args()
    if args.from_json:
        rows = [r for f in args.from_json for r in json.loads(Path(f).read_text())["rows"]]
        print(markdown(rows))
        if args.plot:
            plot(rows, args.plot)
        return
    warnings.filterwarnings("ignore")
    logging.disable(logging.INFO)  # coremltools logs every layer
    bench = Bench(args)
    print(f"all-MiniLM-L6-v2: {bench.dense_bytes / 2**20:.2f} MiB fp32, "
          f"{len(bench.sentences)} held-out sentences, {args.calibration} calibration "
          f"sentences (SKM, single methods), torch threads {torch.get_num_threads()}",
          flush=True)
    for bits in args.bits:
        if args.finetune_seconds:
            bench.finetuned(bits, args.finetune_seconds)
        else:
            bench.post_training(bits)
    if args.finetune_seconds:  # after the quality rows of every bits: the DKMs
        for bits in args.dkm_bits:
            bench.dkm(bits, args.finetune_seconds)
    bench.save()
    print(f"wrote {args.out}")
    if args.plot:
        plot(bench.rows, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()

