"""Built-in model loader ``causal_lm``: any ``AutoModelForCausalLM`` model, from a Hub id or a local path."""

from __future__ import annotations

from typing import Any

from verifily_core import hookimpl
from verifily_core.interfaces import ModelLoader
from verifily_core.modeling import PretrainedLoader


class CausalLMLoader(PretrainedLoader, ModelLoader):
    """Loads decoder-only models and their tokenizer (pad token set to eos when missing)."""

    name = "causal_lm"
    kind = "causal_lm"

    def matches(self, model_config: Any) -> bool:
        """True for decoder-only models."""
        return bool(not model_config.is_encoder_decoder)


@hookimpl
def verifily_register_model_loaders(registry: Any) -> None:
    """Register the ``causal_lm`` loader."""
    registry.add(CausalLMLoader())


@hookimpl(trylast=True)
def verifily_select_model_loader(task: str, model_config: Any) -> str | None:
    """Choose ``causal_lm`` for decoder-only models."""
    return "causal_lm" if CausalLMLoader().matches(model_config) else None
