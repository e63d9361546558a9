"""``weightshare train``: every sharing on a tiny MNIST-shaped file, the file it writes,
its JSON, and one-line errors before any training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import weightshare as ws
from tests.cli.test_cli import run
from weightshare.train.recipes import load_row


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory) -> Path:
    g = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("mnist") / "tiny.npz"
    np.savez(path, x_train=g.integers(0, 256, (120, 28, 28), dtype=np.uint8),
             y_train=g.integers(0, 10, 120), x_test=g.integers(0, 256, (40, 28, 28),
                                                             dtype=np.uint8),
             y_test=g.integers(0, 10, 40))
    return path


def train(args: list[str], data: Path, out: Path, capsys) -> dict:
    code, stdout, err = run(["train", *args, "--data", str(data), "-o", str(out), "--json",
                             "--threads", "1", "--batch-size", "40"], capsys)
    assert code == 0, err
    return json.loads(stdout)


def test_every_sharing_writes_a_file_whose_bytes_give_the_ratio(tiny_mnist, tmp_path, capsys):
    dense = tmp_path / "dense.safetensors"
    r = train(["lenet300", "--epochs", "1"], tiny_mnist, dense, capsys)
    assert r["sharing"] == "none" and 0 <= r["test_error"] <= 1
    assert r["file_bytes"] == dense.stat().st_size
    assert r["ratio"] == pytest.approx(r["dense_file_bytes"] / r["file_bytes"])
    runs = {
        "hash": ["--sharing", "hash", "--ratio", "1/8", "--epochs", "1"],
        "small": ["--sharing", "small", "--ratio", "1/8", "--epochs", "1"],
        "prune-cluster": ["--sharing", "prune-cluster", "--init", str(dense), "--prune-epochs",
                          "1", "--sparsity", "0.9", "--finetune-epochs", "1", "--bits", "4"],
        "soft": ["--sharing", "soft", "--init", str(dense), "--soft-epochs", "1",
                 "--finetune-epochs", "1", "--zero-std", "0.005", "--soft-decay", "0.5"],
    }
    kinds = {"hash": "hash", "small": "dense", "prune-cluster": "zero-codebook",
             "soft": "zero-codebook"}
    for sharing, args in runs.items():
        out = tmp_path / f"{sharing}.safetensors"
        r = train(["lenet300", *args], tiny_mnist, out, capsys)
        assert kinds[sharing] in r["kinds"], sharing
        assert r["ratio"] > 4 and r["file_bytes"] == out.stat().st_size, sharing
        model = load_row(out)  # the file reloads into the LeNet it describes
        assert ws.inspect(model).total_params == r["params"]
    assert r["dense_test_error"] == train(["lenet300", "--epochs", "1"], tiny_mnist,
                                          tmp_path / "again.safetensors",
                                          capsys)["test_error"]  # seeded: the same run


def test_text_output_names_error_bytes_ratio(tiny_mnist, tmp_path, capsys):
    code, out, _ = run(["train", "lenet5", "--data", str(tiny_mnist), "--sharing", "hash",
                        "--ratio", "0.25", "--epochs", "0.5", "--threads", "1", "-o",
                        str(tmp_path / "h.safetensors")], capsys)
    assert code == 0 and "test error:" in out and "x smaller" in out
    code, out, _ = run(["inspect", str(tmp_path / "h.safetensors"), "--summary"], capsys)
    assert code == 0 and "4 hash" in out


@pytest.mark.parametrize("args, message", [
    (["lenet300", "--data", "absent.npz"], "absent.npz does not exist"),
    (["lenet300", "--data", "DATA", "--sharing", "hash", "--ratio", "1e-9"], "no bucket"),
    (["lenet300", "--data", "DATA", "--ratio", "x/8"], "not a number or a fraction"),
    (["lenet300", "--data", "DATA", "-o", "no_dir/x.safetensors"], "does not exist"),
    (["lenet300", "--data", "DATA", "--sharing", "soft", "--init", "none.safetensors"],
     "is not a file"),
    (["lenet7", "--data", "DATA"], "lenet7"),
    (["lenet300", "--data", "DATA", "--sharing", "soft", "--soft-decay", "1.5"],
     "soft_decay (--soft-decay) must be a fraction"),
    (["lenet300", "--data", "DATA", "--sharing", "hash", "--init", "DATA"],
     "init (--init) is for prune-cluster and soft"),
    (["lenet5", "--data", "DATA", "--sharing", "soft", "--soft-refit-bits", "fc9=2,3"],
     "soft_refit_bits names 'fc9', which lenet5 does not have; its layers: conv1, conv2"),
])
def test_errors_are_one_line_exit_1_nothing_written(args, message, tiny_mnist, tmp_path,
                                                    capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["train", *[str(tiny_mnist) if a == "DATA" else a for a in args]],
                       capsys)
    assert code == 1 and message in err, err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_not_mnist_shaped_data(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((3, 32, 32), np.uint8), y_train=np.zeros(3, np.int64),
             x_test=np.zeros((1, 28, 28), np.uint8), y_test=np.zeros(1, np.int64))
    code, _, err = run(["train", "lenet5", "--data", str(bad), "-o",
                        str(tmp_path / "x.safetensors")], capsys)
    assert code == 1 and "MNIST's are (N, 28, 28)" in err


def test_soft_refit_clusters_each_layer_to_its_bits_and_keeps_the_zeros(tiny_mnist, tmp_path):
    from weightshare.train.recipes import TrainConfig, run

    dense = tmp_path / "dense.safetensors"
    run(TrainConfig(model="lenet300", epochs=1, batch_size=40), tiny_mnist, dense,
        progress=False)
    base = dict(model="lenet300", sharing="soft", soft_epochs=1, finetune_epochs=1,
                zero_std=0.005, batch_size=40)
    plain = run(TrainConfig(**base, soft_refit=0), tiny_mnist, tmp_path / "a.safetensors",
                init=dense, progress=False)
    refit = run(TrainConfig(**base, soft_refit=1, soft_refit_bits="fc1=2,3"), tiny_mnist,
                tmp_path / "b.safetensors", init=dense, progress=False)
    assert refit["kinds"] == ["dense", "zero-codebook"]
    before = ws.materialize_(load_row(plain["output"]))
    after = ws.materialize_(load_row(refit["output"]))
    for name, bits in (("fc1", 2), ("fc2", 3), ("fc3", 3)):
        w0, w1 = getattr(before, name).weight, getattr(after, name).weight
        assert w1.unique().numel() <= 2 ** bits, name  # the pinned zero included
        assert bool((w1[w0 == 0] == 0).all()), name  # the prior's zeros stay zeros


def test_soft_refit_bits_are_checked():
    from weightshare.errors import ConfigError
    from weightshare.train.recipes import TrainConfig

    for bad in ("fc1=x,3", "=2,3", "9", "fc1=2"):
        with pytest.raises(ConfigError, match="soft_refit_bits"):
            TrainConfig(sharing="soft", soft_refit_bits=bad)
    with pytest.raises(ConfigError, match=r"soft_refit \(--soft-refit\) must be"):
        TrainConfig(sharing="soft", soft_refit=-1)
    with pytest.raises(ConfigError, match=r"soft_refit_finetune \(--soft-refit-finetune\)"):
        TrainConfig(sharing="soft", soft_refit_finetune=-1)


def test_init_must_be_a_dense_file(tiny_mnist, tmp_path, capsys):
    dense, pruned = tmp_path / "dense.safetensors", tmp_path / "pruned.safetensors"
    train(["lenet300", "--epochs", "0.5"], tiny_mnist, dense, capsys)
    train(["lenet300", "--sharing", "prune-cluster", "--init", str(dense), "--prune-epochs",
           "0.5", "--finetune-epochs", "0"], tiny_mnist, pruned, capsys)
    out = tmp_path / "x.safetensors"
    code, _, err = run(["train", "lenet300", "--data", str(tiny_mnist), "--sharing", "soft",
                        "--init", str(pruned), "-o", str(out)], capsys)
    assert code == 1 and "holds zero-codebook weights, not a dense network" in err, err
    assert err.count("\n") == 1 and not out.exists()
    # another network's dense file: named before any data is read or training starts
    code, _, err = run(["train", "lenet5", "--data", str(tiny_mnist), "--sharing", "soft",
                        "--init", str(dense), "-o", str(out)], capsys)
    assert code == 1 and "holds a lenet300, not a lenet5" in err, err
    assert err.count("\n") == 1 and not out.exists()
    # a safetensors file that is not a weightshare file: no advice that would not help here
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    code, _, err = run(["train", "lenet300", "--data", str(tiny_mnist), "--sharing", "soft",
                        "--init", str(plain), "-o", str(out)], capsys)
    assert code == 1 and "not a weightshare file" in err and "--sharing none" in err, err
    assert "compress" not in err and err.count("\n") == 1 and not out.exists()
