"""The public surface is fixed (DESIGN.md): other code calls these names."""

from __future__ import annotations

import torch

import weightshare as ws


def test_public_names():
    assert set(ws.__all__) == {
        "ClusterConfig", "Report", "TieConfig", "WeightShareError", "__version__", "cluster_",
        "distill_", "finetune_codebooks_", "find_ties", "inspect", "kmeans1d", "load",
        "materialize_", "merge_", "retie_", "save", "share_", "study", "tie_", "to_runtime_",
        "untie_", "verify_ties",
        # training with sharing (issue 11)
        "HashConfig", "PruneConfig", "SoftSharingPrior", "evaluate", "fit", "hash_", "nn",
        "prune_", "reshare", "soft_to_codebook_", "unshare"}
    assert {"HashedLinear", "HashedConv2d", "LocallyConnected2d", "UnsharedRNN",
            "UnsharedGRU"} <= set(ws.nn.__all__)


# DESIGN.md's fixed signatures: other code calls these keywords
SIGNATURES = {
    "cluster_": ["model", "config", "calibration"],
    "kmeans1d": ["values", "k", "weights", "method"],
    "tie_": ["model", "config"],
    "untie_": ["model"],
    "find_ties": ["model"],
    "save": ["model", "path"],
    "load": ["path", "model"],
    "inspect": ["model_or_path"],
    "share_": ["model"],
    "materialize_": ["model"],
    "hash_": ["model", "ratio"],
    "prune_": ["model", "sparsity"],
    "soft_to_codebook_": ["model", "prior"],
    "unshare": ["model", "example_input"],
    "finetune_codebooks_": ["model", "teacher", "data"],
}


def test_fixed_signatures_and_runnable_examples():
    import inspect

    for name, params in SIGNATURES.items():
        got = list(inspect.signature(getattr(ws, name)).parameters)
        assert got[:len(params)] == params, name
    for name in ws.__all__:
        obj = getattr(ws, name)
        if callable(obj) and not isinstance(obj, type(ws.WeightShareError)):
            assert ">>>" in (obj.__doc__ or ""), f"ws.{name} has no runnable example"
    for attr in ("total_params", "unique_params", "dense_bytes", "stored_bytes", "rows"):
        assert hasattr(ws.inspect(torch.nn.Linear(2, 2)), attr)
    assert callable(ws.Report.to_dict)


def test_readme_api_flow_on_a_tiny_stack(tmp_path):
    # the README's ten lines, on a model small enough for a unit test
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(32, 32) for _ in range(4)])
    x = torch.randn(3, 32)
    ws.tie_(model, ws.TieConfig(strategy="cycle", unique=2))
    ws.cluster_(model, ws.ClusterConfig(bits=4, granularity="per_group", group_size=16,
                                        min_size=0))
    ws.save(model, tmp_path / "m.safetensors")
    skeleton = torch.nn.Sequential(*[torch.nn.Linear(32, 32) for _ in range(4)])
    loaded = ws.load(tmp_path / "m.safetensors", skeleton)
    assert torch.equal(loaded(x), model(x))
    assert ws.find_ties(loaded) == ws.find_ties(model) != []
    report = ws.inspect(tmp_path / "m.safetensors")
    assert report.total_params == ws.inspect(model).total_params
