"""The long fuzz run: many mutated loads in worker processes, with time and memory watched.

    python -m tests.fuzz.run --loads 200000 --workers 2 --out benchmarks/results/fuzz.json

Each worker loads mutated seed files (``corpus.build``; ``mutate.mutate``) one at a time,
alternating the training and the packed runtime, and records per load: the verdict
(``harness.load_one``), the seconds it took (a SIGALRM at ``--timeout`` stops a load that
runs too long: a ``hang``) and the process's peak resident memory (VmHWM, reset before
every load through /proc/self/clear_refs). A finding's file is kept under ``--keep``.
The summary (JSON) counts verdicts per mutation kind.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Timeout(Exception):
    pass


def worker(seed: int, count: int, corpus_dir: Path, timeout: float, keep: Path) -> None:
    import torch

    from tests.fuzz.corpus import build
    from tests.fuzz.harness import FINDINGS, load_one
    from tests.fuzz.mutate import mutate

    torch.set_num_threads(1)
    cases = build(corpus_dir / f"w{seed}")
    others = [c.data for c in cases]
    rng = random.Random(seed)

    def alarm(*_: object) -> None:
        raise _Timeout

    signal.signal(signal.SIGALRM, alarm)
    tmp = tempfile.mkdtemp(prefix="fuzz-")
    for case in cases:  # warm up: imports and compiled kernels are no hostile file's doing
        for runtime in ("train", "packed"):
            load_one(case, case.data, "none", runtime, tmp)
    counts: Counter = Counter()
    by_mutation: Counter = Counter()
    worst = {"seconds": 0.0, "peak_mb": 0.0, "growth_mb": 0.0, "file_bytes": 0}
    for i in range(count):
        case = rng.choice(cases)
        data, how = mutate(rng, case.data, others)
        runtime = "packed" if i % 2 else "train"
        before = _rss_mb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        t0 = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            outcome = load_one(case, data, how, runtime, tmp)
            verdict, detail = outcome.verdict, outcome.detail
        except _Timeout:
            verdict, detail = "hang", f"over {timeout} s"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        seconds = time.perf_counter() - t0
        peak = _rss_mb("VmHWM")
        if seconds > timeout:
            verdict, detail = "hang", f"{seconds:.1f} s"
        counts[verdict] += 1
        by_mutation[f"{how.split(':')[0]}:{verdict}"] += 1
        worst["seconds"] = max(worst["seconds"], seconds)
        worst["peak_mb"] = max(worst["peak_mb"], peak)
        worst["growth_mb"] = max(worst["growth_mb"], peak - before)
        worst["file_bytes"] = max(worst["file_bytes"], len(data))
        if verdict in FINDINGS or verdict == "hang" or peak > 1024:
            name = keep / f"w{seed}-{i}-{case.name}-{verdict}.safetensors"
            name.write_bytes(data)
            print(json.dumps({"finding": verdict, "case": case.name, "mutation": how,
                              "runtime": runtime, "detail": detail, "file": str(name),
                              "seconds": seconds, "peak_mb": peak}), flush=True)
        if (i + 1) % 1000 == 0:
            print(json.dumps({"progress": i + 1}), flush=True)
    print(json.dumps({"done": dict(counts), "by_mutation": dict(by_mutation), "worst": worst}),
          flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loads", type=int, default=200_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--keep", type=Path, default=Path(tempfile.gettempdir()) / "fuzz-findings")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--corpus", type=Path, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker is not None:
        worker(a.worker, a.count, a.corpus, a.timeout, a.keep)
        return
    a.keep.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    corpus = Path(tempfile.mkdtemp(prefix="fuzz-corpus-"))
    per = -(-a.loads // a.workers)
    t0 = time.time()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tests.fuzz.run", "--worker", str(a.seed * 1000 + w),
         "--count", str(per), "--corpus", str(corpus), "--timeout", str(a.timeout),
         "--keep", str(a.keep)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for w in range(a.workers)]
    findings, done = [], []
    for proc in procs:
        assert proc.stdout is not None
        for line in proc.stdout:
            msg = json.loads(line)
            if "finding" in msg:
                findings.append(msg)
                print(line.strip(), file=sys.stderr)
            elif "done" in msg:
                done.append(msg)
        proc.wait()
    counts: Counter = Counter()
    by_mutation: Counter = Counter()
    worst: dict = {}
    for d in done:
        counts.update(d["done"])
        by_mutation.update(d["by_mutation"])
        for k, v in d["worst"].items():
            worst[k] = max(worst.get(k, 0), v)
    summary = {"command": " ".join(["python -m tests.fuzz.run"] + sys.argv[1:]),
               "commit": commit,
               "loads": sum(counts.values()), "workers": a.workers, "seed": a.seed,
               "wall_seconds": round(time.time() - t0, 1), "verdicts": dict(counts),
               "by_mutation": dict(sorted(by_mutation.items())), "worst": worst,
               "findings": findings[:100], "exit_codes": [p.returncode for p in procs]}
    text = json.dumps(summary, indent=1)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
