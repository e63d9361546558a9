"""Transformers checkpoints built offline for the tests: a GPT-2 (tied head, Conv1D, no
padding token), a Llama (grouped-query attention, no padding token, also saved in bf16),
a BERT, and a GPT-2 without tokenizer files; tiny, with tokenizers trained on the
built-in calibration sentences. Import the fixtures into a test module to use them."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")


def _build(tmp_path_factory, arch: str, **kwargs) -> Path:
    from weightshare.data.sentences import calibration_sentences
    from weightshare.models.offline import save_model_dir

    path = tmp_path_factory.mktemp(arch + "".join(f"-{k}" for k in kwargs))
    return save_model_dir(arch, path, calibration_sentences()[:400], **kwargs)


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, "gpt2")


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, "llama")


@pytest.fixture(scope="session")
def llama_bf16_dir(tmp_path_factory) -> Path:
    import torch

    return _build(tmp_path_factory, "llama", dtype=torch.bfloat16)


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, "bert")


@pytest.fixture(scope="session")
def gpt2_no_tokenizer_dir(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, "gpt2", tokenizer=False)
