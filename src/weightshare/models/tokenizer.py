"""The one way weightshare gets a tokenizer, for every verb and every kind of input.

A tokenizer comes from a directory (a transformers checkpoint, or the base a weightshare
file records), from a hub id in the local cache, or from the tokenizer files a
weightshare file carries in its metadata (``save(..., tokenizer=...)``). Whatever the
source, :func:`prepare_tokenizer` is the one guard it passes:

* **padding**: batches of sentences need a padding token; causal LMs (GPT-2, Llama)
  ship none. weightshare pads with the end-of-sequence token (then the unknown token,
  then the beginning-of-sequence token, then id 0) and always masks padded positions
  out (``attention_mask``), so the choice never changes a measurement. Padding goes on
  the right.
* **vocabulary**: a tokenizer whose ids run past the model's input embedding would
  index out of range; it is refused with a message naming both sizes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError

# Text files that make up a transformers tokenizer (what save_pretrained writes). Only
# these are carried in a weightshare file: small, text, no code.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt", "vocab.json", "merges.txt", "added_tokens.json")
MAX_TOKENIZER_BYTES = 32 * 2**20  # a Llama-3 tokenizer.json is 9 MB


def prepare_tokenizer(tokenizer: Any, vocab_rows: int | None = None) -> Any:
    """The guard every tokenizer passes (see the module docstring); returns it.

    Example:
        >>> class Tok:  # the few attributes the guard uses
        ...     pad_token, eos_token, unk_token, bos_token = None, "</s>", None, None
        ...     padding_side = "left"
        ...     def __len__(self): return 10
        >>> tok = prepare_tokenizer(Tok(), vocab_rows=10)
        >>> tok.pad_token, tok.padding_side
        ('</s>', 'right')
    """
    if getattr(tokenizer, "pad_token", None) is None:
        for attr in ("eos_token", "unk_token", "bos_token"):
            token = getattr(tokenizer, attr, None)
            if token is not None:
                tokenizer.pad_token = token
                break
        else:  # no special token at all: any id works, padded positions are masked out
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(0)
    tokenizer.padding_side = "right"
    size = len(tokenizer)
    if vocab_rows is not None and size > vocab_rows:
        raise ModelLoadError(f"the tokenizer has {size:,} tokens but the model's input embedding "
                             f"has {vocab_rows:,} rows; pass the tokenizer that belongs to this "
                             "model")
    if size < 2:
        raise ModelLoadError(f"the tokenizer has a vocabulary of {size}; its files are missing or "
                             "broken, pass the model's own tokenizer files")
    return tokenizer


def load_tokenizer(source: str | os.PathLike, local_only: bool = True,
                   vocab_rows: int | None = None) -> Any | None:
    """The tokenizer saved in a directory (or a cached hub id), guarded; None when there
    are no tokenizer files (a model without a tokenizer is still a model to share).

    Tokenizer files that exist but cannot be read raise ModelLoadError.
    """
    from transformers import AutoTokenizer

    path = Path(source)
    if path.is_dir() and not any((path / name).is_file() for name in TOKENIZER_FILES):
        return None  # transformers would build one from the config, with no vocabulary
    from .hf import _first_line, _quiet_transformers

    with _quiet_transformers():
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=local_only)
        except Exception as exc:  # OSError, ValueError, tokenizers' Exception, ...
            if not path.is_dir():
                return None  # a hub model without tokenizer files in the cache
            raise ModelLoadError(f"the tokenizer files in {str(source)!r} cannot be loaded "
                                 f"({_first_line(exc)}); fix or remove them") from exc
    return prepare_tokenizer(tokenizer, vocab_rows)


def tokenizer_files(source: str | os.PathLike) -> dict[str, str]:
    """{file name: text} of the tokenizer files in directory ``source`` (to carry them in a
    weightshare file); empty when there are none."""
    path = Path(source)
    files: dict[str, str] = {}
    total = 0
    for name in TOKENIZER_FILES:
        file = path / name
        if file.is_file():
            total += file.stat().st_size
            if total > MAX_TOKENIZER_BYTES:
                raise ModelLoadError(f"the tokenizer files in {str(path)!r} are over "
                                     f"{MAX_TOKENIZER_BYTES // 2**20} MiB; keep them beside the "
                                     "file instead (no --embed-tokenizer)")
            files[name] = file.read_text(encoding="utf-8")
    return files


def tokenizer_from_files(files: dict[str, str], vocab_rows: int | None = None) -> Any | None:
    """A guarded tokenizer from ``{file name: text}`` (as :func:`tokenizer_files` returns
    and weightshare files carry); None when ``files`` is empty.

    Only the known tokenizer file names are written (to a temporary directory that is
    removed afterwards), so a file cannot make this write anywhere else.
    """
    if not files:
        return None
    if not isinstance(files, dict) or any(not isinstance(v, str) for v in files.values()):
        raise ModelLoadError("the tokenizer files carried in the weightshare file are malformed; "
                             "save the file again")
    unknown = sorted(set(files) - set(TOKENIZER_FILES))
    if unknown:
        raise ModelLoadError(f"the weightshare file carries unknown tokenizer files {unknown[:3]};"
                             " save the file again")
    with tempfile.TemporaryDirectory(prefix="weightshare-tok-") as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        tokenizer: Any = load_tokenizer(tmp, local_only=True, vocab_rows=vocab_rows)
        with contextlib.suppress(AttributeError):
            tokenizer.name_or_path = ""  # the temporary directory is gone
    return tokenizer


def input_vocab_rows(model: Any) -> int | None:
    """Rows of a transformers model's input embedding (what token ids may index)."""
    get = getattr(model, "get_input_embeddings", None)
    if get is None:
        return None
    try:
        emb = get()
    except (NotImplementedError, AttributeError):
        return None
    num = getattr(emb, "num_embeddings", None)
    return int(num) if isinstance(num, int) else None
