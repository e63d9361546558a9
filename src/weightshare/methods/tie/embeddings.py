"""Input embedding <-> output projection tying for language models.

The embedding table E (vocab, hidden) and the output projection W (vocab, hidden)
of ``nn.Linear(hidden, vocab)`` have the same shape, so one tensor can serve both
(Press & Wolf 2017; MobileLLM saves 11.8% of a 125M model this way).

Detection: transformers models name the pair themselves
(``get_input_embeddings()`` / ``get_output_embeddings()``); for plain torch models
the pair is the first ``nn.Embedding`` and the last ``nn.Linear`` whose weight has
the same shape. transformers' own switch, ``config.tie_word_embeddings``, is kept
in step with the model (set on tie, cleared on untie) so that ``save_pretrained`` /
``from_pretrained`` neither re-tie an untied model nor untie a tied one.
"""

from __future__ import annotations

from torch import nn


def find_embedding_pair(model: nn.Module) -> tuple[str, str] | None:
    """(input embedding weight fqn, output projection weight fqn), or None.

    Example:
        >>> from torch import nn
        >>> lm = nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 8), nn.Linear(8, 50))
        >>> find_embedding_pair(lm)
        ('0.weight', '2.weight')
    """
    names = {id(m): n for n, m in model.named_modules()}
    pair = _transformers_pair(model, names)
    if pair is not None:
        return pair
    embeddings = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    for lname, lin in reversed(linears):
        for ename, emb in embeddings:
            if tuple(lin.weight.shape) == tuple(emb.weight.shape):
                return _weight(ename), _weight(lname)
    return None


def _transformers_pair(model: nn.Module, names: dict[int, str]) -> tuple[str, str] | None:
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    if not (callable(get_in) and callable(get_out)):
        return None
    try:
        inp, out = get_in(), get_out()
    except (NotImplementedError, AttributeError):
        return None
    if inp is None or out is None or id(inp) not in names or id(out) not in names:
        return None
    if not (hasattr(inp, "weight") and hasattr(out, "weight")):
        return None
    return _weight(names[id(inp)]), _weight(names[id(out)])


def _weight(module_name: str) -> str:
    return f"{module_name}.weight" if module_name else "weight"


def set_tie_word_embeddings(model: nn.Module, value: bool) -> None:
    """Keep a transformers config's ``tie_word_embeddings`` in step with the model."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "tie_word_embeddings"):
        return
    config.tie_word_embeddings = value
    get_text = getattr(config, "get_text_config", None)
    text = get_text() if callable(get_text) else None
    if text is not None and text is not config and hasattr(text, "tie_word_embeddings"):
        text.tie_word_embeddings = value


def wants_tied_embeddings(model: nn.Module) -> bool:
    """Whether a transformers config asks for tied word embeddings."""
    config = getattr(model, "config", None)
    return bool(getattr(config, "tie_word_embeddings", False))
