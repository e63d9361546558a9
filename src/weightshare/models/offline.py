"""Transformers models built offline from their configs, with real tokenizers trained here.

No hub is reachable on many machines that run weightshare, so tests and benchmarks build
the model families users bring: a GPT-2 (tied embeddings, ``Conv1D`` layers, a BPE
tokenizer without a padding token), a Llama (grouped-query attention, untied head, no
padding token either) and a BERT (WordPiece, a 2-row token-type embedding), each from a
transformers config with seeded random weights, and a tokenizer trained on the text you
give with the ``tokenizers`` library. ``save_model_dir`` writes a directory that
``transformers`` and ``weightshare`` load like any checkpoint.

Example:
    >>> import tempfile
    >>> from weightshare.data.sentences import calibration_sentences
    >>> path = save_model_dir("gpt2", tempfile.mkdtemp(), calibration_sentences()[:200])
    >>> from transformers import AutoTokenizer
    >>> AutoTokenizer.from_pretrained(path).pad_token is None
    True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError

ARCHITECTURES = ("gpt2", "llama", "bert")

# (config fields) per architecture and size. "tiny": tests; the others: benchmarks at the
# shapes users have (distilgpt2's 6 layers x 768, BERT-base, a small GQA Llama).
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "gpt2": {
        "tiny": {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 128},
        "small": {"n_embd": 256, "n_layer": 4, "n_head": 4, "n_positions": 128},
        "base": {"n_embd": 768, "n_layer": 6, "n_head": 12, "n_positions": 1024},
    },
    "llama": {
        "tiny": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "num_key_value_heads": 2,
                 "max_position_embeddings": 128},
        "base": {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12,
                 "num_attention_heads": 12, "num_key_value_heads": 4,
                 "max_position_embeddings": 1024},
    },
    "bert": {
        "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "intermediate_size": 64, "max_position_embeddings": 128},
        "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                 "intermediate_size": 3072, "max_position_embeddings": 512},
    },
}


def train_tokenizer(arch: str, texts: Sequence[str], vocab_size: int) -> Any:
    """A fast transformers tokenizer of the family ``arch`` uses, trained on ``texts``.

    GPT-2: byte-level BPE, ``<|endoftext|>`` as bos/eos, no padding token (as GPT-2
    ships). Llama: byte-level BPE with ``<s>``, ``</s>``, ``<unk>``, no padding token.
    BERT: lower-cased WordPiece with ``[PAD] [UNK] [CLS] [SEP] [MASK]``.
    """
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    _check_arch(arch)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ConfigError("train_tokenizer needs some text; pass a list of sentences")
    if arch == "bert":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        tok.train_from_iterator(texts, trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=specials))
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
            sep_token="[SEP]", mask_token="[MASK]", model_input_names=[
                "input_ids", "token_type_ids", "attention_mask"])
    specials = ["<|endoftext|>"] if arch == "gpt2" else ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token=None if arch == "gpt2" else "<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if arch == "gpt2":
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                       eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                       model_input_names=["input_ids", "attention_mask"])
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>",
                                   model_input_names=["input_ids", "attention_mask"])


def build_model(arch: str, size: str = "tiny", vocab_size: int = 512, seed: int = 0,
                **overrides: Any) -> torch.nn.Module:
    """A transformers model of ``arch`` at ``size`` (see ``SIZES``) with seeded random
    weights: ``GPT2LMHeadModel``, ``LlamaForCausalLM`` or ``BertModel``.

    Example:
        >>> build_model("llama").config.num_key_value_heads
        2
    """
    import transformers

    _check_arch(arch)
    if size not in SIZES[arch]:
        raise ConfigError(f"unknown size {size!r} for {arch}; use one of {list(SIZES[arch])}")
    fields = {**SIZES[arch][size], "vocab_size": vocab_size, **overrides}
    torch.manual_seed(seed)
    config: Any
    model: Any
    if arch == "gpt2":
        config = transformers.GPT2Config(bos_token_id=0, eos_token_id=0, **fields)
        model = transformers.GPT2LMHeadModel(config)
    elif arch == "llama":
        config = transformers.LlamaConfig(bos_token_id=1, eos_token_id=2, pad_token_id=None,
                                          **fields)
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.BertConfig(pad_token_id=0, **fields)
        model = transformers.BertModel(config)
    return model.eval()


def save_model_dir(arch: str, path: str | os.PathLike, texts: Sequence[str], *,
                   size: str = "tiny", vocab_size: int | None = None, seed: int = 0,
                   dtype: torch.dtype | None = None, tokenizer: bool = True,
                   model_vocab: int | None = None, **overrides: Any) -> Path:
    """Build ``arch`` at ``size`` with a tokenizer trained on ``texts`` and save both to
    ``path`` (a transformers checkpoint directory); returns the path.

    ``dtype`` converts the weights before saving (``torch.bfloat16``: a bf16 checkpoint);
    ``tokenizer=False`` saves the model alone; ``model_vocab``: embedding rows when they
    should differ from the tokenizer's size (BERT-base has 30,522 whatever the text).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = vocab_size or (256 + 64 if size == "tiny" else 8192)
    tok = train_tokenizer(arch, texts, vocab) if tokenizer else None
    # the model's vocabulary is the tokenizer's (BPE may learn fewer merges than asked)
    rows = model_vocab or (len(tok) if tok is not None else vocab)
    model: Any = build_model(arch, size, vocab_size=rows, seed=seed, **overrides)
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(path)
    if tok is not None:
        tok.save_pretrained(path)
    return path


def _check_arch(arch: str) -> None:
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r}; use one of {', '.join(ARCHITECTURES)}")
