"""The packed runtime form computes what the materialised model computes: exactly where a
layer decodes its weight (one tile, an embedding lookup), within float32 rounding on the
kernel paths (several tiles, the matrix-vector kernel) — the stated tolerance: the largest
difference at most 1e-5 of the output's largest magnitude."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import weightshare as ws
from tests.zoo import TinyLM, tiny_bert
from weightshare.methods.codebook.weight import attach_codebook
from weightshare.runtime import PackedCodebookWeight, PackedTensor, kernels, ops, to_runtime_

BACKENDS = ["torch"] + (["numba"] if kernels._load_numba() is not None else []) + (
    ["avx512"] if kernels._load_numba() is not None and kernels._load_avx512() else [])


def cluster(module: nn.Module, bits: int, granularity: str = "per_tensor", group_size: int = 1,
            axis: int = 0, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    shape = module.weight.shape
    rows = shape[axis]
    groups = {"per_tensor": 1, "per_channel": rows}.get(granularity, rows // group_size)
    codebook = torch.randn(groups, 1 << bits, generator=g)
    codes = torch.randint(0, 1 << bits, tuple(shape), generator=g, dtype=torch.int32)
    attach_codebook(module, codebook, codes, bits, granularity, group_size, axis)


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The stated tolerance of the kernel paths."""
    scale = float(b.detach().abs().max()) or 1.0
    return float((a - b).detach().abs().max()) <= 1e-5 * scale


def packed_and_dense(make) -> tuple[nn.Module, nn.Module]:
    """The model ``make()`` builds, packed, and the same model materialised (plain dense)."""
    return to_runtime_(make(), "packed"), ws.materialize_(make())


@pytest.fixture(params=BACKENDS)
def backend(request):
    with kernels.use(request.param):
        yield request.param


@pytest.mark.parametrize("bits,granularity,group_size", [
    (4, "per_tensor", 1), (3, "per_channel", 1), (2, "per_group", 4), (1, "per_tensor", 1),
    (5, "per_group", 2), (8, "per_channel", 1), (11, "per_tensor", 1)])
@pytest.mark.parametrize("batch", [1, 3, 40])
def test_linear(backend, bits, granularity, group_size, batch):
    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(21, 12), nn.ReLU(), nn.Linear(12, 8))  # 21*bits ragged
        cluster(model[0], bits, granularity, group_size)
        cluster(model[2], bits, granularity, group_size, seed=1)
        return model

    packed, dense = packed_and_dense(make)
    assert isinstance(packed[0].weight, PackedTensor)
    x = torch.randn(batch, 21)
    with torch.inference_mode():
        assert close(packed(x), dense(x))


def test_linear_in_tiles_and_3d_inputs(backend, monkeypatch):
    monkeypatch.setattr(ops, "TILE_ELEMS", 40)  # 40 // 16 = 2 rows per tile
    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(16, 9))
        cluster(model[0], 4, "per_group", 3)
        return model

    packed, dense = packed_and_dense(make)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        assert close(packed(x), dense(x))


def test_one_tile_is_exact(backend):
    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(32, 24))
        cluster(model[0], 4)
        return model

    packed, dense = packed_and_dense(make)
    x = torch.randn(ops.MATVEC_MAX_ROWS + 1, 32)  # more rows than the kernel path takes
    assert torch.equal(packed(x), dense(x))


@pytest.mark.parametrize("padding_idx", [None, 3])
def test_embedding_decodes_only_rows_asked_for(backend, padding_idx):
    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Embedding(50, 12, padding_idx=padding_idx))
        cluster(model[0], 3, "per_group", 5)
        return model

    packed, dense = packed_and_dense(make)
    ids = torch.randint(0, 50, (4, 7))
    ids[0, 0] = 3
    assert torch.equal(packed(ids), dense(ids))
    with pytest.raises(IndexError):
        packed(torch.tensor([50]))


