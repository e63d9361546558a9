"""Integrity: every flipped data byte detected, reproducible bytes, no stale temporary files,
versions refused with who can read them, forged configs refused before anything is built,
a rejected load leaves the model as it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import weightshare as ws
from tests.zoo import TinyLM
from weightshare.errors import FormatError, WeightShareError
from weightshare.io import read_metadata
from weightshare.io.atomic import TEMP_SUFFIX, clean_stale
from weightshare.io.container import checksum
from weightshare.io.header import read_header

ROOT = Path(__file__).resolve().parents[2]


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    ws.cluster_(model, ws.ClusterConfig(bits=3, include=("^0$",), min_size=0))
    return model


def snapshot(model: nn.Module) -> list:
    """Everything a load could change: names, objects, values, parametrizations."""
    state = model.state_dict(keep_vars=True)
    return [(n, id(t), t.detach().clone()) for n, t in state.items()] + [
        (n, type(m).__name__, sorted(getattr(m, "parametrizations", {}) or {}))
        for n, m in model.named_modules()]


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        x[:2] == y[:2] and (torch.equal(x[2], y[2]) if isinstance(x[2], torch.Tensor)
                            else x[2] == y[2]) for x, y in zip(a, b))


def data_range(path: Path) -> range:
    raw = path.read_bytes()
    return range(8 + int.from_bytes(raw[:8], "little"), len(raw))


def test_every_flipped_data_byte_is_detected(tmp_path):
    path = ws.save(tiny(), tmp_path / "m.safetensors")
    raw = path.read_bytes()
    skeleton = tiny(seed=1)
    before = snapshot(skeleton)
    for i in data_range(path):
        damaged = bytearray(raw)
        damaged[i] ^= 0x01 << (i % 8)
        path.write_bytes(bytes(damaged))
        with pytest.raises(FormatError, match="does not match its checksum"):
            ws.load(path, skeleton)
    assert same(snapshot(skeleton), before)  # no rejected load touched it


def test_checksums_cover_every_tensor(tmp_path):
    path = ws.save(TinyLM(), tmp_path / "lm.safetensors")
    infos, _ = read_header(path)
    sums = read_metadata(path)["checksums"]
    assert set(sums) == set(infos)
    raw = path.read_bytes()
    start = 8 + int.from_bytes(raw[:8], "little")
    for name, info in infos.items():
        assert sums[name] == checksum(raw[start + info.begin: start + info.end])


def test_save_is_byte_reproducible(tmp_path):
    pytest.importorskip("transformers")
    from tests.zoo import tiny_bert

    model = tiny_bert()
    ws.tie_(model, ws.TieConfig(strategy="cycle", unique=2))
    ws.cluster_(model, ws.ClusterConfig(bits=4, min_size=0, exclude=("token_type",)))
    first = ws.save(model, tmp_path / "a.safetensors").read_bytes()
    assert ws.save(model, tmp_path / "b.safetensors").read_bytes() == first
    again = ws.save(ws.load(tmp_path / "a.safetensors"), tmp_path / "c.safetensors")
    assert again.read_bytes() == first  # save -> load -> save: the same bytes
    packed = ws.load(tmp_path / "a.safetensors", runtime="packed")
    assert ws.save(packed, tmp_path / "d.safetensors").read_bytes() == first


def test_a_killed_save_leaves_nothing_the_next_save_does_not_clean(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time, torch
        sys.path.insert(0, {str(ROOT)!r})
        import weightshare as ws
        from weightshare.io import write
        def stuck(f, entries, meta):
            f.write(b"half a file")
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
        write._write = stuck
        ws.save(torch.nn.Linear(3, 3), {str(tmp_path / "m.safetensors")!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        stale = [p for p in tmp_path.iterdir() if p.name.endswith(TEMP_SUFFIX)]
        assert len(stale) == 1 and clean_stale(tmp_path) == []  # its writer still holds it
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert stale[0].exists()  # kill -9: nothing could clean up...
    ws.save(nn.Linear(2, 2), tmp_path / "other.safetensors")  # ...until the next save here
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.safetensors"]


def forge(path: Path, mutate) -> None:
    """Rewrite the metadata of a file (checksums stay valid: they cover the data)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    meta = json.loads(header["__metadata__"]["weightshare"])
    mutate(meta)
    header["__metadata__"]["weightshare"] = json.dumps(meta)
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])


@pytest.mark.parametrize("mutate,match", [
    (lambda m: m.update(format_version=7, library_version="3.0"),
     "format_version 7, written by weightshare 3.0.*open it with weightshare 3.0 or later"),
    (lambda m: m["schemes"]["0.weight"].update(version=5, ),
     "kind 'codebook' version 5 was written by .*reads 'codebook' up to version 1"),
    (lambda m: m["coding"].update({"0.weight.codes": {"coder": "zstd", "words": 1}}),
     "coded with 'zstd'.*does not know"),
    (lambda m: m["ties"].update({"2.weight": "2.bias", "2.bias": "2.weight"}),
     "is itself an alias"),
])
def test_versions_and_tie_cycles_refused(tmp_path, mutate, match):
    path = ws.save(tiny(), tmp_path / "m.safetensors")
    forge(path, mutate)
    with pytest.raises(FormatError, match=match):
        ws.load(path, tiny())


