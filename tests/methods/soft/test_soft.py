"""Soft weight sharing: the prior's likelihood is the mixture's, training pulls weights to
its components, snapping yields one shared zero-sharing codebook that files keep."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors import safe_open

import weightshare as ws
from tests.zoo import mlp
from weightshare.core.protocol import iter_shared
from weightshare.errors import ConfigError, DataError
from weightshare.methods.prune import ZeroCodebookWeight


def test_log_likelihood_equals_a_direct_computation(tiny_mlp):
    prior = ws.SoftSharingPrior(tiny_mlp, components=5, zero_mixing=0.9)
    with torch.no_grad():
        prior.means.copy_(torch.tensor([-0.2, -0.05, 0.05, 0.2]))
        prior.log_precision.copy_(torch.tensor([8.0, 5.0, 6.0, 6.5, 4.0]))
        prior.mixing_logits.copy_(torch.tensor([0.1, -0.3, 0.2, 0.0]))
    w = torch.randn(50) * 0.1
    means = [0.0, -0.2, -0.05, 0.05, 0.2]
    stds = [math.exp(-lp / 2) for lp in [8.0, 5.0, 6.0, 6.5, 4.0]]
    mix = torch.tensor([0.1, -0.3, 0.2, 0.0]).softmax(0).tolist()
    pis = [0.9] + [0.1 * m for m in mix]
    direct = sum(math.log(sum(p * math.exp(torch.distributions.Normal(m, s).log_prob(
        torch.tensor(float(x))).item()) for p, m, s in zip(pis, means, stds))) for x in w)
    assert prior.log_likelihood(w).item() == pytest.approx(direct, rel=1e-5)
    resp = prior.responsibilities(w)
    assert torch.allclose(resp.sum(1), torch.ones(50))


def test_the_fused_likelihood_has_exact_gradients():
    from weightshare.methods.soft.prior import _MixtureLogLikelihood

    g = torch.Generator().manual_seed(0)
    inputs = (torch.randn(30, generator=g, dtype=torch.float64) * 0.1,
              torch.randn(4, generator=g, dtype=torch.float64) * 0.1,
              torch.randn(4, generator=g, dtype=torch.float64) + 4,
              torch.randn(4, generator=g, dtype=torch.float64).log_softmax(0))
    inputs = tuple(t.requires_grad_() for t in inputs)
    assert torch.autograd.gradcheck(_MixtureLogLikelihood.apply, inputs)


def test_every_kth_call_carries_k_times_the_term(tiny_mlp):
    prior = ws.SoftSharingPrior(tiny_mlp, components=3, every=3)
    full = ws.SoftSharingPrior(tiny_mlp, components=3)
    terms = [prior(tiny_mlp).item() for _ in range(6)]
    assert terms[1:3] == [0.0, 0.0] and terms[3] == pytest.approx(3 * full(tiny_mlp).item())


def test_the_regulariser_covers_the_chosen_weights_and_trains_its_parameters(tiny_mlp):
    prior = ws.SoftSharingPrior(tiny_mlp, components=3, include=("^0$",), weight=1e-3)
    assert prior.names == ["0"]
    w = tiny_mlp[0].weight
    expected = -1e-3 * (prior.log_likelihood(w) + prior.log_hyperprior())
    assert torch.allclose(prior(tiny_mlp), expected)
    before = prior.means.detach().clone()
    x, y = torch.randn(64, 32), torch.randint(0, 10, (64,))
    ws.fit(tiny_mlp, (x, y), epochs=2, batch_size=16, regularizers=[prior], progress=False)
    assert not torch.equal(prior.means, before)  # fit trains the prior too


def trained(components: int = 5) -> tuple[torch.nn.Module, ws.SoftSharingPrior]:
    model = mlp()
    prior = ws.SoftSharingPrior(model, components=components, weight=3e-3, zero_mixing=0.9)
    x = torch.randn(256, 32, generator=torch.Generator().manual_seed(0))
    y = (x[:, :10]).argmax(1)
    ws.fit(model, (x, y), epochs=20, batch_size=32, lr=2e-3, regularizers=[prior],
           progress=False)
    return model, prior


def test_snapping_leaves_at_most_the_surviving_components_and_a_pinned_zero(tmp_path):
    model, prior = trained()
    ws.soft_to_codebook_(model, prior)
    layers = [model[i] for i in (0, 2, 4)]
    codebook = layers[0].parametrizations.weight.original
    assert all(m.parametrizations.weight.original is codebook for m in layers)  # one codebook
    values = torch.cat([m.weight.detach().reshape(-1) for m in layers]).unique()
    assert values.numel() <= 5 and bool((values == 0).any())
    zeros = [m.weight == 0 for m in layers]
    x, y = torch.randn(64, 32), torch.randint(0, 10, (64,))
    ws.fit(model, (x, y), epochs=2, batch_size=16, lr=1e-2, progress=False)
    assert all(torch.equal(m.weight == 0, z) for m, z in zip(layers, zeros))

    path = ws.save(model, tmp_path / "soft.safetensors")
    with safe_open(str(path), "pt") as f:  # the shared codebook is stored once
        names = list(f.keys())  # noqa: SIM118 - a safetensors handle, not a dict
    assert [k for k in names if k.endswith("codebook")] == ["0.weight.codebook"]
    loaded = ws.load(path, mlp(seed=5))
    assert torch.equal(loaded(x), model.eval()(x))
    assert loaded[0].parametrizations.weight.original is loaded[4].parametrizations.weight.original
    assert isinstance(loaded[2].parametrizations.weight[0], ZeroCodebookWeight)


def test_biases_can_share_the_codebook_too(tmp_path):
    model = mlp()
    prior = ws.SoftSharingPrior(model, components=5, biases=True)
    assert ("4", "bias") in prior.tensors
    ws.soft_to_codebook_(model, prior)
    assert model[4].parametrizations.bias.original is model[0].parametrizations.weight.original
    x = torch.randn(3, 32)
    path = ws.save(model, tmp_path / "b.safetensors")
    assert torch.equal(ws.load(path, mlp(seed=4))(x), model.eval()(x))
    assert {r.scheme for r in ws.inspect(path).rows} == {"zero-codebook"}  # no fp32 bias left


def test_collapsed_components_merge():
    model = mlp()
    prior = ws.SoftSharingPrior(model, components=5)
    with torch.no_grad():  # two components on top of each other
        prior.means.copy_(torch.tensor([-0.1, 0.1, 0.1 + 1e-6, 0.3]))
    ws.soft_to_codebook_(model, prior)
    values = model[0].weight.detach().unique()
    assert values.numel() <= 4  # zero + at most three survivors


def test_a_prior_whose_components_all_collapse_is_one_clear_error():
    model = mlp()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e-4)
    prior = ws.SoftSharingPrior(model, components=3, zero_mixing=0.99)
    with torch.no_grad():
        prior.means.copy_(torch.tensor([-5.0, 5.0]))
    before = model[0].weight.detach().clone()
    with pytest.raises(DataError, match="collapsed into zero"):
        ws.soft_to_codebook_(model, prior)
    assert torch.equal(model[0].weight, before)  # nothing changed


def test_a_layer_the_zero_component_claims_whole_is_one_clear_error():
    model = mlp()
    with torch.no_grad():
        model[2].weight.mul_(1e-4)  # the middle layer: every weight within the zero's reach
    prior = ws.SoftSharingPrior(model, components=5, zero_std=0.01)
    before = model[2].weight.detach().clone()
    with pytest.raises(DataError, match=r"claimed every weight of 2: .*now 0.01\)"):
        ws.soft_to_codebook_(model, prior)
    assert torch.equal(model[2].weight, before) and not list(iter_shared(model))


def test_a_fixed_zero_std_stays_fixed_and_claims_the_small_weights(tiny_mlp):
    prior = ws.SoftSharingPrior(tiny_mlp, components=5, zero_std=0.05, weight=1e-3)
    x, y = torch.randn(64, 32), torch.randint(0, 10, (64,))
    ws.fit(tiny_mlp, (x, y), epochs=2, batch_size=16, regularizers=[prior], progress=False)
    _, precision, _ = prior.mixture()
    assert precision[0].item() == pytest.approx(1 / 0.05**2)
    w = torch.tensor([0.0, 0.01, 0.02])
    assert bool((prior.responsibilities(w).argmax(1) == 0).all())


def test_bad_prior_settings():
    with pytest.raises(ConfigError, match="components"):
        ws.SoftSharingPrior(mlp(), components=1)
    with pytest.raises(ConfigError, match="zero_mixing"):
        ws.SoftSharingPrior(mlp(), zero_mixing=1.0)
    with pytest.raises(ConfigError, match="init"):
        ws.SoftSharingPrior(mlp(), init="random")
    with pytest.raises(ConfigError, match="zero_std"):
        ws.SoftSharingPrior(mlp(), zero_std=0.0)
    model = mlp()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    with pytest.raises(DataError, match="all zero"):
        ws.SoftSharingPrior(model)


def test_a_layer_scaled_prior_sees_every_layer_in_its_own_units():
    """A layer ten times larger (ReLU networks compute the same function when one layer
    shrinks and the next grows) changes nothing for the layer-scaled prior; one raw
    prior over all layers would let its zero component claim most of the smaller layer."""
    big = mlp()
    with torch.no_grad():
        big[2].weight.mul_(10.0)
    layer = [ws.SoftSharingPrior(m, components=5, zero_std=0.3, scale="layer")
             for m in (mlp(), big)]
    assert torch.allclose(layer[0].means, layer[1].means)
    assert layer[0](mlp()).item() == pytest.approx(layer[1](big).item(), rel=1e-5)

    def claimed(prior: ws.SoftSharingPrior, model: torch.nn.Module) -> list[float]:
        return [float((prior.responsibilities(w.detach().reshape(-1)).argmax(1) == 0)
                      .float().mean()) for w in prior.seen_weights(model)]

    assert claimed(layer[0], mlp()) == claimed(layer[1], big)
    raw = ws.SoftSharingPrior(big, components=5, zero_std=0.03)
    fractions = claimed(raw, big)
    assert fractions[0] > 3 * fractions[1]  # the raw prior treats the layers unequally


def test_layer_scaled_snapping_gives_each_layer_its_own_codebook(tmp_path):
    model = mlp()
    with torch.no_grad():
        model[4].weight.mul_(50.0)  # a layer on its own scale gets its own codebook
    prior = ws.SoftSharingPrior(model, components=5, scale="layer", weight=3e-3,
                                zero_mixing=0.9)
    x = torch.randn(256, 32, generator=torch.Generator().manual_seed(0))
    y = (x[:, :10]).argmax(1)
    ws.fit(model, (x, y), epochs=10, batch_size=32, lr=2e-3, regularizers=[prior],
           progress=False)
    codes = prior.responsibilities(torch.cat(
        [w.detach().reshape(-1) for w in prior.seen_weights(model)])).argmax(1)
    ws.soft_to_codebook_(model, prior)
    layers = [model[i] for i in (0, 2, 4)]
    books = [m.parametrizations.weight.original for m in layers]
    assert books[0] is not books[1] and books[1] is not books[2]
    assert float(books[2].detach().abs().max()) > 10 * float(books[1].detach().abs().max())
    start = 0
    for m in layers:  # each weight went to the component that was most responsible for it
        n = m.weight.numel()
        assert torch.equal(m.weight.detach().reshape(-1) == 0, codes[start:start + n] == 0)
        assert m.weight.detach().unique().numel() <= 5
        start += n
    path = ws.save(model, tmp_path / "layer.safetensors")
    loaded = ws.load(path, mlp(seed=5))
    assert torch.equal(loaded(x), model.eval()(x))


def test_a_layer_without_members_of_a_component_keeps_its_scaled_mean():
    from weightshare.methods.soft.snap import _codebook

    flat = torch.tensor([0.0, 1.0, 3.0, 0.0])
    codes = torch.tensor([0, 1, 1, 0])  # code 2 unused in this layer
    book = _codebook(flat, codes, 2, torch.tensor([1.5, 7.0]))
    assert book.tolist() == [[2.0, 7.0, 7.0]]  # member mean, fallback, padding


def test_bad_scale():
    with pytest.raises(ConfigError, match="scale"):
        ws.SoftSharingPrior(mlp(), scale="global")


def test_anneal_widens_the_zero_component_geometrically(tiny_mlp):
    from weightshare.methods.soft import AnnealPrior
    from weightshare.train.hooks import StepInfo

    prior = ws.SoftSharingPrior(tiny_mlp, components=3, zero_std=0.05)
    anneal = AnnealPrior(prior, 1e-6, 1e-4, zero_std=(0.01, 0.05), ramp=0.5)
    assert prior.zero_std == 0.01
    widths = []
    for step in range(0, 11):
        anneal(StepInfo(step, 0.0, tiny_mlp, 0.0, 1e-3, total=10))
        widths.append(prior.zero_std)
    assert widths[0] == pytest.approx(0.01) and widths[5:] == [pytest.approx(0.05)] * 6
    assert widths == sorted(widths)  # only ever wider
    assert widths[2] / widths[1] == pytest.approx(widths[4] / widths[3])  # geometric
    _, precision, _ = prior.mixture()
    assert precision[0].item() == pytest.approx(1 / 0.05**2)
    with pytest.raises(ConfigError, match="fixed zero_std"):
        AnnealPrior(ws.SoftSharingPrior(mlp(), components=3), 1e-6, 1e-4, zero_std=(0.01, 0.05))


def test_harden_zero_makes_the_zero_claims_exact_and_keeps_them(tiny_mlp):
    from weightshare.methods.soft import HardenZero

    prior = ws.SoftSharingPrior(tiny_mlp, components=5, zero_std=0.03, weight=1e-3)
    harden = HardenZero(tiny_mlp, prior, every=5)
    x, y = torch.randn(64, 32), torch.randint(0, 10, (64,))
    ws.fit(tiny_mlp, (x, y), epochs=2, batch_size=16, lr=1e-2, regularizers=[prior],
           callbacks=[harden], progress=False)
    zeros = [tiny_mlp[i].weight.detach() == 0 for i in (0, 2, 4)]
    assert harden.masks is not None and 0 < harden.sparsity() < 1
    assert all(torch.equal(z, ~m) for z, m in zip(zeros, harden.masks))
    claimed = prior.responsibilities(torch.cat([w.detach().reshape(-1) for w in
                                                prior.seen_weights(tiny_mlp)])).argmax(1) == 0
    assert bool(claimed[torch.cat([z.reshape(-1) for z in zeros])].all())
    ws.fit(tiny_mlp, (x, y), epochs=1, batch_size=16, lr=1e-2, regularizers=[prior],
           callbacks=[harden], progress=False)  # zeros stay zero, more may join
    assert all(bool((tiny_mlp[i].weight.detach()[z] == 0).all()) for i, z in zip((0, 2, 4),
                                                                                 zeros))
    ws.soft_to_codebook_(tiny_mlp, prior)  # the snap keeps every hardened zero
    assert all(bool((tiny_mlp[i].weight.detach()[z] == 0).all()) for i, z in zip((0, 2, 4),
                                                                                 zeros))
    with pytest.raises(ConfigError, match="every"):
        HardenZero(tiny_mlp, prior, every=0)


def test_harden_zero_holds_the_surest_claims_first(tiny_mlp):
    from weightshare.methods.soft import HardenZero

    prior = ws.SoftSharingPrior(tiny_mlp, components=5, zero_std=0.05)
    flat = torch.cat([w.detach().reshape(-1) for w in prior.weights_of(tiny_mlp)])
    claimed = int((prior.responsibilities(flat).argmax(1) == 0).sum())
    harden = HardenZero(tiny_mlp, prior)
    harden.update(0.5)
    harden.apply()
    after = torch.cat([w.detach().reshape(-1) for w in prior.weights_of(tiny_mlp)])
    held = after == 0
    assert int(held.sum()) == round(0.5 * claimed)
    # the surest claims first: every held weight had log-odds for the zero component at
    # least those of every claimed weight left free (on each side of 0: the smaller)
    with torch.no_grad():
        margin = harden._margin(flat)
    free_claimed = (margin > 0) & ~held
    assert float(margin[held].min()) >= float(margin[free_claimed].max())
    for side in (flat > 0, flat < 0):
        assert float(flat[held & side].abs().max()) <= float(flat[free_claimed & side].abs().min())
    harden.update(1.0)
    harden.apply()
    assert harden.sparsity() == pytest.approx(claimed / flat.numel())
