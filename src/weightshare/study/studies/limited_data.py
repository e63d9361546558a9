"""``limited-data``: does spatial sharing generalise better when data is scarce?

LeNet-5 (filters shared across positions), its locally connected twin (same receptive
fields, own filters at every position) and a dense MLP of LeNet-5's size, trained the
same way (same steps, batch, learning rate, schedule) on random MNIST subsets of growing
size (a new subset per seed); test error on the full 10,000-image test set and the
train-test gap.
"""

from __future__ import annotations

import torch

from ...data.mnist import load_mnist
from ..context import Claim, Context, Result, Table
from ..registry import Study, register
from ..stats import compare, summarize
from ..trainer import param_count, train
from ..zoo import conv_net, local_net, mlp_net

MODELS = {"conv": ("LeNet-5 (conv)", conv_net), "local": ("locally connected twin", local_net),
          "mlp": ("dense MLP", mlp_net)}


def run(ctx: Context) -> Result:
    mnist = load_mnist(ctx.mnist_path())
    sizes = ctx.pick((100, 200), (500, 2000, 10000, 60000))
    # 400 steps: the whole study (36 runs, the locally connected twin ~2x LeNet-5's step)
    # fits its 15 minutes on one thread of a shared 2-core machine
    steps = ctx.pick(8, 400)
    batch, lr = 64, 1e-3
    x_train, y_train = mnist.train
    test = mnist.test if not ctx.quick else (mnist.test[0][:200], mnist.test[1][:200])
    ctx.progress.start(steps * len(sizes) * len(MODELS) * len(ctx.seeds))

    results: dict[str, dict[str, list[dict]]] = {str(n): {m: [] for m in MODELS} for n in sizes}
    params = {m: param_count(build(0)) for m, (_, build) in MODELS.items()}
    for seed in ctx.seeds:
        gen = ctx.seed(seed)
        order = torch.randperm(x_train.shape[0], generator=gen)
        for n in sizes:
            idx = order[:n]
            subset = (x_train[idx], y_train[idx])
            # train error on (at most) 2,000 of the subset's own images
            seen = (subset[0][:2000], subset[1][:2000])
            for key, (name, build) in MODELS.items():
                run_ = train(ctx, name, build(seed), subset, steps=steps, seed=seed,
                             batch_size=batch, lr=lr, held_out=seen, final_eval=test)
                train_error = run_.evals[-1]["error"]
                results[str(n)][key].append({
                    "seed": seed, "test_error": run_.final["error"],
                    "test_loss": run_.final["loss"], "train_error": train_error,
                    "gap": run_.final["error"] - train_error,
                    "train_seconds": run_.train_seconds})

    def values(n: int, model: str, field: str) -> list[float]:
        return [r[field] for r in results[str(n)][model]]

    names = {m: name for m, (name, _) in MODELS.items()}
    error = Claim("generalises", "With limited data, spatial sharing (a convolution) "
                  "generalises better than the same network without it: lower test error.",
                  [compare("test error", values(n, "conv", "test_error"),
                           values(n, "local", "test_error"), better="lower", a=names["conv"],
                           b=names["local"], condition=f"{n:,} images") for n in sizes])
    gap = Claim("overfits-less", "Spatial sharing reduces overfitting: a smaller train-test "
                "error gap than the unshared twin.",
                [compare("train-test gap", values(n, "conv", "gap"), values(n, "local", "gap"),
                         better="lower", a=names["conv"], b=names["local"],
                         condition=f"{n:,} images") for n in sizes])
    summary = {str(n): {m: {f: summarize(values(n, m, f)).to_dict()
                            for f in ("test_error", "train_error", "gap", "train_seconds")}
                        for m in MODELS} for n in sizes}
    table = Table("Test error % (mean ± std over seeds) and train-test gap, by training images",
                  ["images"] + [f"{names[m]} error" for m in MODELS]
                  + [f"{names[m]} gap" for m in MODELS],
                  [[f"{n:,}"] + [summarize(values(n, m, "test_error")).fmt(2, 100)
                                 for m in MODELS]
                   + [summarize(values(n, m, "gap")).fmt(2, 100) for m in MODELS]
                   for n in sizes])
    ptable = Table("Parameters", ["model", "parameters"],
                   [[names[m], f"{params[m]:,}"] for m in MODELS])
    plot = "limited_data.png"
    with ctx.figure(plot, ncols=2) as (ax1, ax2):
        for m in MODELS:
            for ax, field in ((ax1, "test_error"), (ax2, "gap")):
                st = [summarize(values(n, m, field)) for n in sizes]
                ax.errorbar(sizes, [100 * s.mean for s in st], yerr=[100 * s.std for s in st],
                            marker="o", capsize=3, label=f"{names[m]} ({params[m]:,} params)")
        for ax, title in ((ax1, "test error (%)"), (ax2, "train - test gap (% points)")):
            ax.set_xscale("log")
            ax.set_xlabel("training images")
            ax.set_ylabel(title)
            ax.legend(fontsize=8)
        ax1.set_yscale("log")
    notes = [f"Every model: {steps} Adam steps of {batch} images, lr {lr} with cosine decay, no "
             "augmentation, whatever the subset size (small subsets are seen for many "
             "epochs: that is the regime where overfitting shows).",
             "Each seed draws its own random subset (nested: the 500 images are among the "
             "2,000, ...), so the spread includes which images were drawn.",
             "Train error is measured on (at most) 2,000 of the training subset's images; the "
             "gap is test error minus train error.",
             "The locally connected twin is re-initialised independently at every position "
             "(ws.unshare would copy the shared filters, which starts it at a shared "
             "solution)."]
    return Result(figures={"results": results, "summary": summary, "params": params},
                  claims=[error, gap], tables=[table, ptable], plots=[plot], notes=notes,
                  setup={"sizes": list(sizes), "steps": steps, "batch": batch, "lr": lr,
                         "test_images": int(test[0].shape[0])})


STUDY = register(Study(
    "limited-data", "Limited data: does spatial sharing generalise better?",
    "sharing reduces overfitting and generalises better when data is limited",
    ("mnist",), run))
