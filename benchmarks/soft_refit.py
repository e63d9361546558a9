"""Choosing soft sharing's refit on the validation split: from one file of the soft row
stopped after the prior (``--soft-refit 0``), run the refit with several settings and
report each one's validation error and ratio. The prior's epochs (most of a row's time)
are trained once per seed; each setting then costs only its free epochs.

    weightshare train lenet300 --data ../shared/data/mnist.npz --sharing soft --entropy \
        --validation 5000 --init DENSE55K --threads 1 --soft-refit 0 --seed S -o pS.safetensors
    python benchmarks/soft_refit.py --data ../shared/data/mnist.npz --seed S pS.safetensors \
        --setting e20:epochs=20/finetune=3 --setting e80ft6:epochs=80/finetune=6 \
        [--out benchmarks/results/soft_refit.json]

Each setting reproduces what the row's code path (``recipes._soft`` after the snap) does
with the same seed: it calls the same ``refit_`` (survivors free with the zeros kept,
per-layer zero-sharing codebooks, then the codebooks' fine-tune). The validation images are the
same ``validation`` images the row held out; the test set is never read.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch

import weightshare as ws
from weightshare.data.mnist import load_mnist, random_shift
from weightshare.errors import ConfigError
from weightshare.models.lenet import widths
from weightshare.train.recipes import dense_file_bytes, load_row
from weightshare.train.refit import check_refit_layers, refit_

DEFAULTS = {"epochs": 20.0, "finetune": 3.0, "lr": 1e-3, "bits": "fc1=2,3"}


def parse_setting(text: str, model: torch.nn.Module) -> tuple[str, dict]:
    """``NAME:key=value/key=value...`` (keys: epochs, finetune, lr, bits; e.g.
    ``e80ft6:epochs=80/finetune=6/bits=fc1=2,3``) -> (NAME, settings), every value
    checked before any training."""
    name, _, rest = text.partition(":")
    setting = dict(DEFAULTS)
    for pair in filter(None, rest.split("/")):
        key, _, value = pair.partition("=")
        if key not in DEFAULTS or not value:
            raise SystemExit(f"--setting {text!r}: {pair!r} is not KEY=VALUE with KEY one of "
                             f"{', '.join(DEFAULTS)}")
        try:
            setting[key] = value if key == "bits" else float(value)
        except ValueError:
            raise SystemExit(f"--setting {text!r}: {key} must be a number, got {value!r}") from None
    if not name or setting["epochs"] <= 0 or setting["finetune"] < 0 or setting["lr"] <= 0:
        raise SystemExit(f"--setting {text!r}: needs a NAME, epochs > 0, finetune >= 0, lr > 0")
    try:
        check_refit_layers(model, setting["bits"])  # malformed bits or unknown layers
    except ConfigError as error:
        raise SystemExit(f"--setting {text!r}: {error}") from None
    return name, setting


def refit(start: torch.nn.Module, train, held, setting: dict, seed: int) -> dict:
    model = copy.deepcopy(start)

    def fit(m: torch.nn.Module, epochs: float, lr: float, step_seed: int, **kw) -> None:
        ws.fit(m, train, epochs=epochs, lr=lr, batch_size=100, augment=random_shift,
               seed=step_seed, progress=False, **kw)

    result: dict = {}

    def measure(stage: str) -> None:
        result[f"{stage}_validation_error"] = ws.evaluate(model, held)["error"]

    begin = time.perf_counter()
    refit_(model, setting["bits"], fit, setting["epochs"], setting["finetune"],
           setting["lr"], seed, measure)
    result["validation_error"] = ws.evaluate(model, held)["error"]
    result["seconds"] = time.perf_counter() - begin
    with tempfile.TemporaryDirectory() as tmp:
        path = ws.save(model, Path(tmp) / "x.safetensors", extra={"lenet": widths(model)},
                       entropy=True)
        result["file_bytes"] = path.stat().st_size
    result["ratio"] = dense_file_bytes(model) / result["file_bytes"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("start", help="a soft row's file written with --soft-refit 0")
    ap.add_argument("--data", required=True, help="mnist.npz or a directory of IDX files")
    ap.add_argument("--validation", type=int, default=5000,
                    help="the held-out images of the run that wrote START")
    ap.add_argument("--seed", type=int, default=0, help="the seed of the run that wrote START")
    ap.add_argument("--setting", action="append", required=True,
                    help="NAME:epochs=E/finetune=F/lr=LR/bits=SPEC (repeatable; left "
                         f"out: {DEFAULTS})")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None,
                    help="JSON of the results, merged into seeds/SEED/settings/NAME")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = load_row(args.start)
    settings = [parse_setting(text, start) for text in args.setting]
    train, held = load_mnist(args.data).holdout(args.validation)
    out = Path(args.out) if args.out else None
    results = json.loads(out.read_text()) if out and out.exists() else {}
    seed = results.setdefault("seeds", {}).setdefault(str(args.seed), {})
    seed.update(start=args.start, validation=args.validation,
                start_validation_error=ws.evaluate(start, held)["error"])
    for name, setting in settings:
        row = refit(start, train, held, setting, args.seed)
        seed.setdefault("settings", {})[name] = {"setting": setting, **row}
        print(f"{name:>10}: validation {100 * row['validation_error']:.2f}% (free "
              f"{100 * row['free_validation_error']:.2f}%, clustered "
              f"{100 * row['clustered_validation_error']:.2f}%) at {row['ratio']:.1f}x, "
              f"{row['seconds']:.0f} s", flush=True)
        if out:
            out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
