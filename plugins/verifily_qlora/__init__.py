"""Built-in plugin ``qlora``: 4-bit / 8-bit quantization (bitsandbytes) for any model loader."""

from __future__ import annotations

from typing import Any

from verifily_core import hookimpl
from verifily_core.errors import TrainingError


@hookimpl
def verifily_model_init_kwargs(config: Any, device: str) -> dict[str, Any] | None:
    """Quantized loading is not implemented yet: it lands with the training issue."""
    if config.lora.quantization == "none":
        return None
    raise TrainingError("QLoRA quantization is not implemented yet in this build")
