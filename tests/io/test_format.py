"""Save/load of weightshare files: round trips are bit-identical, ties share storage,
and every broken, truncated or hostile file gives a one-line FormatError."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import parametrize

from weightshare.core.ties import get_tie_map
from weightshare.errors import FormatError, TieError, WeightShareError
from weightshare.io import load, read_metadata, read_tensors, save, unpack_codes, validate_metadata
from weightshare.io import write as ser
from weightshare.io.container import checksum, tensor_bytes
from weightshare.methods.codebook.weight import attach_codebook, codebook_of


class LM(nn.Module):
    """Tied input/output embeddings, a body and a persistent buffer."""

    def __init__(self, vocab: int = 20, dim: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.body = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight
        self.register_buffer("scale", torch.tensor([0.5]))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(self.emb(ids))) * self.scale)


def mlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 6)).to(dtype)


def cluster(module: nn.Module, bits: int = 3, granularity: str = "per_tensor",
            group_size: int = 1, axis: int = 0, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    shape = module.weight.shape
    rows = shape[axis]
    groups = {"per_tensor": 1, "per_channel": rows}.get(granularity, rows // group_size)
    codebook = torch.randn(groups, 1 << bits, generator=g).to(module.weight.dtype)
    codes = torch.randint(0, 1 << bits, tuple(shape), generator=g, dtype=torch.uint8)
    attach_codebook(module, codebook, codes, bits, granularity, group_size, axis)


def keys(path: os.PathLike) -> set[str]:
    with safe_open(str(path), "pt") as f:
        return set(f.keys())


def rewrite(path: os.PathLike, meta_fn=None, tensors_fn=None) -> None:
    """Re-save a file with its metadata and/or tensors changed (to forge broken files); the
    checksums are those of the forged tensors, as a forger would write them."""
    with safe_open(str(path), "pt") as f:
        strings = f.metadata()
    tensors = load_file(str(path))
    meta = json.loads(strings["weightshare"])
    if tensors_fn:
        tensors_fn(tensors)
    if "checksums" in meta:
        meta["checksums"] = {n: checksum(tensor_bytes(t)) for n, t in tensors.items()}
    if meta_fn:
        meta_fn(meta)
    save_file(tensors, str(path), metadata={"weightshare": json.dumps(meta)})


def fails(path: os.PathLike, match: str, model: nn.Module | None = None,
          error: type[Exception] = FormatError) -> None:
    with pytest.raises(error, match=match) as info:
        load(path, model if model is not None else mlp())
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("granularity,group_size,bits,dtype", [
    ("per_tensor", 1, 4, torch.float32), ("per_channel", 1, 3, torch.float32),
    ("per_group", 4, 1, torch.float16), ("per_group", 8, 8, torch.bfloat16),
])
def test_mlp_round_trip_is_bit_identical(tmp_path, granularity, group_size, bits, dtype):
    model = mlp(dtype=dtype)
    cluster(model[0], bits, granularity, group_size)
    path = save(model, tmp_path / "m.safetensors", extra={"tokenizer": "minilm"})
    assert keys(path) == {"0.weight.codebook", "0.weight.codes", "0.bias", "2.weight", "2.bias"}
    meta = read_metadata(path)
    assert meta["schemes"]["0.weight"] == {
        "kind": "codebook", "version": 1, "bits": bits, "granularity": granularity,
        "group_size": {"per_tensor": 16, "per_channel": 1}.get(granularity, group_size),
        "axis": 0, "shape": [16, 12], "dtype": str(dtype).removeprefix("torch.")}
    assert meta["extra"] == {"tokenizer": "minilm"} and meta["format_version"] == 3
    assert meta["model"] == {"source": "torch", "class": "torch.nn.modules.container.Sequential"}
    loaded = load(path, mlp(seed=1, dtype=dtype))
    assert not loaded.training
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert torch.equal(model[0].weight, loaded[0].weight)
    x = torch.randn(5, 12).to(dtype)
    assert torch.equal(model.eval()(x), loaded(x))
    assert len(torch.unique(loaded[0].weight)) <= (1 << bits) * model[0].weight.shape[0]


def test_embedding_and_conv_codebooks(tmp_path):
    torch.manual_seed(0)
    model = nn.ModuleDict({"emb": nn.Embedding(30, 8), "conv": nn.Conv2d(3, 6, 3)})
    cluster(model["emb"], 2, "per_group", 10)
    cluster(model["conv"], 5, "per_channel")
    loaded = load(save(model, tmp_path / "m.safetensors"),
                  nn.ModuleDict({"emb": nn.Embedding(30, 8), "conv": nn.Conv2d(3, 6, 3)}))
    assert read_metadata(tmp_path / "m.safetensors")["schemes"]["conv.weight"]["shape"] == [
        6, 3, 3, 3]
    x = torch.randn(2, 3, 7, 7)
    assert torch.equal(model["conv"](x), loaded["conv"](x))
    assert torch.equal(model["emb"].weight, loaded["emb"].weight)


def test_codebook_matches_the_spec_expansion(tmp_path):
    """A reader that knows only docs/format.md rebuilds the same weight."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3)
    cluster(conv, 3, "per_group", 2, axis=1)
    path = save(nn.Sequential(conv), tmp_path / "m.safetensors")
    s = read_metadata(path)["schemes"]["0.weight"]
    stored = read_tensors(path)
    codes = unpack_codes(stored["0.weight.codes"], s["bits"], 6 * 4 * 9).reshape(s["shape"])
    rows = torch.arange(s["shape"][s["axis"]]).reshape(1, -1, 1, 1) // s["group_size"]
    dense = stored["0.weight.codebook"][rows.expand(s["shape"]), codes.long()]
    assert torch.equal(dense, conv.weight)


