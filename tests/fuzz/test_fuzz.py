"""A bounded fuzz run in CI: byte and field mutations of real files of every kind, each
load judged by ``harness.load_one``. The long run (``python -m tests.fuzz.run``) does the
same at scale in separate processes, with time and memory limits."""

from __future__ import annotations

import importlib.util
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.corpus import build
from tests.fuzz.harness import FINDINGS, load_one
from tests.fuzz.mutate import flip_data, mutate

HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build(tmp_path_factory.mktemp("corpus"), with_transformers=HAS_TRANSFORMERS)


def test_seeds_load_and_run(corpus, tmp_path):
    for case in corpus:
        for runtime in ("train", "packed"):
            outcome = load_one(case, case.data, "none", runtime, str(tmp_path))
            assert outcome.verdict == "accepted", (case.name, outcome)


@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_mutated_files_never_crash(corpus, tmp_path, data):
    case = data.draw(st.sampled_from(corpus), label="case")
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    runtime = data.draw(st.sampled_from(["train", "packed"]), label="runtime")
    mutated, how = mutate(rng, case.data, [c.data for c in corpus])
    outcome = load_one(case, mutated, how, runtime, str(tmp_path))
    assert outcome.verdict not in FINDINGS, (case.name, outcome)


@pytest.mark.parametrize("seed", range(3))
def test_flipped_data_bytes_always_detected(corpus, tmp_path, seed):
    rng = random.Random(seed)
    for case in corpus:
        for _ in range(5):
            mutated, how = flip_data(rng, case.data)
            outcome = load_one(case, mutated, how, "packed", str(tmp_path))
            assert outcome.verdict == "rejected" and "checksum" in outcome.detail, (case.name,
                                                                                    outcome)