def peak_rss_growth(fn) -> tuple[float, float]:
    """(MiB the peak resident memory grew by while ``fn`` ran, seconds)."""
    clear = Path("/proc/self/clear_refs")
    if not clear.exists():
        pytest.skip("needs Linux /proc to measure peak memory")

    def peak() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")

    rss = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    clear.write_text("5")  # reset the peak to the current resident size
    t0 = time.perf_counter()
    fn()
    return (peak() - rss) / 2**20, time.perf_counter() - t0


@pytest.mark.parametrize("field,value", [
    ("num_hidden_layers", 10**6), ("num_hidden_layers", 2**40), ("vocab_size", 10**9),
    ("hidden_size", 2**20), ("max_position_embeddings", 10**8), ("intermediate_size", -3),
    ("num_attention_heads", 0), ("num_attention_heads", -1)])
def test_forged_transformers_config_refused_fast_in_bounded_memory(tmp_path, field, value):
    pytest.importorskip("transformers")
    from tests.zoo import tiny_bert

    path = ws.save(tiny_bert(), tmp_path / "bert.safetensors")
    forge(path, lambda m: m["model"]["config"].update({field: value}))

    def load() -> None:
        with pytest.raises(WeightShareError):
            ws.load(path)

    grown, seconds = peak_rss_growth(load)
    assert grown < 200 and seconds < 5, (grown, seconds)


def test_skeleton_is_built_on_the_meta_device(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from tests.zoo import bert_inputs, tiny_bert

    model = tiny_bert()
    path = ws.save(model, tmp_path / "bert.safetensors")
    registered = []
    original = nn.Module.register_parameter

    def spy(self, name, param):
        registered.append(param is None or param.is_meta)
        original(self, name, param)

    monkeypatch.setattr(nn.Module, "register_parameter", spy)
    loaded = ws.load(path)
    monkeypatch.undo()
    assert registered and all(registered)  # no parameter was ever real while building
    assert torch.equal(loaded(**bert_inputs()).last_hidden_state,
                       model(**bert_inputs()).last_hidden_state)


def test_dtype_of_a_given_skeleton_is_checked(tmp_path):
    path = ws.save(nn.Sequential(nn.Linear(4, 4)).half(), tmp_path / "h.safetensors")
    with pytest.raises(FormatError, match="float16 in .* but torch.float32 in the model"):
        ws.load(path, nn.Sequential(nn.Linear(4, 4)))
    assert ws.load(path, nn.Sequential(nn.Linear(4, 4)).half())[0].weight.dtype == torch.float16


def _flip_data(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[data_range(path)[len(data_range(path)) // 2]] ^= 0x10
    path.write_bytes(bytes(raw))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def _huge_shape(path: Path) -> None:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["0.weight.codes"]["shape"] = [2**40]
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])


def _huge_scheme(path: Path) -> None:
    forge(path, lambda m: m["schemes"]["0.weight"].update(shape=[2**20, 2**20], group_size=2**20))


@pytest.mark.parametrize("damage,match", [
    (_flip_data, "does not match its checksum"), (_truncate, "truncated|tile|stray|starts at"),
    (_huge_shape, "0.weight.codes"), (_huge_scheme, "must be U8"),
    (lambda p: forge(p, lambda m: m["ties"].update({"2.weight": "2.bias", "2.bias": "2.weight"})),
     "itself an alias"),
    (lambda p: forge(p, lambda m: m.update(format_version=99)), "format_version 99")])
def test_hostile_files_fail_clearly_fast_and_in_bounded_memory(tmp_path, damage, match):
    path = ws.save(tiny(), tmp_path / "m.safetensors")
    damage(path)
    skeleton = tiny(seed=1)
    before = snapshot(skeleton)

    def load() -> None:
        with pytest.raises(WeightShareError, match=match) as info:
            ws.load(path, skeleton)
        assert "\n" not in str(info.value)

    grown, seconds = peak_rss_growth(load)
    assert grown < 50 and seconds < 1, (grown, seconds)
    assert same(snapshot(skeleton), before)


def test_large_computed_buffers_are_built_for_real(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from tests.zoo import bert_inputs, tiny_bert
    from weightshare.io import skeleton

    model = tiny_bert()
    path = ws.save(model, tmp_path / "bert.safetensors")
    monkeypatch.setattr(skeleton, "SMALL", 64)  # position ids (4 KiB) count as large now
    loaded = ws.load(path)
    assert not loaded.embeddings.position_ids.is_meta
    assert torch.equal(loaded(**bert_inputs()).last_hidden_state,
                       model(**bert_inputs()).last_hidden_state)
