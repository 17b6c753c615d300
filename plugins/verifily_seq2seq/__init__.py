"""Built-in model loader ``seq2seq``: any ``AutoModelForSeq2SeqLM`` model, from a Hub id or a local path."""

from __future__ import annotations

from typing import Any

from verifily_core import hookimpl
from verifily_core.interfaces import ModelLoader
from verifily_core.modeling import PretrainedLoader


class Seq2SeqLoader(PretrainedLoader, ModelLoader):
    """Loads encoder-decoder models and their tokenizer (pad token set to eos when missing)."""

    name = "seq2seq"
    kind = "seq2seq"

    def matches(self, model_config: Any) -> bool:
        """True for encoder-decoder models."""
        return bool(model_config.is_encoder_decoder)


@hookimpl
def verifily_register_model_loaders(registry: Any) -> None:
    """Register the ``seq2seq`` loader."""
    registry.add(Seq2SeqLoader())


@hookimpl(trylast=True)
def verifily_select_model_loader(task: str, model_config: Any) -> str | None:
    """Choose ``seq2seq`` for encoder-decoder models."""
    return "seq2seq" if Seq2SeqLoader().matches(model_config) else None
