"""Preparing a quantized base model for LoRA training (imports torch, peft, bitsandbytes).

The CPU repacking trap: on CPUs with AVX512-BF16, bitsandbytes' ``Linear4bit.forward`` repacks
its weights into a layout for a fast CPU inference kernel the first time it runs in eval mode on
an input without gradients (an evaluation pass during training). From then on every forward,
training included, goes through that kernel, which has no autograd support: no gradient flows
back through the base layers, so the LoRA parameters silently get ``None`` gradients and
training stops learning. :func:`disable_cpu_repacking` turns the repacking off (and undoes a
repacking that already happened) on every ``Linear4bit`` layer.
"""

from __future__ import annotations

import logging
from typing import Any

from verifily_core.errors import ConfigError, TrainingError

log = logging.getLogger("verifily.qlora")


def prepare(model: Any, config: Any) -> None:
    """Prepare a freshly loaded quantized model in place: check it really is quantized,
    ``peft.prepare_model_for_kbit_training`` (base frozen, norms and embeddings in float32;
    non-reentrant gradient checkpointing as ``training.optimizations.gradient_checkpointing`` says,
    by default on GPUs only), then keep its 4-bit layers trainable on CPU.

    :raises ConfigError: when ``lora.quantization`` is set but the loader returned a model
        that is not quantized (it ignored the ``quantization_config`` argument).
    """
    from peft import prepare_model_for_kbit_training

    bits = config.lora.quantization
    if not is_quantized(model, bits):
        raise ConfigError(f"$.lora.quantization: {bits} was requested but the model loader returned an unquantized "
                          f"{type(model).__name__}; use a loader that passes quantization_config to from_pretrained")
    from verifily_core.modeling import uses_gradient_checkpointing

    checkpointing = uses_gradient_checkpointing(config, _device_type(model))
    prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing,
                                    gradient_checkpointing_kwargs={"use_reentrant": False})
    layers = disable_cpu_repacking(model)
    log.info("QLoRA %s: %s; gradient checkpointing %s", bits, _describe(model, layers),
             "on" if checkpointing else "off")


def is_quantized(model: Any, bits: str) -> bool:
    """Whether ``model`` was loaded by bitsandbytes in ``bits`` (``4bit`` or ``8bit``)."""
    return bool(getattr(model, "is_loaded_in_4bit" if bits == "4bit" else "is_loaded_in_8bit", False))


def disable_cpu_repacking(model: Any) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for its CPU inference kernel, and unpack
    layers already repacked, so LoRA keeps receiving gradients after an evaluation pass.

    Sets ``support_avx512bf16_for_cpu = False`` on every ``bnb.nn.Linear4bit`` (the flag
    ``Linear4bit.forward`` checks before repacking). Evaluation passes during training then use
    the dequantizing path, which supports autograd. Returns the number of 4-bit layers.
    """
    import bitsandbytes as bnb

    count = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            _unpack(module)
            count += 1
    return count


def _unpack(layer: Any) -> None:
    """Undo the CPU inference layout of one ``Linear4bit`` if it was already applied."""
    state = getattr(layer.weight, "quant_state", None)
    if state is None or not getattr(state, "packing_format_for_cpu", False):
        return
    from bitsandbytes import functional

    inverse = getattr(functional, "_convert_weight_packed_for_cpu_inverse", None)
    if inverse is None:
        raise TrainingError("bitsandbytes repacked 4-bit weights for CPU inference before training and this "
                            "version cannot undo it; run no evaluation pass before verifily_prepare_model")
    layer.weight.data, layer.weight.quant_state = inverse(layer.weight.data, state)
    layer.quant_state = layer.weight.quant_state


def _describe(model: Any, layers_4bit: int) -> str:
    if layers_4bit:
        import bitsandbytes as bnb

        dtype = next(m.compute_dtype for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))
        return f"{layers_4bit} NF4 layers computing in {str(dtype).removeprefix('torch.')}"
    return "LLM.int8() layers"


def _device_type(model: Any) -> str:
    for param in model.parameters():
        return param.device.type
    return "cpu"
