"""Bad input to the quality options: one clear error, the model untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import weightshare as ws
from tests.zoo import TinyLM, mlp
from weightshare.errors import ConfigError, DataError, ShapeError


def untouched(model: nn.Module) -> bool:
    return not any("parametrizations" in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("cfg, message", [
    (dict(error_feedback=True), "error_feedback=True needs calibration data"),
    (dict(weighting="fisher"), "weighting='fisher' needs calibration data"),
    (dict(budget=4.0), "budget=4.0 needs calibration data"),
])
def test_data_aware_options_without_calibration(cfg, message):
    model = mlp()
    with pytest.raises(DataError, match=message):
        ws.cluster_(model, ws.ClusterConfig(min_size=0, **cfg))
    assert untouched(model)


def test_calibration_inputs_the_model_cannot_take():
    model = mlp()
    with pytest.raises(DataError, match="cannot take the calibration inputs"):
        ws.cluster_(model, ws.ClusterConfig(min_size=0, error_feedback=True),
                    [torch.randn(4, 7)])  # the model takes 32 features
    assert untouched(model)


def test_vector_dim_must_divide_the_values_per_row():
    model = nn.Sequential(nn.Linear(30, 8))
    with pytest.raises(ShapeError, match="vector_dim 4 does not divide the 30 values"):
        ws.cluster_(model, ws.ClusterConfig(bits=8, vector_dim=4, min_size=0))
    assert untouched(model)


def test_cross_layer_codebook_over_layers_that_cannot_share():
    model = TinyLM()
    with pytest.raises(ConfigError, match="mixes an embedding table"):
        ws.cluster_(model, ws.ClusterConfig(min_size=0, shared_codebooks=("emb|body",)))
    model = mlp()
    model[2].half()
    with pytest.raises(ConfigError, match="one codebook tensor has one dtype"):
        ws.cluster_(model, ws.ClusterConfig(min_size=0, shared_codebooks=(r"^[02]$",)))
    assert untouched(model)


@pytest.mark.parametrize("cfg, message", [
    (dict(vector_dim=3), "vector_dim must be one of"),
    (dict(bits=9), "bits must be an integer from 1 to 8"),
    (dict(bits=17, vector_dim=4), "from 1 to 16"),
    (dict(sequential=True), "set error_feedback=True too"),
    (dict(outliers=0.5), "outliers must be a fraction"),
    (dict(scales="per_channel", granularity="per_channel"), "own codebook already"),
    (dict(shared_codebooks=("x",), granularity="per_group"), "needs granularity='per_tensor'"),
    (dict(scales="per_row"), "scales must be one of"),
    (dict(weighting="hessian"), "weighting must be one of"),
])
def test_config_errors(cfg, message):
    with pytest.raises(ConfigError, match=message):
        ws.ClusterConfig(**cfg)


def test_recipe_errors_and_fields():
    with pytest.raises(ConfigError, match="unknown recipe"):
        ws.ClusterConfig.recipe("best")
    with pytest.raises(ConfigError, match="2 to 8 bits"):
        ws.ClusterConfig.recipe("fast", bits=1)
    q = ws.ClusterConfig.recipe("quality", bits=3, exclude=("pooler",))
    assert (q.budget, q.error_feedback, q.exclude) == (3.0, True, ("pooler",))
