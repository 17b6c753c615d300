"""Quantized loading and preparation (imports torch, transformers, peft, bitsandbytes)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import BitsAndBytesConfig

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def init_kwargs(config: Any, device: str) -> dict[str, Any]:
    """``quantization_config`` for 4-bit NF4 (double quant) or 8-bit, placed on ``device``."""
    if config.lora.quantization == "4bit":
        qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=DTYPES[config.lora.bnb_4bit_compute_dtype])
    else:
        qc = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": qc, "device_map": {"": device}}


def disable_cpu_repacking(model: Any) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for its CPU inference kernel.

    On CPUs with AVX512-BF16, ``Linear4bit`` repacks its weights at the first forward pass
    run without gradients (e.g. an evaluation pass); LoRA gradients then silently become
    ``None`` for the rest of training. Returns the number of layers changed.
    """
    import bitsandbytes as bnb

    count = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def prepare(model: Any) -> None:
    """Prepare a quantized model for LoRA training in place."""
    from peft import prepare_model_for_kbit_training

    on_cpu = next(model.parameters()).device.type == "cpu"
    prepare_model_for_kbit_training(model, use_gradient_checkpointing=not on_cpu)
    disable_cpu_repacking(model)
