"""``hashing``: HashedNets against a dense net of the same stored size.

LeNet-300-100 with its three weight matrices hashed (``ws.hash_``: each keeps a fraction
of its values as real weights, the rest drawn from them by a seeded hash with a sign)
against a dense 784-h1-h2-10 net narrowed until it stores as many parameters
(HashedNets' "equal-size" baseline), both trained the same way from scratch on MNIST.
"""

from __future__ import annotations

from fractions import Fraction

from ...analysis.report import inspect
from ...data.mnist import load_mnist
from ..context import Claim, Context, Result, Table
from ..registry import Study, register
from ..stats import compare, summarize
from ..trainer import param_count, train
from ..zoo import FACTORS, dense_net, equal_size_hidden, hashed_net


def run(ctx: Context) -> Result:
    mnist = load_mnist(ctx.mnist_path())
    factors = ctx.pick((8, 64), FACTORS)
    # 1,200 steps: 39 runs in the study's 15 minutes on one thread of a shared machine
    steps, batch, lr = ctx.pick(20, 1200), 100, 1e-3
    data = mnist.train if not ctx.quick else (mnist.train[0][:2000], mnist.train[1][:2000])
    test = mnist.test if not ctx.quick else (mnist.test[0][:500], mnist.test[1][:500])
    ctx.progress.start(steps * (2 * len(factors) + 1) * len(ctx.seeds))

    sizes: dict[str, dict] = {}
    for f in factors:
        hashed = inspect(hashed_net(1 / f, 0)).unique_params
        hidden = equal_size_hidden(hashed)
        sizes[str(f)] = {"hashed_params": hashed, "dense_hidden": list(hidden),
                         "dense_params": param_count(dense_net(hidden, 0))}
    errors: dict[str, dict[str, list[float]]] = {str(f): {"hashed": [], "dense": []}
                                                  for f in factors}
    full: list[float] = []
    seconds: dict[str, list[float]] = {"hashed": [], "dense": [], "full": []}
    for seed in ctx.seeds:
        r = train(ctx, "LeNet-300-100", dense_net((300, 100), seed), data, steps=steps,
                  seed=seed, batch_size=batch, lr=lr, final_eval=test)
        full.append(r.final["error"])
        seconds["full"].append(r.train_seconds)
        for f in factors:
            for key, model in (("hashed", hashed_net(1 / f, seed)),
                               ("dense", dense_net(tuple(sizes[str(f)]["dense_hidden"]),
                                                   seed))):
                r = train(ctx, f"{key} 1/{f}", model, data, steps=steps, seed=seed,
                          batch_size=batch, lr=lr, final_eval=test)
                errors[str(f)][key].append(r.final["error"])
                seconds[key].append(r.train_seconds)
    claim = Claim("beats-equal-size", "A hashed network beats a dense network of the same "
                  "stored size (HashedNets, Chen et al. 2015).",
                  [compare("test error", errors[str(f)]["hashed"], errors[str(f)]["dense"],
                           better="lower", a="hashed LeNet-300-100", b="equal-size dense",
                           condition=f"1/{f}") for f in factors])
    table = Table("MNIST test error % (mean ± std over seeds) by compression factor",
                  ["factor", "stored params (hashed / dense)", "dense widths",
                   "hashed LeNet-300-100", "equal-size dense"],
                  [[f"1/{f}", f"{sizes[str(f)]['hashed_params']:,} / "
                    f"{sizes[str(f)]['dense_params']:,}",
                    "784-{}-{}-10".format(*sizes[str(f)]["dense_hidden"]),
                    summarize(errors[str(f)]["hashed"]).fmt(2, 100),
                    summarize(errors[str(f)]["dense"]).fmt(2, 100)] for f in factors]
                  + [["1 (no sharing)", f"{param_count(dense_net((300, 100), 0)):,}",
                      "784-300-100-10",
                      summarize(full).fmt(2, 100), summarize(full).fmt(2, 100)]])
    plot = "hashing.png"
    with ctx.figure(plot) as ax:
        xs = [1 / f for f in factors]
        for key, name in (("hashed", "hashed LeNet-300-100"), ("dense", "equal-size dense")):
            st = [summarize(errors[str(f)][key]) for f in factors]
            ax.errorbar(xs, [100 * s.mean for s in st], yerr=[100 * s.std for s in st],
                        marker="o", capsize=3, label=name)
        ref = summarize(full)
        ax.axhline(100 * ref.mean, color="grey", ls="--", lw=1,
                   label=f"LeNet-300-100, no sharing ({100 * ref.mean:.2f}%)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(Fraction(1, f)) for f in factors])
        ax.set_xlabel("stored parameters / LeNet-300-100's")
        ax.set_ylabel("MNIST test error (%)")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    notes = [f"Both nets: {steps} Adam steps of {batch} images (lr {lr}, cosine decay) on "
             f"{data[0].shape[0]:,} training images, test error on {test[0].shape[0]:,} test "
             "images.",
             "Hashed nets: ws.hash_(lenet300(), ratio=1/f, init='sample'); biases stay dense "
             "and are counted in the stored parameters. The equal-size dense net is "
             "models.lenet.equal_size: LeNet-300-100's widths scaled by one factor until it "
             "stores at most as many parameters as the hashed net, its last hidden layer "
             "kept at >= 10 units (a narrower bottleneck would make it a strawman)."]
    return Result(figures={"sizes": sizes, "test_error": errors, "full_test_error": full,
                           "train_seconds": {k: summarize(v).to_dict()
                                             for k, v in seconds.items()}},
                  claims=[claim], tables=[table], plots=[plot], notes=notes,
                  setup={"factors": list(factors), "steps": steps, "batch": batch, "lr": lr,
                         "train_images": int(data[0].shape[0]),
                         "test_images": int(test[0].shape[0])})


STUDY = register(Study(
    "hashing", "Hashing: HashedNets vs a dense net of the same size",
    "a hashed net beats an equal-size dense net at every compression factor",
    ("mnist",), run))
