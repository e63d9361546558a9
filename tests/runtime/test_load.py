"""weightshare.load(path, runtime="packed"): codes stay packed in memory (the model holds
about the file's bytes), for transformers models rebuilt from their config and plain
torch models given a skeleton, from fixed-width and entropy-coded files."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

import weightshare as ws
from tests.zoo import TinyLM, needs_minilm
from weightshare.runtime import PackedCodebookWeight, PackedTensor


def held_bytes(model: nn.Module) -> int:
    """Bytes of every tensor the model holds (parameters and buffers, each once)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


@pytest.mark.parametrize("entropy", [False, True])
def test_plain_torch_model_packed_from_a_file(tmp_path, entropy):
    if entropy:
        pytest.importorskip("constriction")
    torch.manual_seed(0)
    model = ws.cluster_(TinyLM(vocab=400, dim=64), ws.ClusterConfig(bits=3, min_size=0))
    path = ws.save(model, tmp_path / "lm.safetensors", entropy=entropy)
    packed = ws.load(path, TinyLM(vocab=400, dim=64), runtime="packed")
    assert isinstance(packed.emb.weight, PackedTensor)
    assert packed.head.parametrizations.weight[0] is packed.emb.parametrizations.weight[0]
    assert held_bytes(packed) <= path.stat().st_size
    ids = torch.randint(0, 400, (3, 7))
    with torch.inference_mode():
        out = packed(ids)
    assert torch.allclose(out, model.eval()(ids), atol=1e-5, rtol=1e-5)


def test_transformers_model_packed_without_a_skeleton(tmp_path):
    pytest.importorskip("transformers")
    from tests.zoo import bert_inputs, tiny_bert

    model = ws.cluster_(tiny_bert(), ws.ClusterConfig(bits=4, min_size=0,
                                                      exclude=("token_type",)))
    path = ws.save(model, tmp_path / "bert.safetensors")
    packed = ws.load(path, runtime="packed")
    forms = [m.parametrizations.weight[0] for m in packed.modules()
             if hasattr(m, "parametrizations")]
    assert forms and all(isinstance(f, PackedCodebookWeight) for f in forms)
    assert held_bytes(packed) <= path.stat().st_size  # no dense copy of any shared weight
    with torch.inference_mode():
        out = packed(**bert_inputs()).last_hidden_state
    with torch.no_grad():
        reference = model(**bert_inputs()).last_hidden_state
    assert float((out - reference).abs().max()) <= 1e-5 * float(reference.abs().max())
    dense = ws.materialize_(packed)
    assert not any(isinstance(p, PackedTensor) for p in dense.parameters())
    assert torch.allclose(dense(**bert_inputs()).last_hidden_state, reference, atol=1e-5)


def test_runtime_is_checked_before_reading(tmp_path):
    with pytest.raises(ws.WeightShareError, match="runtime must be one of"):
        ws.load(tmp_path / "missing.safetensors", runtime="fast")


def test_relaxed_weights_keep_their_training_form(tmp_path):
    from tests.zoo import stack_net

    model = ws.tie_(stack_net(n=3), ws.TieConfig(strategy="all", rank=2))
    path = ws.save(model, tmp_path / "r.safetensors")
    loaded = ws.load(path, stack_net(seed=1, n=3), runtime="packed")
    x = torch.randn(2, 8)
    assert torch.equal(loaded(x), model.eval()(x))


@needs_minilm
@pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="needs numba")
def test_minilm_packed_equals_materialised(tmp_path):
    from weightshare.data.sentences import eval_sentences
    from weightshare.models import load_model

    lm = load_model("minilm")
    ws.cluster_(lm.model, ws.ClusterConfig(bits=4, method="fast"))
    path = ws.save(lm.model, tmp_path / "m4.safetensors")
    batch = dict(lm.tokenizer(eval_sentences()[:8], return_tensors="pt", padding=True))
    with torch.inference_mode():
        reference = ws.materialize_(lm.model)(**batch).last_hidden_state
        packed = ws.load(path, runtime="packed")
        out = packed(**batch).last_hidden_state
    assert held_bytes(packed) <= path.stat().st_size
    assert float((out - reference).abs().max()) <= 1e-5 * float(reference.abs().max())
