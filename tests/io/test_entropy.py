"""Entropy-coded codes: exact round trips for any histogram, within a few bytes of the
Shannon limit, decoded straight into the packed form, forged streams refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import weightshare as ws
from weightshare.errors import FormatError
from weightshare.io import entropy, read_metadata
from weightshare.io.bitpack import pack_codes
from weightshare.methods.codebook.weight import attach_codebook

pytest.importorskip("constriction")


def histograms(n: int, seed: int = 0) -> dict[str, tuple[torch.Tensor, int]]:
    g = torch.Generator().manual_seed(seed)
    gauss = (torch.randn(n, generator=g) * 3 + 8).round().clamp(0, 15).to(torch.int32)
    return {"skewed": (gauss, 4),
            "uniform": (torch.randint(0, 256, (n,), generator=g, dtype=torch.int32), 8),
            "single symbol": (torch.full((n,), 5, dtype=torch.int32), 3),
            "two symbols rare": ((torch.rand(n, generator=g) < 0.01).to(torch.int32), 1),
            "wide codes": (torch.randint(0, 1 << 12, (n,), generator=g, dtype=torch.int32), 12)}


@pytest.mark.parametrize("name", list(histograms(1)))
@pytest.mark.parametrize("n", [0, 1, 7, 5000, entropy.CHUNK + 13])
def test_round_trip_is_exact(name, n):
    codes, bits = histograms(n)[name]
    coded = entropy.encode(entropy.logical_source(codes), bits, n)
    blob = torch.from_numpy(coded.blob.copy())
    entropy.check_blob(blob.numel(), bits, n, coded.words, "x")
    back = entropy.decode(blob, bits, n, coded.words, packed=False, where="x")
    assert torch.equal(back, codes)
    packed = entropy.decode(blob, bits, n, coded.words, packed=True, where="x")
    assert torch.equal(packed, pack_codes(codes, bits))
    counts = np.bincount(codes.numpy(), minlength=1 << bits)
    limit = entropy.shannon_bytes(counts)
    stream = 4 * coded.words
    assert stream <= limit * 1.0001 + 8  # the ANS stream: a few bytes over the limit
    if n >= 5000:
        assert blob.numel() >= n / entropy.MAX_SYMBOLS_PER_BYTE


def test_forged_streams_are_refused():
    codes, bits = histograms(3000)["skewed"]
    coded = entropy.encode(entropy.logical_source(codes), bits, 3000)
    blob = torch.from_numpy(coded.blob.copy())
    counts = blob[:64].view(torch.int32)
    bad = blob.clone()
    bad[:64].view(torch.int32)[:] = counts.roll(1)  # another histogram of the same total
    with pytest.raises(FormatError, match="does not decode"):
        entropy.decode(bad, bits, 3000, coded.words, packed=True, where="x")
    bad = blob.clone()
    bad[100] ^= 0xFF  # a damaged stream (a checksum catches it first in a file)
    with pytest.raises(FormatError):
        entropy.decode(bad, bits, 3000, coded.words, packed=False, where="x")
    with pytest.raises(FormatError, match="counts 3000 codes, the part has 2999"):
        entropy.decode(blob, bits, 2999, coded.words, packed=False, where="x")
    with pytest.raises(FormatError, match="must hold"):
        entropy.check_blob(blob.numel(), bits, 10**9, coded.words, "x")  # decodes too much


def skewed_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Embedding(300, 32), nn.Linear(32, 64), nn.ReLU(),
                          nn.Linear(64, 300))
    g = torch.Generator().manual_seed(seed)
    for i, bits in ((0, 4), (1, 3), (3, 2)):
        w = model[i].weight
        probs = torch.softmax(-torch.arange(1 << bits, dtype=torch.float) / 2, 0)
        codes = torch.multinomial(probs, w.numel(), True, generator=g).reshape(w.shape)
        attach_codebook(model[i], torch.randn(1, 1 << bits, generator=g), codes, bits)
    return model


def test_entropy_coded_file_loads_exactly_in_both_forms(tmp_path):
    model = skewed_model()
    fixed = ws.save(model, tmp_path / "fixed.safetensors")
    coded = ws.save(model, tmp_path / "coded.safetensors", entropy=True)
    assert coded.stat().st_size < fixed.stat().st_size * 0.85
    assert set(read_metadata(coded)["coding"]) == {"0.weight.codes", "1.weight.codes",
                                                   "3.weight.codes"}
    ids = torch.randint(0, 300, (4, 9))
    expected = model.eval()(ids)
    for runtime in ("train", "packed"):
        loaded = ws.load(coded, skewed_model(seed=1), runtime=runtime)
        assert torch.allclose(loaded(ids), expected, atol=1e-6, rtol=0)
    again = ws.save(ws.load(coded, skewed_model(seed=1)), tmp_path / "again.safetensors",
                    entropy=True)
    assert again.read_bytes() == coded.read_bytes()


def test_inspect_shows_fixed_coded_and_shannon_bits(tmp_path):
    model = skewed_model()
    coded = ws.save(model, tmp_path / "coded.safetensors", entropy=True)
    for report in (ws.inspect(model), ws.inspect(coded)):
        row = next(r for r in report.rows if r.name == "0.weight")
        assert row.fixed_bits == pytest.approx(4.0, abs=1e-3)
        assert row.entropy_bits < row.coded_bits < row.fixed_bits
        c = report.codes
        assert c.codes == 300 * 32 + 64 * 32 + 300 * 64
        assert c.entropy_bytes <= c.coded_bytes <= c.entropy_bytes * 1.02 + 3 * 68
        assert "Shannon limit" in report.summary() and "entropy" in str(report)
    assert ws.inspect(model).codes.coded_bytes == ws.inspect(coded).codes.coded_bytes


def test_save_entropy_flag_is_checked(tmp_path):
    with pytest.raises(ws.WeightShareError, match="entropy must be True or False"):
        ws.save(nn.Linear(2, 2), tmp_path / "m.safetensors", entropy="yes")
