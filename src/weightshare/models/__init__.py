"""Model adapters: the packaged all-MiniLM-L6-v2, transformers directories and hub ids; the
classic MNIST networks (LeNet-300-100, Caffe's LeNet-5)."""

from weightshare.models.hf import (
    LoadedModel,
    is_sentence_embedding_dir,
    load_model,
    minilm_dir,
    model_from_config,
)
from weightshare.models.lenet import LeNet5, LeNet300, lenet5, lenet300

__all__ = [
    "LeNet5",
    "LeNet300",
    "LoadedModel",
    "is_sentence_embedding_dir",
    "lenet5",
    "lenet300",
    "load_model",
    "minilm_dir",
    "model_from_config",
]
