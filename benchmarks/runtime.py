"""Running shared models: memory, latency, load time and file bytes, packed vs dense fp32.

Models: all-MiniLM-L6-v2 (real weights), a 110 M-parameter BERT-base-shaped model and a
~1 B-parameter model of the same family (both built from their configs with seeded random
weights, to show scaling), and a tiny BERT (its "model-attributable" memory is the fixed
cost of any process that builds and runs such a model). Each is compressed at 8/4/3/2 bits
the way a user would (`weightshare compress DIR --bits B`), and saved dense fp32 and
entropy-coded too. Every measurement runs in a fresh process:

* imports, tokenisation, then RSS just before loading; the peak RSS (VmHWM, reset first)
  while loading, and after loading and running one batch of 32 sentences: the
  model-attributable peak RSS is that peak minus the RSS before loading;
* load time (``weightshare.load``);
* latency, batch 1 (one sentence) and batch 32, median of repeats after a warm-up.

    flock -x /tmp/ws-cpu.lock python benchmarks/runtime.py --cache /work/scratch/issue8 \\
        --out benchmarks/results/runtime.json

Files are built once and kept under ``--cache`` (never in the repository). Forms: ``dense``
(the dense fp32 file), ``packed`` (``runtime="packed"``), ``train`` (``runtime="train"``,
what ``weightshare.load`` returned before the packed runtime), ``packed+entropy`` (the
entropy-coded file, decoded at load into the packed form).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIGS = {  # BERT family, vocabulary of all-MiniLM-L6-v2 (bert-base-uncased)
    "tiny": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 64},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072},
    "1b": {"hidden_size": 2048, "num_hidden_layers": 18, "num_attention_heads": 16,
           "intermediate_size": 8192},
}
REPEATS = {"tiny": (30, 10), "minilm": (40, 10), "base": (20, 5), "1b": (5, 2)}


def status(field: str) -> int:
    """A /proc/self/status memory field, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


# ------------------------------------------------------------------ the measuring child

def measure(path: str, runtime: str, repeats: tuple[int, int], latency: bool) -> dict:
    import numba  # noqa: F401  (imported by every form alike: a library, not the model)
    import torch
    import transformers.models.bert.modeling_bert  # noqa: F401
    from transformers import AutoTokenizer

    import weightshare as ws
    from weightshare.data.sentences import eval_sentences
    from weightshare.models.hf import minilm_dir
    from weightshare.runtime import kernels

    torch.set_num_threads(os.cpu_count() or 1)
    kernels.backend()
    tok = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
    sentences = eval_sentences()
    b1 = dict(tok(sentences[:1], return_tensors="pt", padding=True))
    b32 = dict(tok(sentences[:32], return_tensors="pt", padding=True))
    rss0 = status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    t0 = time.perf_counter()
    model = ws.load(path, runtime="train" if runtime == "dense" else runtime)
    load_s = time.perf_counter() - t0
    peak_load = status("VmHWM")
    with torch.inference_mode():
        model(**b32)
    peak = status("VmHWM")
    out = {"rss_before": rss0, "peak_load": peak_load - rss0, "peak": peak - rss0,
           "rss_after": status("VmRSS") - rss0, "load_s": load_s,
           "params": sum(p.numel() for p in model.parameters()),
           "kernels": kernels.backend(), "seq": [b1["input_ids"].shape[1],
                                                 b32["input_ids"].shape[1]]}
    if latency:
        for name, batch, n in (("b1", b1, repeats[0]), ("b32", b32, repeats[1])):
            times = []
            with torch.inference_mode():
                model(**batch)
                for _ in range(n):
                    t = time.perf_counter()
                    model(**batch)
                    times.append(time.perf_counter() - t)
            out[f"{name}_ms"] = 1e3 * statistics.median(times)
    return out


# ------------------------------------------------------------------ building the files

def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, **kw)