def test_tied_embeddings_stored_once_and_shared_after_load(tmp_path):
    torch.manual_seed(0)
    model = LM()
    path = save(model, tmp_path / "lm.safetensors")
    assert keys(path) == {"emb.weight", "body.weight", "body.bias", "scale"}
    assert read_metadata(path)["ties"] == {"head.weight": "emb.weight"}
    skeleton = LM()
    skeleton.head.weight = nn.Parameter(torch.zeros(20, 8))  # untied: load restores the tie
    loaded = load(path, skeleton)
    assert loaded.head.weight.data_ptr() == loaded.emb.weight.data_ptr()
    assert [n for n, _ in loaded.named_parameters()] == ["emb.weight", "body.weight", "body.bias"]
    assert get_tie_map(loaded) == {"head.weight": "emb.weight"}
    ids = torch.randint(0, 20, (3, 5))
    assert torch.equal(model(ids), loaded(ids))


def test_meta_device_skeleton(tmp_path):
    torch.manual_seed(0)
    model = LM()
    cluster(model.body, 4, "per_channel")
    path = save(model, tmp_path / "lm.safetensors")
    skeleton = LM().to("meta")  # (torch.device("meta") costs seconds of decomposition imports)
    assert skeleton.emb.weight.is_meta
    loaded = load(path, skeleton)
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    assert loaded.head.weight is loaded.emb.weight
    ids = torch.randint(0, 20, (2, 4))
    assert torch.equal(model(ids), loaded(ids))


def share_codebook_weight(src: nn.Module, dst: nn.Module) -> None:
    """Make ``dst.weight`` the same codebook weight as ``src.weight`` (codes and codebook)."""
    cw, codebook = codebook_of(src)
    dst._parameters["weight"] = nn.Parameter(torch.zeros_like(src.weight))
    parametrize.register_parametrization(dst, "weight", cw, unsafe=True)
    dst.parametrizations.weight.original = codebook


def test_tied_codebook_weights(tmp_path):
    torch.manual_seed(0)
    model = LM()
    model.head.weight = nn.Parameter(model.emb.weight.detach().clone())
    cluster(model.emb, 3)
    share_codebook_weight(model.emb, model.head)
    path = save(model, tmp_path / "lm.safetensors")
    assert keys(path) == {"emb.weight.codebook", "emb.weight.codes", "body.weight", "body.bias",
                          "scale"}
    assert read_metadata(path)["ties"] == {"head.weight": "emb.weight"}
    loaded = load(path, LM())
    (cw_e, cb_e), (cw_h, cb_h) = codebook_of(loaded.emb), codebook_of(loaded.head)
    assert cb_e is cb_h and cw_e.codes is cw_h.codes
    ids = torch.randint(0, 20, (2, 4))
    assert torch.equal(model.eval()(ids), loaded(ids))


