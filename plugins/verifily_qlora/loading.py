"""Quantized loading: the ``BitsAndBytesConfig``, compute dtype, placement and a device check.

Imports torch, transformers and bitsandbytes; imported only when a quantized model is loaded.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch

from verifily_core.errors import ConfigError

log = logging.getLogger("verifily.qlora")
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # optional CPU kernels it reports missing
warnings.filterwarnings("ignore", category=UserWarning, module=r"bitsandbytes\..*")

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
SEQ_CLS_HEADS = ("classifier", "score", "pooler")
"""Modules of sequence-classification models trained in full (PEFT ``modules_to_save``), so never
quantized: the head (``classifier`` for encoders, ``score`` for decoders) and a task pooler beside
the backbone (DeBERTa's ``pooler``). Names match top-level modules and name suffixes."""
SEQ_CLS_TASKS = ("classification",)
SEQ_CLS_LOADERS = ("sequence_classification",)


def init_kwargs(config: Any, device: str) -> dict[str, Any]:
    """``from_pretrained`` arguments for ``lora.quantization``: ``quantization_config`` and
    ``device_map`` (a quantized model cannot be moved with ``.to()`` after loading).

    :raises ConfigError: when bitsandbytes cannot run the quantized layers on ``device``.
    """
    bits = config.lora.quantization
    check_device(bits, device)
    return {"quantization_config": quantization_config(config, device), "device_map": device_map(device)}


def quantization_config(config: Any, device: str) -> Any:
    """4-bit: NF4 with double quantization and the compute dtype of :func:`compute_dtype`;
    8-bit: LLM.int8(). Sequence-classification heads stay in full precision."""
    from transformers import BitsAndBytesConfig

    skip = list(SEQ_CLS_HEADS) if _is_sequence_classification(config) else None
    if config.lora.quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype(config.lora.bnb_4bit_compute_dtype, device),
            llm_int8_skip_modules=skip,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


def compute_dtype(name: str, device: str) -> torch.dtype:
    """The dtype 4-bit layers compute in: ``lora.bnb_4bit_compute_dtype`` where the device runs
    it fast, otherwise ``float32`` (or ``float16`` on GPUs without bfloat16), with a log line.

    On CPU, float16 matmuls are emulated (about 17x slower than float32 on a small Llama) and
    bfloat16 is fast only with AVX512-BF16 (about 11x slower than float32 without it).
    """
    dtype = DTYPES[name]
    kind = torch.device(device).type
    if kind == "cpu":
        if dtype == torch.float16:
            log.warning("lora.bnb_4bit_compute_dtype=float16 is very slow on CPU; 4-bit layers compute in float32")
            return torch.float32
        if dtype == torch.bfloat16 and not cpu_has_bf16():
            log.info("this CPU lacks AVX512-BF16; 4-bit layers compute in float32 instead of bfloat16")
            return torch.float32
    elif kind == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        log.warning("%s does not support bfloat16; 4-bit layers compute in float16", device)
        return torch.float16
    return dtype


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX512-BF16), as bitsandbytes detects it."""
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16())


def device_map(device: str) -> dict[str, Any]:
    """The whole model on one device: ``{"": "cpu"}``, ``{"": 0}`` for ``cuda``/``cuda:0``, ..."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return {"": dev.index if dev.index is not None else torch.cuda.current_device()}
    return {"": str(dev)}


def check_device(bits: str, device: str) -> None:
    """Run one tiny quantized layer forward and backward (and an inference pass) on ``device``.

    :raises ConfigError: naming the bitsandbytes version, the device and the failure, when the
        installed bitsandbytes build cannot train ``bits`` layers there.
    """
    try:
        import bitsandbytes as bnb
    except Exception as exc:  # a broken build raises anything from ImportError to RuntimeError
        raise ConfigError(f"$.lora.quantization: bitsandbytes cannot be imported ({_first_line(exc)}); "
                          "reinstall it (pip install -U 'verifily-train[qlora]') or set lora.quantization=none") from None
    version = getattr(bnb, "__version__", "?")
    try:
        _probe(bnb, bits, torch.device(device))
    except Exception as exc:
        raise ConfigError(
            f"$.lora.quantization: bitsandbytes {version} cannot run {bits} layers on {device} "
            f"({_first_line(exc)}); use another --device, a bitsandbytes build for this device, "
            "or lora.quantization=none"
        ) from None


def _probe(bnb: Any, bits: str, device: torch.device) -> None:
    with torch.random.fork_rng(devices=[]):  # leave the seeded CPU RNG as it was for the real model
        if bits == "4bit":
            layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
            layer.support_avx512bf16_for_cpu = False
        else:
            layer = bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False)
        layer = layer.to(device)
        x = torch.randn(4, 64).to(device).requires_grad_()
        layer(x).sum().backward()
        if x.grad is None or not torch.isfinite(x.grad).all():
            raise RuntimeError("no usable gradient through the quantized layer")
        layer.eval()
        with torch.no_grad():
            layer(x)


def _is_sequence_classification(config: Any) -> bool:
    return config.task in SEQ_CLS_TASKS or config.model.loader in SEQ_CLS_LOADERS


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
