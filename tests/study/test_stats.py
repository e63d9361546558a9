"""Verdict logic on synthetic results: supported only beyond the seed spread."""

from __future__ import annotations

import math

import pytest

from weightshare.errors import ConfigError
from weightshare.study.stats import MIN_SEEDS, compare, summarize, verdict


def test_summarize_is_mean_and_sample_std():
    s = summarize([1.0, 2.0, 4.0])
    assert s.mean == pytest.approx(7 / 3)
    assert s.std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2
                                             + (4 - 7 / 3) ** 2) / 2))
    assert summarize([5.0]).std == 0.0 and summarize([]).n == 0


@pytest.mark.parametrize("a, b, better, outcome", [
    ([1.0, 1.1, 0.9], [2.0, 2.1, 1.9], "lower", "supported"),
    ([2.0, 2.1, 1.9], [1.0, 1.1, 0.9], "lower", "reversed"),
    ([2.0, 2.1, 1.9], [1.0, 1.1, 0.9], "higher", "supported"),
    # a difference of 0.15 against a spread of 0.1 + 0.1: not enough
    ([1.0, 1.1, 0.9], [1.15, 1.25, 1.05], "lower", "within_spread"),
    ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], "lower", "within_spread"),
    # deterministic counts: no spread, any difference counts
    ([10.0, 10.0, 10.0], [11.0, 11.0, 11.0], "lower", "supported"),
    ([1.0, float("nan"), 1.0], [2.0, 2.0, 2.0], "lower", "incomplete"),
    ([1.0, 1.1], [2.0, 2.1], "lower", "too_few_seeds"),
])
def test_compare_outcomes(a, b, better, outcome):
    assert compare("m", a, b, better=better).outcome == outcome


def test_difference_exactly_at_the_spread_is_not_enough():
    # means 1 and 2, stds 0.5 each: difference 1.0 == spread 1.0
    c = compare("m", [0.5, 1.0, 1.5], [1.5, 2.0, 2.5], better="lower")
    assert c.difference == pytest.approx(c.spread) and c.outcome == "within_spread"


def test_verdict_words():
    ok = compare("m", [1, 1.1, 0.9], [3, 3.1, 2.9], better="lower", condition="small")
    tie = compare("m", [1, 1.1, 0.9], [1, 1.2, 0.9], better="lower", condition="large")
    rev = compare("m", [3, 3.1, 2.9], [1, 1.1, 0.9], better="lower", condition="huge")
    assert verdict([ok, ok]).word == "supported"
    v = verdict([ok, tie, rev])
    assert v.word == "depends" and v.supported == ("small",)
    assert v.not_supported == ("large", "huge") and "huge" in v.reason and "large" in v.reason
    assert verdict([tie, rev]).word == "refuted"
    few = compare("m", [1], [3], better="lower")
    assert verdict([ok, few]).word == "inconclusive"
    assert str(MIN_SEEDS) in verdict([few]).reason


def test_verdict_and_compare_refuse_nonsense():
    with pytest.raises(ConfigError):
        verdict([])
    with pytest.raises(ConfigError, match="lower"):
        compare("m", [1], [2], better="smaller")