def test_codebook_shared_across_layers(tmp_path):
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    cluster(model[0], 2, seed=1)
    cluster(model[1], 2, seed=2)
    model[1].parametrizations.weight.original = model[0].parametrizations.weight.original
    path = save(model, tmp_path / "m.safetensors")
    assert "1.weight.codebook" not in keys(path) and "1.weight.codes" in keys(path)
    assert read_metadata(path)["ties"] == {"1.weight.codebook": "0.weight.codebook"}
    loaded = load(path, nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)))
    assert codebook_of(loaded[0])[1] is codebook_of(loaded[1])[1]
    assert torch.equal(loaded[1].weight, model[1].weight)


def test_file_decides_over_the_skeletons_own_codebooks(tmp_path):
    dense, clustered = mlp(seed=0), mlp(seed=1)
    cluster(clustered[2], 2, seed=5)
    cluster(clustered[0], 6, "per_channel", seed=5)
    dense_path = save(dense, tmp_path / "dense.safetensors")
    loaded = load(dense_path, clustered)  # a codebook skeleton takes dense weights
    assert not parametrize.is_parametrized(loaded[0]) and torch.equal(loaded[2].weight,
                                                                       dense[2].weight)
    cluster(dense[0], 3, seed=9)
    loaded = load(save(dense, tmp_path / "c.safetensors"), mlp(seed=3))
    assert torch.equal(load(tmp_path / "c.safetensors", loaded)[0].weight, dense[0].weight)


def test_transformers_model_rebuilt_from_config(tmp_path):
    pytest.importorskip("transformers")
    models = pytest.importorskip("weightshare.models")
    if not hasattr(models, "model_from_config"):
        pytest.skip("weightshare.models.model_from_config not available")
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=37, vocab_size=99))
    cluster(model.encoder.layer[1].attention.self.query, 4, "per_group", 8)
    path = save(model, tmp_path / "bert.safetensors")
    meta = read_metadata(path)
    assert meta["model"]["source"] == "transformers" and meta["model"]["class"] == "BertModel"
    assert meta["model"]["config"]["intermediate_size"] == 37
    loaded = load(path)
    ids = torch.randint(0, 99, (2, 7))
    assert torch.equal(model.eval()(ids).last_hidden_state, loaded(ids).last_hidden_state)


def test_read_tensors_is_lazy_and_counts_bytes(tmp_path):
    model = mlp()
    cluster(model[0], 3)
    path = save(model, tmp_path / "m.safetensors")
    stored = read_tensors(path)
    assert stored.infos["0.weight.codes"].nbytes == (16 * 12 * 3 + 7) // 8
    assert stored.infos["0.weight.codebook"].shape == (1, 8)
    assert torch.equal(stored["2.bias"], model[2].bias.detach())
    assert set(stored) == keys(path) and len(stored) == 5


def test_jsonable_config_values():
    value = {"dtype": torch.float16, "ids": (1, 2), "f": print, "x": float("nan"), "n": None,
             "k": np.int64(3), "nested": {"inf": [float("inf"), 1.5]}}
    assert ser.jsonable(value) == {"dtype": "float16", "ids": [1, 2], "n": None, "k": 3,
                                   "nested": {"inf": [None, 1.5]}}


# ---------------------------------------------------------------- errors

def test_missing_file_and_directory(tmp_path):
    fails(tmp_path / "nope.safetensors", "no such file")
    fails(tmp_path, "not a file")


@pytest.mark.parametrize("junk", [b"", b"abc", os.urandom(4096), b"\x05" + b"\0" * 7 + b"[1,2]"])
def test_junk_files(tmp_path, junk):
    (tmp_path / "junk.bin").write_bytes(junk)
    fails(tmp_path / "junk.bin", "not a safetensors file|header")