@pytest.mark.parametrize("conv,groups", [(nn.Conv1d, 1), (nn.Conv2d, 1), (nn.Conv2d, 2),
                                         (nn.Conv3d, 1)])
def test_convolutions(backend, conv, groups, monkeypatch):
    def make():
        torch.manual_seed(0)
        model = nn.Sequential(conv(4, 6, 3, padding=1, groups=groups))
        cluster(model[0], 3, "per_channel")
        return model

    packed, dense = packed_and_dense(make)
    x = torch.randn(2, 4, *([5] * (dense[0].weight.dim() - 2)))
    assert close(packed(x), dense(x))
    monkeypatch.setattr(ops, "TILE_ELEMS", 40)  # tiles of whole groups of output channels
    assert close(packed(x), dense(x))
    assert close(packed(x[0]), dense(x[0]))  # unbatched


def test_transformers_conv1d_per_output_column(backend):
    transformers = pytest.importorskip("transformers")
    def make():
        torch.manual_seed(0)
        model = nn.Sequential(transformers.pytorch_utils.Conv1D(10, 6))  # weight (6 in, 10 out)
        cluster(model[0], 4, "per_channel", axis=1)
        return model

    packed, dense = packed_and_dense(make)
    form = packed[0].parametrizations.weight[0]
    assert (form.rows, form.cols) == (10, 6)
    x = torch.randn(3, 6)
    assert close(packed(x), dense(x))
    assert torch.equal(packed[0].weight @ torch.eye(10), dense[0].weight)  # dense fallback


def test_tied_embedding_and_head_packed_once(backend):
    def make():
        torch.manual_seed(0)
        return ws.cluster_(TinyLM(), ws.ClusterConfig(bits=4, min_size=0))

    packed, dense = packed_and_dense(make)
    forms = {id(m.parametrizations.weight[0]) for m in (packed.emb, packed.head)}
    assert len(forms) == 1 and ws.find_ties(packed)[0] == ["emb.weight", "head.weight"]
    ids = torch.randint(0, 50, (2, 6))
    assert close(packed(ids), dense(ids))


def test_tiny_bert_and_materialize(backend):
    pytest.importorskip("transformers")
    from tests.zoo import bert_inputs

    model = tiny_bert()
    ws.cluster_(model, ws.ClusterConfig(bits=4, granularity="per_channel", min_size=0,
                                        exclude=("word_emb", "intermediate")))
    ws.cluster_(model, ws.ClusterConfig(bits=3, include=("word_emb", "intermediate"),
                                        min_size=0))
    reference = model(**bert_inputs()).last_hidden_state
    packed = to_runtime_(model, "packed")
    with torch.inference_mode():
        assert close(packed(**bert_inputs()).last_hidden_state, reference)
    ws.materialize_(packed)
    assert not any(isinstance(p, PackedTensor) for p in packed.parameters())
    assert close(packed(**bert_inputs()).last_hidden_state, reference)


def test_forms_convert_both_ways_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(13, 6), nn.Conv2d(3, 4, 3))
    cluster(model[0], 3, "per_group", 2)
    cluster(model[1], 5, "per_channel", axis=1)
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    to_runtime_(model, "packed")
    assert isinstance(model[1].parametrizations.weight[0], PackedCodebookWeight)
    to_runtime_(model, "train")
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_packed_weights_are_read_only():
    model = nn.Sequential(nn.Linear(8, 8))
    cluster(model[0], 2)
    to_runtime_(model, "packed")
    with pytest.raises(ws.WeightShareError, match="read-only.*to_runtime_"):
        model[0].weight = torch.zeros(8, 8)


def test_packed_memory_is_the_codes():
    model = nn.Sequential(nn.Linear(64, 48))
    cluster(model[0], 4)
    to_runtime_(model, "packed")
    form = model[0].parametrizations.weight[0]
    assert form.codes.numel() == 48 * 64 // 2
