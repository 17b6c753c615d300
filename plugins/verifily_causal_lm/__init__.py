"""Built-in model loader ``causal_lm``: any ``AutoModelForCausalLM`` model, from a Hub id or a local path."""

from __future__ import annotations

from typing import Any

from verifily_core import hookimpl
from verifily_core.interfaces import ModelLoader


class CausalLMLoader(ModelLoader):
    """Loads ``causal_lm`` models and their tokenizer (pad token set to eos when missing)."""

    name = "causal_lm"
    kind = "causal_lm"

    def matches(self, model_config: Any) -> bool:
        """True for decoder-only models."""
        return bool(not model_config.is_encoder_decoder)

    def load(self, job: Any, auto_class: str = "AutoModelForCausalLM", **kwargs: Any) -> tuple[Any, Any]:
        """Load ``(model, tokenizer)`` of ``job.base_model``; ``kwargs`` go to ``from_pretrained``."""
        from verifily_core.modeling import load_model, load_tokenizer

        tokenizer = load_tokenizer(job.base_model, job.config, token=job.hf_token)
        model = load_model(auto_class, job.base_model, job.config, token=job.hf_token, **kwargs)
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return model, tokenizer


@hookimpl
def verifily_register_model_loaders(registry: Any) -> None:
    """Register the ``causal_lm`` loader."""
    registry.add(CausalLMLoader())


@hookimpl(trylast=True)
def verifily_select_model_loader(task: str, model_config: Any) -> str | None:
    """Choose ``causal_lm`` for decoder-only models."""
    return "causal_lm" if CausalLMLoader().matches(model_config) else None
