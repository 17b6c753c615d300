"""``training.optimizations`` on the local backend: what this machine can run, checked before any
model loads, and how each setting reaches ``TrainingArguments`` and the model.

Import-light: torch (and bitsandbytes for its optimizers) is imported only when a setting needs a
look at the device, so the dry run of a config that sets none of them stays fast.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import warnings
from typing import Any

FIELD = "$.training.optimizations"
BNB_OPTIMIZERS = ("adamw_bnb_8bit", "paged_adamw_8bit", "paged_adamw_32bit")
PAGED_OPTIMIZERS = ("paged_adamw_8bit", "paged_adamw_32bit")
PROBE_ELEMENTS = 64 * 64
"""Elements of the probe parameter: bitsandbytes keeps 8-bit state only for tensors of 4096 or more."""


def needs_device(opts: Any) -> bool:
    """Whether a setting can be checked only by looking at the device (which imports torch)."""
    return bool(opts.optimizer_type not in (None, "adamw_torch") or opts.use_amp or opts.enable_tf32
                or opts.attention_implementation == "flash_attention_2" or opts.use_compile)


def optimization_problems(config: Any) -> list[str]:
    """Settings of ``training.optimizations`` this machine cannot run, as ``$.training.optimizations.<field>``
    lines: a missing package (bitsandbytes, flash-attn, a C++ compiler or triton for torch.compile), a
    device without the feature (fp16 or tf32 off CUDA, bf16 on a GPU without it, flash_attention_2
    off CUDA or before Ampere), an optimizer that fails one step on the device."""
    opts, out = config.training.optimizations, []
    if opts.optimizer_type in BNB_OPTIMIZERS and importlib.util.find_spec("bitsandbytes") is None:
        out.append(f"{FIELD}.optimizer_type: {opts.optimizer_type} needs bitsandbytes, which is not installed; run: "
                   "pip install 'verifily-train[qlora]'")
    if opts.attention_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        out.append(f"{FIELD}.attention_implementation: flash_attention_2 needs the flash-attn package, which is not "
                   "installed (pip install flash-attn, CUDA only); use sdpa")
    if not needs_device(opts) or out:
        return out
    from verifily_core.errors import ConfigError
    from verifily_core.modeling import resolve_device, training_precision

    try:
        device = resolve_device(config.compute.device)
    except ConfigError as exc:
        return [str(exc)]
    kind = device.split(":")[0]
    out.extend(_precision_problems(opts, kind))
    if opts.enable_tf32 and not _tf32_available(kind):
        out.append(f"{FIELD}.enable_tf32: tf32 is a matmul mode of CUDA GPUs from Ampere on; this run trains on "
                   f"{_describe(device)}; set enable_tf32=false")
    if opts.attention_implementation == "flash_attention_2":
        if kind != "cuda" or _capability() < (8, 0):
            out.append(f"{FIELD}.attention_implementation: flash_attention_2 runs on CUDA GPUs from Ampere on; this "
                       f"run trains on {_describe(device)}; use sdpa")
        elif not any(training_precision(config, device)[0].values()) and config.lora.quantization == "none":
            out.append(f"{FIELD}.attention_implementation: flash_attention_2 computes in fp16 or bf16 only and this "
                       "run trains in fp32; set training.optimizations.use_amp=true")
    if opts.use_compile:
        out.extend(_compile_problems(kind))
    if opts.optimizer_type not in (None, "adamw_torch") and not out:
        problem = _optimizer_problem(opts.optimizer_type, device)
        if problem:
            out.append(f"{FIELD}.optimizer_type: {opts.optimizer_type} cannot run on {device} ({problem}); use "
                       "adamw_torch")
    return out


def _precision_problems(opts: Any, kind: str) -> list[str]:
    if not opts.use_amp:
        return []
    import torch

    if opts.amp_dtype == "fp16" and kind != "cuda":
        return [f"{FIELD}.amp_dtype: fp16 mixed precision needs a CUDA GPU; this run trains on {kind}; use "
                "amp_dtype=bf16" + (" (CPU autocast)" if kind == "cpu" else "") + " or use_amp=false"]
    if opts.amp_dtype == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        return [f"{FIELD}.amp_dtype: this GPU has no bf16; use amp_dtype=fp16"]
    if kind == "mps":
        return [f"{FIELD}.use_amp: mixed precision is supported on CUDA (bf16, fp16) and CPU (bf16); set use_amp=false "
                "on mps"]
    return []


def _describe(device: str) -> str:
    if not device.startswith("cuda"):
        return device
    import torch

    major, minor = torch.cuda.get_device_capability()
    return f"{torch.cuda.get_device_name()} (compute capability {major}.{minor})"


def _capability() -> tuple[int, int]:
    import torch

    return tuple(torch.cuda.get_device_capability())  # type: ignore[return-value]


def _tf32_available(kind: str) -> bool:
    if kind != "cuda":
        return False
    import torch

    return bool(torch.version.cuda) and _capability() >= (8, 0)


def _compile_problems(kind: str) -> list[str]:
    if kind == "mps":
        return [f"{FIELD}.use_compile: torch.compile of training is supported on CUDA and CPU here, not mps; set "
                "use_compile=false"]
    if kind == "cpu" and not (os.environ.get("CXX") or any(shutil.which(c) for c in ("g++", "c++", "clang++"))):
        return [f"{FIELD}.use_compile: torch.compile on CPU needs a C++ compiler (g++ or clang++ on PATH, or $CXX); "
                "install one or set use_compile=false"]
    if kind == "cuda" and importlib.util.find_spec("triton") is None:
        return [f"{FIELD}.use_compile: torch.compile on CUDA needs triton, which is not installed; set "
                "use_compile=false"]
    return []


def _optimizer_problem(name: str, device: str) -> str | None:
    """Why one step of optimizer ``name`` on a small parameter on ``device`` fails, or ``None``."""
    import torch

    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # paged optimizers on CPU fall back to unpaged, with a warning
            param = torch.nn.Parameter(torch.ones(PROBE_ELEMENTS, device=device))
            optimizer = _optimizer_class(name)([param], lr=1e-3)
            param.grad = torch.full_like(param, 0.5)
            optimizer.step()
            if not torch.isfinite(param).all() or bool((param == 1).all()):
                return "one step left the parameter unchanged or non-finite"
    except Exception as exc:  # a missing kernel, an unsupported device: anything the library raises
        lines = str(exc).strip().splitlines()
        return lines[0] if lines else type(exc).__name__
    return None


def _optimizer_class(name: str) -> Any:
    import functools

    import torch

    if name == "adamw_torch_fused":
        return functools.partial(torch.optim.AdamW, fused=True)
    import bitsandbytes as bnb

    return {"adamw_bnb_8bit": bnb.optim.AdamW8bit, "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
            "paged_adamw_32bit": bnb.optim.PagedAdamW32bit}[name]


def argument_values(config: Any, device: str) -> dict[str, Any]:
    """The ``TrainingArguments`` keyword arguments of ``training.optimizations``: ``optim``, ``tf32``,
    (activation/gradient) checkpointing with ``use_reentrant: False``, ``torch_compile`` and its mode."""
    from transformers import TrainingArguments

    from verifily_core.modeling import uses_gradient_checkpointing

    opts, values = config.training.optimizations, {}
    if opts.optimizer_type:
        values["optim"] = opts.optimizer_type
    if opts.enable_tf32:
        values["tf32"] = True
    elif opts.use_compile and device.startswith("cuda"):
        values["tf32"] = False  # the Trainer turns tf32 on for compiled runs unless told otherwise
    if uses_gradient_checkpointing(config, device):
        names = {f.name for f in dataclasses.fields(TrainingArguments)}
        prefix = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
        values.update({prefix: True, f"{prefix}_kwargs": {"use_reentrant": False}})
    if opts.use_compile:
        values.update(torch_compile=True, torch_compile_mode=opts.compile_mode)
    return values


def prepare_training_model(model: Any, config: Any, device: str) -> None:
    """What ``training.optimizations`` does to an assembled model before training (and before the
    ``--check-batch`` pass): non-reentrant checkpointing when on; a note when a paged optimizer
    cannot page (off CUDA, bitsandbytes trains with the unpaged one)."""
    import logging

    from verifily_core.modeling import uses_gradient_checkpointing

    if uses_gradient_checkpointing(config, device):
        enable_checkpointing(model)
    if config.training.optimizations.optimizer_type in PAGED_OPTIMIZERS and not device.startswith("cuda"):
        logging.getLogger("verifily.local").warning(
            "training.optimizations.optimizer_type=%s pages optimizer state on CUDA only; on %s it trains as the "
            "unpaged optimizer", config.training.optimizations.optimizer_type, device)
        warnings.filterwarnings("ignore", message="Paged optimizers are not supported", category=UserWarning)


def enable_checkpointing(model: Any) -> None:
    """Non-reentrant activation checkpointing on ``model`` (a PEFT model or a plain one), with the
    inputs of the frozen embeddings requiring gradients so that LoRA layers behind them get theirs."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    if getattr(getattr(model, "config", None), "use_cache", None):
        model.config.use_cache = False  # a cache is useless while training and clashes with checkpointing


