"""Built-in plugin ``qlora``: 4-bit / 8-bit quantized base models (bitsandbytes) for any loader.

``lora.quantization: 4bit`` loads the base model in NF4 with double quantization and
``lora.bnb_4bit_compute_dtype``; ``8bit`` uses LLM.int8(). The model is then prepared with
``peft.prepare_model_for_kbit_training``. Heavy imports happen in :mod:`verifily_qlora.quantize`.
"""

from __future__ import annotations

from typing import Any

from verifily_core import hookimpl


@hookimpl
def verifily_validate_config(config: Any) -> list[str] | None:
    """Quantization cannot run on Apple MPS, and needs LoRA."""
    if config.lora.quantization != "none" and config.compute.device == "mps":
        return ["$.lora.quantization: bitsandbytes quantization does not run on mps; use cpu or cuda"]
    return None


@hookimpl
def verifily_model_init_kwargs(config: Any, device: str) -> dict[str, Any] | None:
    """``quantization_config`` (and device placement) for ``from_pretrained``."""
    if config.lora.quantization == "none":
        return None
    from verifily_qlora.quantize import init_kwargs

    return init_kwargs(config, device)


@hookimpl
def verifily_prepare_model(model: Any, config: Any) -> None:
    """``prepare_model_for_kbit_training`` and the CPU 4-bit gradient fix, for quantized models."""
    if config.lora.quantization == "none":
        return
    from verifily_qlora.quantize import prepare

    prepare(model)
