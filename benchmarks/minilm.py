"""weightshare vs coremltools palettization on all-MiniLM-L6-v2, side by side in one run.

For each bits x granularity: clustering seconds, bytes, and held-out fidelity (cosine of
mean-pooled sentence embeddings vs the original, on the built-in evaluation sentences,
never the calibration ones).

    python benchmarks/minilm.py [--bits 4 3 2] [--out benchmarks/results/minilm.json]

coremltools' torch palettizer returns a dense PyTorch model whose weights take 2**bits
values; it writes no compact file of its own in PyTorch, so its bytes are given as the
ideal packed size (codes at `bits` per weight + fp32 lookup tables + the other tensors),
computed the same way as weightshare's in-memory stored bytes. weightshare's bytes are
the size of the real .safetensors file it writes.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

import weightshare as ws
from weightshare.analysis.fidelity import embed, embedding_fidelity
from weightshare.data.sentences import eval_sentences
from weightshare.models import load_model
from weightshare.pipeline import calibration_batches

GROUP = 16


def coreml_palettize(model: torch.nn.Module, bits: int, granularity: str) -> torch.nn.Module:
    from coremltools.optimize.torch.palettization import (
        PostTrainingPalettizer,
        PostTrainingPalettizerConfig,
    )

    glob = {"n_bits": bits, "granularity": granularity}
    if granularity == "per_grouped_channel":
        glob["group_size"] = GROUP
    config = PostTrainingPalettizerConfig.from_dict({"global_config": glob})
    return PostTrainingPalettizer(model, config).compress()


def ideal_bytes(model: torch.nn.Module, bits: int) -> int:
    """Packed codes + fp32 LUTs for weights with <= 2**bits values per group; fp32 otherwise.
    Applied to coremltools' output: a weight counts as palettized when every row group
    holds at most 2**bits distinct values."""
    total = 0
    for p in model.parameters():
        if p.ndim >= 2 and p.numel() >= 2048:
            rows = p.detach().reshape(p.shape[0], -1)
            for group_rows in (rows.shape[0], GROUP):
                if rows.shape[0] % group_rows:
                    continue
                groups = rows.reshape(-1, group_rows * rows.shape[1])
                if max(int(g.unique().numel()) for g in groups) <= 2**bits:
                    total += (p.numel() * bits + 7) // 8 + groups.shape[0] * 2**bits * 4
                    break
            else:
                total += p.numel() * 4
        else:
            total += p.numel() * p.element_size()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 3, 2])
    parser.add_argument("--out", default="benchmarks/results/minilm.json")
    parser.add_argument("--skip-coreml", action="store_true")
    args = parser.parse_args()

    base = load_model("minilm")
    sentences = eval_sentences()
    reference = embed(base.model, base.tokenizer, sentences)
    dense_bytes = ws.inspect(base.model).dense_bytes
    calib = calibration_batches(base)  # the same 32 sentences `weightshare compress` uses
    rows = []
    print(f"all-MiniLM-L6-v2: {dense_bytes / 2**20:.2f} MiB fp32, {len(sentences)} held-out "
          f"sentences, torch threads {torch.get_num_threads()}", flush=True)

    def record(tool: str, bits: int, gran: str, seconds: float, nbytes: int,
               model: torch.nn.Module, note: str = "") -> None:
        fid = embedding_fidelity(reference, embed(model, base.tokenizer, sentences))
        row = {"tool": tool, "bits": bits, "granularity": gran, "seconds": seconds,
               "bytes": nbytes, "ratio": dense_bytes / nbytes, **fid, "note": note}
        rows.append(row)
        print(f"{tool:<28} {bits}b {gran:<20} {seconds:7.2f} s  {nbytes / 2**20:6.2f} MiB  "
              f"x{row['ratio']:.2f}  cos {fid['cosine_mean']:.4f} (min {fid['cosine_min']:.3f})"
              f"  top1 {fid['top1_agreement']:.3f}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        for bits in args.bits:
            for ws_gran, cm_gran in (("per_tensor", "per_tensor"),
                                     ("per_group", "per_grouped_channel")):
                if not args.skip_coreml:
                    model = copy.deepcopy(base.model)
                    t0 = time.perf_counter()
                    model = coreml_palettize(model, bits, cm_gran)
                    seconds = time.perf_counter() - t0
                    record("coremltools PostTraining", bits, ws_gran, seconds,
                           ideal_bytes(model, bits), model, "ideal packed bytes")
                for calibrate in (False, True):
                    model = copy.deepcopy(base.model)
                    # coremltools skips weights whose rows group_size does not divide
                    # (the 30522-row word embedding): leave them dense too, to compare alike
                    skip = ("word_embeddings",) if ws_gran == "per_group" else ()
                    cfg = ws.ClusterConfig(bits=bits, granularity=ws_gran, group_size=GROUP,
                                           exclude=skip)
                    t0 = time.perf_counter()
                    ws.cluster_(model, cfg, calib if calibrate else None, progress=False)
                    seconds = time.perf_counter() - t0
                    path = Path(tmp) / f"m{bits}{ws_gran}{calibrate}.safetensors"
                    ws.save(model, path)
                    name = "weightshare exact" + (" +calibration" if calibrate else "")
                    record(name, bits, ws_gran, seconds, path.stat().st_size, model,
                           "file bytes")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join([Path(sys.executable).name] + sys.argv),
                               "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                               "dense_bytes": dense_bytes, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
