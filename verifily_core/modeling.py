"""Shared model-loading helpers for loader plugins: devices, tokenizers, ``from_pretrained``.

Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import logging
from typing import Any

from verifily_core.errors import ConfigError, TrainingError

log = logging.getLogger("verifily.modeling")


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` > ``mps`` > ``cpu``; explicit devices are checked to exist."""
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"$.compute.device: '{requested}' requested but CUDA is not available; use auto or cpu")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("$.compute.device: 'mps' requested but MPS is not available; use auto or cpu")
    return requested


def precision_flags(device: str, bf16: bool, fp16: bool) -> dict[str, bool]:
    """Mixed-precision flags the device supports; unsupported requests fall back to fp32 with a note."""
    import torch

    out = {"bf16": False, "fp16": False}
    if device.startswith("cuda"):
        if bf16 and torch.cuda.is_bf16_supported():
            out["bf16"] = True
        elif bf16:
            log.warning("bf16 is not supported on %s; training in fp32 (set compute.fp16=true to use fp16)", device)
        if fp16:
            out["fp16"] = True
    elif fp16 or bf16:
        if fp16:
            log.warning("fp16 mixed precision needs CUDA; training in fp32 on %s", device)
        else:
            log.info("bf16 mixed precision is used on CUDA only; training in fp32 on %s", device)
    return out


def load_tokenizer(source: str, config: Any, token: str | None = None) -> Any:
    """Load a tokenizer and make sure it has a pad token (the eos token when it has none)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=config.model.trust_remote_code,
                                            revision=config.model.revision, token=token)
    except OSError as exc:
        raise ConfigError(f"$.base_model: cannot load a tokenizer from '{source}' ({_first_line(exc)})") from None
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ConfigError(f"$.base_model: the tokenizer of '{source}' has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    return tok


def load_model(auto_class: str, source: str, config: Any, token: str | None = None, **kwargs: Any) -> Any:
    """``transformers.<auto_class>.from_pretrained(source, ...)`` with one-line errors."""
    import transformers

    cls = getattr(transformers, auto_class)
    try:
        return cls.from_pretrained(source, trust_remote_code=config.model.trust_remote_code,
                                   revision=config.model.revision, token=token, **kwargs)
    except OSError as exc:
        raise ConfigError(f"$.base_model: cannot load '{source}' ({_first_line(exc)})") from None
    except ValueError as exc:
        raise ConfigError(f"$.base_model: '{source}' cannot be loaded as {auto_class} ({_first_line(exc)})") from None


def load_model_config(source: str, config: Any, token: str | None = None) -> Any:
    """The base model's ``PretrainedConfig`` (no weights loaded)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=config.model.trust_remote_code,
                                          revision=config.model.revision, token=token)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"$.base_model: cannot read the model config of '{source}' ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def raise_training_error(exc: BaseException) -> None:
    """Turn device errors into TrainingError with advice (out of memory in particular)."""
    msg = _first_line(exc)
    if "out of memory" in msg.lower() or type(exc).__name__ == "OutOfMemoryError":
        raise TrainingError(f"out of memory ({msg}); lower training.batch_size, raise "
                            "training.gradient_accumulation_steps, shorten training.max_seq_length or use "
                            "--quantization 4bit") from exc
    raise TrainingError(f"training failed: {type(exc).__name__}: {msg}") from exc
