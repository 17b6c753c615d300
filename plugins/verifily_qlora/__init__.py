"""Built-in plugin ``qlora``: 4-bit / 8-bit quantized base models (bitsandbytes) for any loader.

``lora.quantization: 4bit`` loads the base model in NF4 with double quantization and the
compute dtype ``lora.bnb_4bit_compute_dtype``; ``8bit`` uses LLM.int8(). The model is placed on
the training device at load time, then prepared with ``peft.prepare_model_for_kbit_training``;
on CPU the 4-bit layers are kept trainable across evaluation passes. Guide: ``docs/qlora.md``.

Heavy imports happen in :mod:`verifily_qlora.loading` and :mod:`verifily_qlora.preparation`,
imported only when a quantized model is loaded. That bitsandbytes is installed at all is
checked when the config is validated (:func:`verifily_validate_config`), without importing it.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from verifily_core import hookimpl

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from verifily_core.config import TrainConfig


@hookimpl
def verifily_validate_config(config: TrainConfig) -> list[str] | None:
    """A quantized config needs bitsandbytes installed (found without importing it)."""
    if config.lora.quantization == "none" or importlib.util.find_spec("bitsandbytes") is not None:
        return None
    return [
        f"$.lora.quantization: '{config.lora.quantization}' needs bitsandbytes, which is not "
        "installed; run: pip install 'verifily-train[qlora]'"
    ]


@hookimpl
def verifily_environment_packages(config: TrainConfig) -> list[str] | None:
    """``bitsandbytes``: its kernels compute a quantized run's results."""
    return ["bitsandbytes"] if config.lora.quantization != "none" else None


@hookimpl
def verifily_model_init_kwargs(config: TrainConfig, device: str) -> dict[str, Any] | None:
    """``quantization_config`` and ``device_map`` for ``from_pretrained`` when quantizing;
    a ConfigError when bitsandbytes cannot run the quantized layers on ``device``."""
    if config.lora.quantization == "none":
        return None
    from verifily_qlora.loading import init_kwargs

    return init_kwargs(config, device)


@hookimpl
def verifily_prepare_model(model: PreTrainedModel, config: TrainConfig) -> None:
    """``prepare_model_for_kbit_training`` and the CPU 4-bit gradient fix, for quantized models."""
    if config.lora.quantization == "none":
        return
    from verifily_qlora.preparation import prepare

    prepare(model, config)