def test_plain_safetensors_is_not_a_weightshare_file(tmp_path):
    save_file(mlp().state_dict(), str(tmp_path / "plain.safetensors"))
    fails(tmp_path / "plain.safetensors", "not a weightshare file")


@pytest.fixture
def saved(tmp_path):
    model = mlp()
    cluster(model[0], 3, "per_group", 4)
    return save(model, tmp_path / "m.safetensors")


def test_truncated_files(saved):
    data = saved.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    for cut in (0, 3, 8, 9, header_end // 2, header_end - 1, header_end, header_end + 5,
                (header_end + len(data)) // 2, len(data) - 1):
        saved.write_bytes(data[:cut])
        fails(saved, "truncated|not a safetensors")
        with pytest.raises(FormatError):
            read_metadata(saved)


def test_corrupt_header_and_forged_sizes(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[:8] + b"x" + data[9:])
    fails(saved, "not valid JSON")
    saved.write_bytes((2**60).to_bytes(8, "little") + data[8:])
    fails(saved, "over the 100000000-byte limit")
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header["2.bias"]["shape"] = [2**40, 2**40]  # a forged size must not allocate
    forged = json.dumps(header).encode()
    saved.write_bytes(len(forged).to_bytes(8, "little") + forged + data[8 + n:])
    fails(saved, "2.bias")


@pytest.mark.parametrize("mutate,match", [
    (lambda m: m.update(format_version=4, library_version="9.1"),
     "format_version 4, written by weightshare 9.1.*reads format versions 1 to 3.*open it with "
     "weightshare 9.1 or later"),
    (lambda m: m.update(format_version=4), "format_version 4, written by a newer weightshare"),
    (lambda m: m["schemes"]["0.weight"].update(version=2),
     "kind 'codebook' version 2 was written by a newer weightshare.*up to version 1"),
    (lambda m: m["schemes"]["0.weight"].pop("version"), "version 'None' is not"),
    (lambda m: m.update(format_version="1"), "not an integer"),
    (lambda m: m["schemes"]["0.weight"].update(bits=17), "bits is 17"),
    (lambda m: m["schemes"]["0.weight"].update(bits=True), "bits is True"),
    (lambda m: m["schemes"]["0.weight"].update(kind="vq"), "kind 'vq'.*not know.*upgrade"),
    (lambda m: m["schemes"]["0.weight"].update(kind=["codebook"]), "kind \\['codebook'\\]"),
    (lambda m: m["schemes"]["0.weight"].update(axis="0"), "axis 0 is not a dimension"),
    (lambda m: m["schemes"]["0.weight"].update(group_size=5), "group_size 5"),
    (lambda m: m["schemes"]["0.weight"].update(shape=[16, 0]), "shape"),
    (lambda m: m["schemes"]["0.weight"].update(granularity="rows"), "granularity"),
    (lambda m: m["schemes"]["0.weight"].update(dtype="int8"), "dtype"),
    (lambda m: m["schemes"]["0.weight"].update(shape=[16, 13]), "'0.weight.codes' must be U8"),
    (lambda m: m["ties"].update({"x.weight": "nowhere.weight"}), "does not store"),
    (lambda m: m["ties"].update({"2.bias": "0.bias"}), "alias '2.bias' is also stored"),
    (lambda m: m.update(extra=[]), "extra"),
    (lambda m: m.update(surprise=1), "unknown"),
    (lambda m: m.pop("ties"), "missing"),
    (lambda m: m.update(model={"source": "pickle"}), "model.source"),
    (lambda m: m.update(model={"source": "transformers", "class": "os.system",
                               "config": {}}), "not a class name"),
])
def test_invalid_metadata(saved, mutate, match):
    rewrite(saved, meta_fn=mutate)
    fails(saved, match)


@pytest.mark.parametrize("mutate,match", [
    (lambda t: t.update({"0.weight.codes": t["0.weight.codes"][:-1]}),
     "'0.weight.codes' must be U8 \\[72\\], got U8 \\[71\\]"),
    (lambda t: t.pop("0.weight.codebook"), "'0.weight' lacks its tensor '0.weight.codebook'"),
    (lambda t: t.update({"0.weight.codebook": t["0.weight.codebook"].double()}),
     "'0.weight.codebook' must be F32"),
    (lambda t: t.update({"0.weight": torch.zeros(16, 12)}), "both dense and as a shared weight"),
    (lambda t: t.update({"0.weight.extra": torch.zeros(1)}), "stray tensor"),
])
def test_invalid_tensors(saved, mutate, match):
    rewrite(saved, tensors_fn=mutate)
    fails(saved, match)


def test_model_mismatches(saved, tmp_path):
    fails(saved, "holds tensors the model lacks: 2.bias, 2.weight",
          model=nn.Sequential(nn.Linear(12, 16)))
    wrong = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 7))
    fails(saved, r"'2.bias' has shape \[6\] in .* but \[7\] in the model", model=wrong)
    assert not parametrize.is_parametrized(wrong[0])  # a failed load leaves the model as it was
    with pytest.raises(FormatError, match="plain torch model.*pass model="):
        load(saved)
    plain = save(nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 6)), tmp_path / "p.safetensors")
    one = nn.Linear(6, 6)
    fails(plain, "shares 1.bias with 0.bias", model=nn.Sequential(one, one), error=TieError)
    tied = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 6))
    tied[1].bias = tied[0].bias  # the file stores two biases: the skeleton's tie gives way
    assert load(plain, tied)[1].bias is not tied[0].bias
    lm_path = save(LM(), tmp_path / "lm.safetensors")
    skeleton = LM()
    del skeleton.head.weight
    skeleton.head.register_buffer("weight", torch.zeros(20, 8))
    fails(lm_path, "'head.weight' is a buffer in the model but .* ties it to 'emb.weight'",
          model=skeleton)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_byte_damage_never_crashes(saved, data):
    raw = bytearray(saved.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    damaged = saved.with_name("damaged.safetensors")
    damaged.write_bytes(bytes(raw))
    try:
        load(damaged, mlp())
    except WeightShareError as e:
        assert "\n" not in str(e)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 20) | st.floats(allow_nan=False)
    | st.sampled_from(["0.weight", "0.bias", "per_group", "float32", "codebook", "torch", ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3), max_leaves=6)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_metadata_value_is_validated_never_crashes(saved, data):
    stored = read_tensors(saved)
    meta = json.loads(json.dumps(stored.metadata))
    node, key = meta, data.draw(st.sampled_from(sorted(meta)))
    while isinstance(node[key], dict) and node[key] and data.draw(st.booleans()):
        node, key = node[key], data.draw(st.sampled_from(sorted(node[key])))
    node[key] = data.draw(JSON)
    try:
        validate_metadata(meta, stored.infos)
    except FormatError as e:
        assert "\n" not in str(e)