def describe(config: Any, device: str, model: Any = None, trainer_args: Any = None,
             collator: Any = None, accelerator: Any = None) -> dict[str, Any]:
    """What a run trains with, as recorded in ``run_meta.json`` (``optimizations``): the optimizer
    (the Trainer's choice when unset), precision, tf32, the attention the model was loaded with,
    checkpointing, compilation, the form of the training batches (``batches``: the
    collator's ``batch_form``, e.g. ``padding-free`` for packed SFT rows, else ``padded``) and
    the parallelism the Trainer's ``accelerator`` actually set up (``parallelism``: ``none``,
    ``ddp``, or ``fsdp``/``deepspeed`` when an accelerate config asked for them and they ran)."""
    from verifily_core.modeling import training_precision, uses_gradient_checkpointing

    opts = config.training.optimizations
    flags, _ = training_precision(config, device)
    optim = getattr(trainer_args, "optim", None) or opts.optimizer_type
    model_config = getattr(model, "config", None)
    return {
        "optimizer_type": str(getattr(optim, "value", optim)),
        "precision": "bf16" if flags["bf16"] else "fp16" if flags["fp16"] else "fp32",
        "tf32": bool(opts.enable_tf32),
        "attention_implementation": getattr(model_config, "_attn_implementation", None) or opts.attention_implementation,
        "gradient_checkpointing": uses_gradient_checkpointing(config, device),
        "compile": opts.compile_mode if opts.use_compile else None,
        "batches": getattr(collator, "batch_form", "padded"),
        "parallelism": _parallelism(accelerator),
    }


def _parallelism(accelerator: Any) -> str | None:
    """``none``, ``ddp``, ``fsdp``, ``deepspeed`` (or the accelerate name of another) from the
    accelerator's ``distributed_type``; ``None`` without an accelerator."""
    kind = getattr(getattr(accelerator, "distributed_type", None), "value", None)
    if kind is None:
        return None
    kind = str(kind).lower()
    if kind == "no":
        return "none"
    return "ddp" if kind.startswith("multi_") else kind
