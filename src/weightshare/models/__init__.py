"""Model adapters: the packaged all-MiniLM-L6-v2, transformers directories and hub ids."""

from weightshare.models.hf import (
    LoadedModel,
    is_sentence_embedding_dir,
    load_model,
    minilm_dir,
    model_from_config,
)

__all__ = [
    "LoadedModel",
    "is_sentence_embedding_dir",
    "load_model",
    "minilm_dir",
    "model_from_config",
]
