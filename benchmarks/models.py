"""Any model a user brings, at realistic sizes: GPT-2, BERT-base and a GQA Llama built
offline from transformers configs, and a small GPT-2 trained here on Shakespeare.

Every row runs the real CLI in a fresh process (``compress --bits 4``, ``tie``, ``eval``,
``export --to hf`` + reload) and records its wall time and peak RSS (``/usr/bin/time``),
the ratio against the model as saved, and the fidelity the command printed. The random
-init models measure time, memory and size (their fidelity numbers say little: random
weights); the trained GPT-2 measures perplexity: trained on 25 plays, calibrated on 6
others, measured on 6 more (whole plays, disjoint from both).

Usage (``flock -x /tmp/ws-cpu.lock`` around train and run: the numbers go into docs)::

    python benchmarks/models.py build --out ../scratch/models   # once: the models
    python benchmarks/models.py train --out ../scratch/models   # once: 7 CPU-minutes
    python benchmarks/models.py run --models ../scratch/models  # the table

Writes ``benchmarks/results/models.json`` and prints the table. Needs the plays in
``../shared/data/shakespeare`` (skips with a message when they are absent).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLAYS = Path(os.environ.get("WEIGHTSHARE_DATA", ROOT.parent / "shared" / "data")) / "shakespeare"
RESULTS = ROOT / "benchmarks" / "results" / "models.json"
CLI = [str(Path(sys.executable).parent / "weightshare")]

# name -> (architecture, size, tokenizer vocabulary, embedding rows)
MODELS = {
    "gpt2-base": ("gpt2", "base", 8192, None),
    "bert-base": ("bert", "base", 30522, 30522),
    "llama-base": ("llama", "base", 8192, None),
}
TRAINED = "gpt2-shakespeare"


def play_split() -> dict[str, list[Path]]:
    """The 37 files in sorted order: i % 6 in 0..3 train, 4 calibration, 5 evaluation."""
    files = sorted(PLAYS.glob("*.txt"))
    groups: dict[str, list[Path]] = {"train": [], "calibration": [], "evaluation": []}
    for i, f in enumerate(files):
        groups["train" if i % 6 < 4 else "calibration" if i % 6 == 4 else "evaluation"].append(f)
    return groups


def link_dir(files: list[Path], path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for f in files:
        if not (path / f.name).exists():
            (path / f.name).symlink_to(f.resolve())
    return path


def build(out: Path) -> None:
    """The random-init models at realistic sizes and the small GPT-2 to train (untrained)."""
    from weightshare.data.text import read_texts
    from weightshare.models.offline import save_model_dir

    split = play_split()
    texts = [t for f in split["train"] for t in read_texts(f)]
    for name, (arch, size, vocab, rows) in MODELS.items():
        if not (out / name / "config.json").is_file():
            t0 = time.perf_counter()
            save_model_dir(arch, out / name, texts, size=size, vocab_size=vocab, model_vocab=rows)
            print(f"built {name} in {time.perf_counter() - t0:.1f} s", flush=True)
    for group in ("calibration", "evaluation"):
        link_dir(split[group], out / f"plays-{group}")
    if not (out / TRAINED / "config.json").is_file():
        save_model_dir("gpt2", out / TRAINED, texts, size="small", vocab_size=4096)


def train(path: Path, files: list[Path], seconds: float) -> None:
    """Train the small GPT-2 in ``path`` on ``files`` for ``seconds`` (AdamW, cosine)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).train()
    ids = torch.tensor(tok("\n".join(f.read_text(encoding="utf-8", errors="replace")
                                     for f in files))["input_ids"])
    seq, batch, lr = 128, 16, 1e-3
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    start, step, losses = time.perf_counter(), 0, []
    while (elapsed := time.perf_counter() - start) < seconds:
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * elapsed
                                                                          / seconds))
        starts = torch.randint(0, len(ids) - seq - 1, (batch,), generator=gen)
        x = torch.stack([ids[s:s + seq] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % 50 == 0:
            print(f"step {step}: loss {sum(losses[-50:]) / 50:.3f} ({elapsed:.0f} s)", flush=True)
    model.eval().save_pretrained(path)
    (path / "training.json").write_text(json.dumps(
        {"steps": step, "seconds": seconds, "tokens_seen": step * batch * seq,
         "train_files": [f.name for f in files], "final_loss": sum(losses[-50:]) / 50}))


def timed(argv: list[str], cli: list[str] = CLI) -> tuple[dict, float, int]:
    """Run the CLI with --json in a fresh process: (its JSON, wall seconds, peak RSS bytes)."""
    with tempfile.NamedTemporaryFile(suffix=".time") as t:
        cmd = ["/usr/bin/time", "-f", "%e %M", "-o", t.name, *cli, *argv, "--json"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.strip()[-400:]}")
        wall, rss_kib = Path(t.name).read_text().split()[-2:]
    return json.loads(proc.stdout), float(wall), int(rss_kib) * 1024


def round_trip(file: str, hf_dir: str) -> float:
    """max |logits| difference: the hf export reloaded by from_pretrained vs the file."""
    import torch
    import transformers

    import weightshare as ws
    from weightshare.core.batches import first_tensor

    shared = ws.load(file)
    cls = getattr(transformers, type(shared).__name__)
    back = cls.from_pretrained(hf_dir).eval()
    ids = torch.randint(0, 1000, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float((first_tensor(back(input_ids=ids)).float()
                      - first_tensor(shared(input_ids=ids)).float()).abs().max())


def import_rss(model_dir: Path) -> int:
    """Peak RSS of a process that imports what compress imports and reads the tokenizer,
    without loading weights: what is not the model's in a verb's peak."""
    code = ("import weightshare.cli.main, transformers, sys; "
            "from weightshare.models.source import resolve; s = resolve(sys.argv[1]); "
            "s.tokenizer(); s.skeleton()")
    with tempfile.NamedTemporaryFile(suffix=".time") as t:
        subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", t.name, sys.executable, "-c",
                        code, str(model_dir)], check=True, capture_output=True)
        return int(Path(t.name).read_text().split()[-1]) * 1024


def fp32_bytes(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for f in model_dir.glob("*.safetensors"):
        with safe_open(str(f), "pt") as h:
            for k in h.keys():  # noqa: SIM118 - safe_open has no __iter__
                total += math.prod(h.get_slice(k).get_shape()) * 4
    return total


def run(models: Path, before: str | None = None, only: list[str] | None = None) -> list[dict]:
    rows = []
    work = Path(tempfile.mkdtemp(prefix="ws-models-"))
    for name in only or [*MODELS, TRAINED]:
        model_dir = models / name
        packed = str(work / f"{name}-4bit.safetensors")
        tied = str(work / f"{name}-tied.safetensors")
        text = ["--data", str(models / "plays-calibration"), "--eval-data",
                str(models / "plays-evaluation")] if name == TRAINED else []
        row: dict = {"model": name, "fp32_bytes": fp32_bytes(model_dir),
                     "import_rss": import_rss(model_dir)}
        r, wall, rss = timed(["compress", str(model_dir), "--bits", "4", "-o", packed, *text])
        row["compress"] = {"seconds": wall, "peak_rss": rss, "ratio": r["ratio"],
                           "dense_bytes": r["dense_bytes"], "dense_dtype": r["dense_dtype"],
                           "file_bytes": r["file_bytes"], "total_params": r["total_params"],
                           "fidelity": r["fidelity"], "calibration": r["calibration"],
                           "group_fallback": r["group_fallback"], "job_seconds": r["seconds"]}
        print(f"{name} compress: {wall:.1f} s, {rss / 2**20:.0f} MiB", flush=True)
        if before and name == "bert-base":  # the same job with another weightshare (main)
            r, wall, rss = timed(["compress", str(model_dir), "--bits", "4", "-o",
                                  str(work / "before.safetensors")], [before])
            row["compress_before"] = {"seconds": wall, "peak_rss": rss, "ratio": r["ratio"],
                                      "cli": before}
            print(f"{name} compress with {before}: {wall:.1f} s, {rss / 2**20:.0f} MiB")
        r, wall, rss = timed(["tie", str(model_dir), "--strategy", "cycle", "--scope",
                              "attention|attn", "-o", tied, *text])
        row["tie"] = {"seconds": wall, "peak_rss": rss, "ratio": r["ratio"],
                      "fidelity": r["fidelity"], "config": r["config"]}
        print(f"{name} tie: {wall:.1f} s, {rss / 2**20:.0f} MiB", flush=True)
        r, wall, rss = timed(["eval", packed, *text])
        row["eval"] = {"seconds": wall, "peak_rss": rss, "fidelity": r["fidelity"]}
        hf_dir = str(work / f"{name}-hf")
        r, wall, rss = timed(["export", packed, "--to", "hf", hf_dir])
        row["export_hf"] = {"seconds": wall, "peak_rss": rss, "bytes": r["bytes"],
                            "max_abs_logit_difference": round_trip(packed, hf_dir)}
        print(f"{name} eval + export done", flush=True)
        if name == "bert-base":
            r, wall, rss = timed(["inspect", str(model_dir), "--similarity"])
            row["similarity"] = {"seconds": wall, "peak_rss": rss, "samples": r["samples"],
                                 "window": r["window"],
                                 "blocks": len(r["similarity"]["blocks"])}
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    mib = 2**20
    out = ["| model | params | as saved | compress 4-bit: time, peak RSS (x fp32 size; model's "
           "share) | ratio | fidelity of the 4-bit file | tie attention (cycle): ratio, fidelity"
           " | eval: time, RSS | export hf: time, max logit diff |",
           "| --- | ---: | ---: | --- | ---: | --- | --- | --- | --- |"]
    for r in rows:
        c, t, e, x = r["compress"], r["tie"], r["eval"], r["export_hf"]
        own = (c["peak_rss"] - r["import_rss"]) / r["fp32_bytes"]
        out.append(
            f"| {r['model']} | {c['total_params'] / 1e6:.1f} M | "
            f"{c['dense_bytes'] / mib:.0f} MiB {c['dense_dtype']} | {c['seconds']:.0f} s, "
            f"{c['peak_rss'] / mib:.0f} MiB ({c['peak_rss'] / r['fp32_bytes']:.2f}x; "
            f"{own:.2f}x) | "
            f"{c['ratio']:.2f}x | {fmt(c['fidelity'])} | {t['ratio']:.2f}x, {fmt(t['fidelity'])}"
            f" | {e['seconds']:.0f} s, {e['peak_rss'] / mib:.0f} MiB | {x['seconds']:.0f} s, "
            f"{x['max_abs_logit_difference']:.3g} |")
    return "\n".join(out)


def fmt(f: dict | None) -> str:
    if not f:
        return "-"
    if "perplexity" in f:
        return (f"ppl {f['perplexity_reference']:.2f} -> {f['perplexity']:.2f}, KL "
                f"{f['kl']:.3f}, top-1 {f['top1_agreement']:.3f}")
    if "cosine_mean" in f:
        return f"cos {f['cosine_mean']:.4f}"
    return f"rel. err {f['relative_error']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--seconds", type=float, default=420)
    r = sub.add_parser("run")
    r.add_argument("--models", type=Path, required=True)
    r.add_argument("--before", default=None,
                   help="another weightshare executable to run BERT-base compress with too")
    r.add_argument("--only", nargs="*", default=None, help="these models only (a dry run)")
    args = parser.parse_args()
    if not PLAYS.is_dir():
        print(f"skipped: {PLAYS} is absent (the Shakespeare plays)")
        return
    if args.verb == "build":
        build(args.out)
        return
    if args.verb == "train":
        if (args.out / TRAINED / "training.json").is_file():
            print("already trained")
            return
        train(args.out / TRAINED, play_split()["train"], args.seconds)
        return
    rows = run(args.models, args.before, args.only)
    if args.only:  # a partial run: print, keep the results file of the full run
        print(table(rows))
        return
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows, "split": {k: [f.name for f in v] for k, v in
                                                           play_split().items()}}, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