def peak_of(cmd: list[str]) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of a command, from /usr/bin/time -v."""
    t0 = time.perf_counter()
    done = run(["/usr/bin/time", "-v", *cmd], stderr=subprocess.PIPE, text=True)
    kb = next(int(line.split()[-1]) for line in done.stderr.splitlines()
              if "Maximum resident set size" in line)
    return kb * 1024, time.perf_counter() - t0


def prepare(name: str, cache: Path, bits: list[int]) -> dict:
    """Dense, fixed-width and entropy-coded files of one model (built once)."""
    import torch

    import weightshare as ws

    d = cache / name
    d.mkdir(parents=True, exist_ok=True)
    info_path = d / "info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    exe = str(Path(sys.executable).with_name("weightshare"))
    if name == "minilm":
        spec = "minilm"
        if not (d / "dense.safetensors").exists():
            from weightshare.models import load_model

            ws.save(load_model("minilm").model, d / "dense.safetensors")
    else:
        spec = str(d / "hf")
        if not (d / "hf" / "config.json").exists():
            from transformers import BertConfig, BertModel

            torch.manual_seed(0)
            model = BertModel(BertConfig(**CONFIGS[name])).eval()
            model.save_pretrained(spec)
            ws.save(model, d / "dense.safetensors")
            del model
    for b in bits:
        fixed, coded = d / f"b{b}.safetensors", d / f"b{b}-entropy.safetensors"
        if not fixed.exists():
            peak, secs = peak_of([exe, "compress", spec, "--bits", str(b), "--no-eval",
                                  "--quiet", "-o", str(fixed)])
            info[f"compress_b{b}"] = {"peak_rss": peak, "seconds": secs}
            info_path.write_text(json.dumps(info, indent=1))
        if not coded.exists():
            ws.save(ws.load(fixed), coded, entropy=True)
        if f"codes_b{b}" not in info:
            c = ws.inspect(coded).codes
            info[f"codes_b{b}"] = {"fixed": c.fixed_bytes, "coded": c.coded_bytes,
                                   "entropy": c.entropy_bytes, "count": c.codes}
            info_path.write_text(json.dumps(info, indent=1))
    return info


def child(path: Path, runtime: str, model: str, latency: bool = True) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", str(path), "--runtime",
                          runtime, "--model", model] + ([] if latency else ["--no-latency"]),
                         check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, default=Path("/work/scratch/issue8"))
    p.add_argument("--models", default="tiny,minilm,base,1b")
    p.add_argument("--bits", default="8,4,3,2")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=HERE / "results" / "runtime.json")
    p.add_argument("--prepare-only", action="store_true")
    p.add_argument("--pass", dest="what", choices=["memory", "timing"], default="timing",
                   help="memory: bytes and peak RSS only (no timing; may share the CPU); "
                        "timing: load time and latency too (run under flock -x)")
    p.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    p.add_argument("--runtime", default="packed", help=argparse.SUPPRESS)
    p.add_argument("--model", default="minilm", help=argparse.SUPPRESS)
    p.add_argument("--no-latency", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.measure:
        print(json.dumps(measure(a.measure, a.runtime, REPEATS[a.model], not a.no_latency)))
        return
    bits = [int(b) for b in a.bits.split(",")]
    results = json.loads(a.out.read_text()) if a.out.exists() else {}
    for name in a.models.split(","):
        b = [4] if name == "tiny" else bits
        info = prepare(name, a.cache, b)
        if a.prepare_only:
            continue
        d = a.cache / name
        forms = [("dense", d / "dense.safetensors", "dense", True)]
        for k in b:
            forms.append((f"packed{k}", d / f"b{k}.safetensors", "packed", True))
            forms.append((f"packed{k}+entropy", d / f"b{k}-entropy.safetensors", "packed",
                          False))
        forms.append(("train4", d / "b4.safetensors", "train", name != "1b"))
        timing = a.what == "timing"
        rounds = []
        for r in range(a.rounds if timing else 1):
            row = {}
            for form, path, runtime, latency in forms:
                row[form] = child(path, runtime, name,
                                  timing and latency and (r == 0 or name != "1b"))
                row[form]["file_bytes"] = path.stat().st_size
                if not timing:
                    del row[form]["load_s"]  # taken while others used the CPU: not a figure
                print(name, r, form, json.dumps(row[form]), file=sys.stderr, flush=True)
            rounds.append(row)
        results.setdefault(name, {})["info"] = info
        results[name][a.what] = rounds
        a.out.write_text(json.dumps(results, indent=1) + "\n")
    if not a.prepare_only:
        print(report(results))


def _median(rounds: list[dict], form: str, key: str) -> float | None:
    vals = [r[form][key] for r in rounds if form in r and r[form].get(key) is not None]
    return statistics.median(vals) if vals else None


def _cell(v: dict, dense: dict, k: str, ratio: bool = False) -> str:
    if v.get(k) is None:
        return "-"
    if ratio:
        return f"{v[k] / dense[k]:.2f}" if dense.get(k) else "-"
    if k in ("peak", "peak_load", "file_bytes"):
        return f"{v[k] / 1e6:.1f}"
    return f"{v[k]:.{1 if k.endswith('ms') else 2}f}"


def report(results: dict) -> str:
    """The tables of docs/benchmarks.md, from the results."""
    lines = ["| model | form | file MB | load s | peak RSS while loading MB | attributable "
             "peak RSS MB | x dense | batch 1 ms | x dense | batch 32 ms | x dense |",
             "|---" * 11 + "|"]
    keys = ("peak", "peak_load", "load_s", "b1_ms", "b32_ms", "file_bytes")
    for name, res in results.items():
        memory = res.get("memory") or res.get("timing") or []
        timing = res.get("timing") or []
        if not memory:
            continue
        rounds = [{f: {**m[f], **{k: t[f][k] for k in ("load_s", "b1_ms", "b32_ms")
                                  if f in t and k in t[f]}} for f in m}
                  for m in memory for t in (timing or [{}])]
        dense = {k: _median(rounds, "dense", k) for k in keys}
        for form in rounds[0]:
            v = {k: _median(rounds, form, k) for k in keys}
            c = [_cell(v, dense, k, r) for k, r in (
                ("file_bytes", False), ("load_s", False), ("peak_load", False),
                ("peak", False), ("peak", True), ("b1_ms", False), ("b1_ms", True),
                ("b32_ms", False), ("b32_ms", True))]
            lines.append(f"| {name} | {form} | " + " | ".join(c) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
