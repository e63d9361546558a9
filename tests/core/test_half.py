"""fp16 and bf16 models throughout: cluster, tie, save, load, fine-tune; codebooks in the
model's dtype; ties kept."""

from __future__ import annotations

import pytest
import torch

import weightshare as ws
from tests.zoo import TinyLM


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_tied_half_model_round_trip(dtype, tmp_path):
    torch.manual_seed(0)
    model = TinyLM().to(dtype)
    dense = ws.inspect(model).dense_bytes
    assert dense == 2 * sum(p.numel() for p in model.parameters())  # 2 bytes a value
    ws.cluster_(model, ws.ClusterConfig(bits=3, min_size=0))
    assert model.head.weight is model.emb.weight or model.head.parametrizations is \
        model.emb.parametrizations or ws.find_ties(model)
    codebook = model.emb.parametrizations.weight.original
    assert codebook.dtype == dtype and model.emb.weight.unique().numel() <= 8
    ids = torch.randint(0, 50, (2, 7))
    want = model(ids)
    path = ws.save(model, tmp_path / "m.safetensors")
    back = ws.load(path, TinyLM().to(dtype))
    assert torch.equal(back(ids), want) and ws.find_ties(back)
    assert ws.inspect(path).dense_bytes == dense == ws.inspect(back).dense_bytes
    # fine-tune: the codebook (one tensor for both tied places) trains in the model's dtype
    opt = torch.optim.SGD(back.parameters(), lr=0.1)
    before = back.emb.parametrizations.weight.original.detach().clone()
    back(ids).float().pow(2).mean().backward()
    opt.step()
    after = back.emb.parametrizations.weight.original
    assert after.dtype == dtype and not torch.equal(after, before)
    assert back.head.weight.unique().numel() <= 8


def test_tie_half_model():
    model = torch.nn.Sequential(*[torch.nn.Linear(16, 16) for _ in range(4)]).to(torch.bfloat16)
    ws.tie_(model, ws.TieConfig(strategy="cycle", unique=2, init="mean"))
    assert model[0].weight is model[2].weight and model[0].weight.dtype == torch.bfloat16
    ws.cluster_(model, ws.ClusterConfig(bits=2, min_size=0))
    assert model(torch.randn(3, 16, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_float32_codebooks_of_a_bf16_model(tmp_path):
    torch.manual_seed(0)
    model = TinyLM().to(torch.bfloat16)
    ws.cluster_(model, ws.ClusterConfig(bits=3, min_size=0, codebook_dtype="float32"))
    codebook = model.emb.parametrizations.weight.original
    assert codebook.dtype == torch.float32 and model.emb.weight.dtype == torch.bfloat16
    ids = torch.randint(0, 50, (2, 7))
    want = model(ids)
    assert want.dtype == torch.bfloat16
    path = ws.save(model, tmp_path / "m.safetensors")
    back = ws.load(path, TinyLM().to(torch.bfloat16))
    assert torch.equal(back(ids), want)
    assert back.emb.parametrizations.weight.original.dtype == torch.float32
    packed = ws.load(path, TinyLM().to(torch.bfloat16), runtime="packed")
    assert torch.equal(packed(ids), want)  # the packed form computes in bf16 too
    assert ws.save(packed, tmp_path / "again.safetensors").read_bytes() == path.read_bytes()
    with pytest.raises(ws.WeightShareError, match="codebook_dtype"):
        ws.ClusterConfig(codebook_dtype="int8")


def test_rows_count_the_dense_dtype_of_float32_codebooks(tmp_path):
    # a bf16 weight kept as a float32 codebook is a bf16 weight: 2 bytes each, dense
    model = TinyLM().to(torch.bfloat16)
    ws.cluster_(model, ws.ClusterConfig(bits=3, min_size=0, codebook_dtype="float32"))
    path = ws.save(model, tmp_path / "m.safetensors")
    for report in (ws.inspect(model), ws.inspect(path)):
        row = next(r for r in report.rows if r.name == "emb.weight")
        assert row.dtype == "bfloat16" and row.dense_bytes == 2 * model.emb.weight.numel()