# ---------------------------------------------------------------- writing

def test_missing_parent_directory(tmp_path):
    with pytest.raises(WeightShareError, match="directory .*nope does not exist; create it"):
        save(mlp(), tmp_path / "nope" / "m.safetensors")


def test_written_file_has_the_usual_mode(tmp_path):
    path = save(mlp(), tmp_path / "m.safetensors")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    target = tmp_path / "m.safetensors"
    save(mlp(seed=0), target)
    before = target.read_bytes()

    def half_write(f, entries, meta):
        f.write(b"partial")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ser, "_write", half_write)
    with pytest.raises(RuntimeError, match="disk on fire"):
        save(mlp(seed=1), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]

    def no_space(f, entries, meta):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ser, "_write", no_space)
    with pytest.raises(ser.SaveError, match="No space left"):
        save(mlp(seed=1), tmp_path / "new.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_save_refuses_what_it_cannot_store(tmp_path):
    with pytest.raises(ser.SaveError, match="JSON"):
        save(mlp(), tmp_path / "m.safetensors", extra={"f": {1, 2}.__iter__()})
    model = mlp()
    parametrize.register_parametrization(model[0], "weight", nn.Identity())
    with pytest.raises(ser.SaveError, match="Identity.*cannot store"):
        save(model, tmp_path / "m.safetensors")
    assert not any(tmp_path.iterdir())
