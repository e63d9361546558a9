"""What a MODEL argument names, resolved before any weight is read.

Every verb takes the same forms: ``minilm``, a transformers directory, a hub id, or a
weightshare file. :func:`resolve` reads only what is cheap (``config.json`` or the
file's metadata, and the tokenizer), so that every flag can be checked against the
model's structure (:meth:`ModelSource.skeleton`: the model built on the meta device,
no weights, no memory) before the weights load (:meth:`ModelSource.load`).

A weightshare file records its ``base`` (the directory, hub id or ``minilm`` the
original came from) and its ``kind``, and may carry its tokenizer files; so a file
made from a file made from a directory still finds its tokenizer and its reference.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import FormatError, ModelLoadError
from .hf import (
    MINILM_NAME,
    LoadedModel,
    _quiet_transformers,
    is_sentence_embedding_dir,
    load_model,
    minilm_dir,
    model_kind,
)
from .tokenizer import load_tokenizer, tokenizer_from_files


@dataclass
class ModelSource:
    """A resolved MODEL argument (see the module docstring).

    ``form``: ``minilm``, ``directory``, ``hub`` or ``file``; ``kind``: as
    ``LoadedModel.kind``; ``base``: the original model a file was made from (for the
    other forms, the model itself); ``metadata``: a file's validated metadata.
    """

    spec: str
    form: str
    kind: str
    base: str | None
    path: Path | None = None
    hf_class: str | None = None
    hf_config: dict | None = None
    metadata: dict | None = None
    tokenizer_note: str = ""
    _tokenizer: Any = field(default=None, repr=False)
    _tokenizer_done: bool = field(default=False, repr=False)

    @property
    def vocab_size(self) -> int | None:
        vocab = (self.hf_config or {}).get("vocab_size")
        return vocab if isinstance(vocab, int) and not isinstance(vocab, bool) else None

    @property
    def model_type(self) -> str | None:
        return (self.hf_config or {}).get("model_type")

    def tokenizer(self) -> Any | None:
        """The guarded tokenizer (see ``models.tokenizer``), or None; loaded once."""
        if not self._tokenizer_done:
            self._tokenizer = self._find_tokenizer()
            self._tokenizer_done = True
        return self._tokenizer

    def _find_tokenizer(self) -> Any | None:
        if self.form in ("minilm", "directory") and self.path is not None:
            return load_tokenizer(self.path, vocab_rows=self.vocab_size)
        if self.form == "hub":
            return load_tokenizer(self.spec, local_only=True, vocab_rows=self.vocab_size)
        extra = (self.metadata or {}).get("extra") or {}
        carried = extra.get("tokenizer_files")
        if carried:
            self.tokenizer_note = "tokenizer carried in the file"
            return tokenizer_from_files(carried, vocab_rows=self.vocab_size)
        base = self.base
        if not base:
            self.tokenizer_note = "the file records no base model, so no tokenizer"
            return None
        if base == MINILM_NAME:
            return load_tokenizer(minilm_dir(), vocab_rows=self.vocab_size)
        if Path(base).is_dir():
            return load_tokenizer(base, vocab_rows=self.vocab_size)
        if Path(base).exists() or os.sep in base and not _hub_like(base):
            self.tokenizer_note = (f"the base model {base} is gone, so no tokenizer; save with "
                                   "--embed-tokenizer to carry it in the file")
            return None
        tok = load_tokenizer(base, local_only=True, vocab_rows=self.vocab_size)
        if tok is None:
            self.tokenizer_note = f"the tokenizer of {base} is not in the local hub cache"
        return tok

    def skeleton(self) -> torch.nn.Module | None:
        """The model built on the meta device (no weights, no memory), to check flags
        against its structure before loading; None where that needs the weights (hub ids,
        files, which load fast anyway)."""
        if self.form not in ("minilm", "directory") or self.path is None:
            return None
        from transformers import AutoConfig

        from .hf import _model_class

        with _quiet_transformers():
            try:
                config = AutoConfig.from_pretrained(str(self.path), local_files_only=True)
                cls = _model_class(getattr(config, "architectures", None),
                                   self.kind == "sentence-embedding")
                with torch.device("meta"):
                    model = cls.from_config(config) if cls.__name__.startswith("Auto") \
                        else cls(config)
            except Exception:  # the real load reports what is wrong, with its own message
                return None
        return model.eval()

    def load(self, runtime: str = "train") -> LoadedModel:
        """The model with its weights, its tokenizer and where it came from.

        ``runtime``: the form a weightshare file's shared weights take
        (``weightshare.load``): ``"train"`` to change or fine-tune it, ``"packed"`` to run it.
        """
        if self.form != "file":
            lm = load_model(self.spec)
            self._tokenizer, self._tokenizer_done = lm.tokenizer, True
            return lm
        from ..io import load

        assert self.path is not None
        model = load(self.path, runtime=runtime)
        return LoadedModel(model=model, tokenizer=self.tokenizer(), kind=self.kind,
                           name=self.spec, hf_config=self.hf_config, hf_class=self.hf_class,
                           source_dir=None, base=self.base)


def _hub_like(spec: str) -> bool:
    from .hf import _is_hub_id

    return _is_hub_id(spec)


def resolve(spec: str | os.PathLike = MINILM_NAME) -> ModelSource:
    """Resolve a MODEL argument without loading weights (see the module docstring).

    Example:
        >>> resolve("minilm").kind  # doctest: +SKIP
        'sentence-embedding'
    """
    spec = os.fspath(spec)
    if spec.strip().lower() == MINILM_NAME:
        return _directory(spec, minilm_dir(), MINILM_NAME, "minilm")
    path = Path(spec).expanduser()
    if path.suffix == ".safetensors" and not path.is_file():
        raise FormatError(f"no such file: {spec}; check the path")
    if path.is_file():
        return _file(spec, path)
    if path.is_dir():
        return _directory(spec, path, str(path.resolve()), "directory")
    # hub ids and bad paths: load_model gives the right message for each
    return ModelSource(spec=spec, form="hub", kind="transformers", base=spec)


def _directory(spec: str, path: Path, base: str, form: str) -> ModelSource:
    config_file = path / "config.json"
    config: dict = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads(config_file.read_text(encoding="utf-8"))
        config = loaded if isinstance(loaded, dict) else {}
    archs = config.get("architectures") or [None]
    sentence = is_sentence_embedding_dir(path)
    hf_class = archs[0] if isinstance(archs, list) and archs else None
    return ModelSource(spec=spec, form=form, kind=model_kind(hf_class, sentence), base=base,
                       path=path, hf_class=hf_class, hf_config=config)


def _file(spec: str, path: Path) -> ModelSource:
    from ..io import read_metadata

    meta = read_metadata(path)
    entry = meta.get("model") or {}
    extra = meta.get("extra") or {}
    transformers_model = entry.get("source") == "transformers"
    hf_class = entry.get("class") if transformers_model else None
    kind = extra.get("kind")
    if kind not in ("sentence-embedding", "causal-lm", "transformers", "torch"):
        kind = model_kind(hf_class, False) if transformers_model else "torch"
    base = extra.get("base")
    return ModelSource(spec=spec, form="file", kind=kind,
                       base=base if isinstance(base, str) and base else None, path=path,
                       hf_class=hf_class,
                       hf_config=entry.get("config") if transformers_model else None,
                       metadata=meta)


def open_model(spec: str | os.PathLike = MINILM_NAME, runtime: str = "train") -> LoadedModel:
    """A transformers directory or hub id, a weightshare file, or ``minilm``, with its
    tokenizer found the one way (see ``resolve``).

    Example:
        >>> lm = open_model("minilm")  # doctest: +SKIP
        >>> lm.kind  # doctest: +SKIP
        'sentence-embedding'
    """
    return resolve(spec).load(runtime)


def check_same_model(reference: ModelSource, candidate: ModelSource) -> None:
    """ModelLoadError when ``candidate`` cannot be compared with ``reference``: another
    architecture or another vocabulary."""
    pairs = (("architecture", reference.hf_class, candidate.hf_class),
             ("model type", reference.model_type, candidate.model_type),
             ("vocabulary", reference.vocab_size, candidate.vocab_size))
    for what, ref, cand in pairs:
        if ref is not None and cand is not None and ref != cand:
            raise ModelLoadError(f"the reference {reference.spec} has {what} {ref} but "
                                 f"{candidate.spec} has {cand}; pass the model the file was made "
                                 "from (--reference)")
