"""Shared model-loading helpers for loader plugins: devices, tokenizers, ``from_pretrained``.

Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs

from verifily_core.errors import ConfigError, TrainingError


@attrs.frozen
class ModelSource:
    """What a loader needs to load a base model: the config, the plugins and the Hub token.

    A :class:`~verifily_core.jobs.TrainJob` offers the same attributes.
    """

    config: Any
    registries: Any = attrs.field(repr=False)
    hf_token: str | None = attrs.field(default=None, repr=False)

    @property
    def base_model(self) -> str:
        """The base model id or path."""
        return self.config.base_model

    @property
    def task(self) -> str:
        """The task name."""
        return self.config.task


def quiet_libraries() -> None:
    """Silence progress bars and deprecation chatter of the libraries; our own progress goes to stderr."""
    import warnings

    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(peft|bitsandbytes)\..*")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` > ``mps`` > ``cpu``; explicit devices are checked to exist."""
    import torch

    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"$.compute.device: '{requested}' requested but CUDA is not available; use auto or cpu")
        if requested not in ("cuda", "cuda:0"):  # the Trainer always trains on the first visible GPU
            raise ConfigError(f"$.compute.device: '{requested}' is not supported; to train on GPU N set "
                              "CUDA_VISIBLE_DEVICES=N and use compute.device=cuda")
    elif requested == "mps" and not mps:
        raise ConfigError("$.compute.device: 'mps' requested but MPS is not available; use auto or cpu")
    return requested


def precision_flags(device: str, bf16: bool, fp16: bool) -> tuple[dict[str, bool], str]:
    """The mixed-precision flags the device supports, and a one-line description of the choice.

    ``compute.bf16`` means "bf16 where supported" (CUDA with bf16 support); ``compute.fp16``
    needs CUDA. Anything else trains in fp32, and the description says why.
    """
    import torch

    cuda = device.startswith("cuda")
    if bf16 and cuda and torch.cuda.is_bf16_supported():
        return {"bf16": True, "fp16": False}, "bf16 mixed precision"
    if fp16 and cuda:
        return {"bf16": False, "fp16": True}, "fp16 mixed precision"
    if bf16 and cuda:
        return {"bf16": False, "fp16": False}, "fp32 (this GPU has no bf16; set compute.fp16=true for fp16)"
    if bf16 or fp16:
        wanted = "bf16" if bf16 else "fp16"
        return {"bf16": False, "fp16": False}, f"fp32 ({wanted} mixed precision is used on CUDA only)"
    return {"bf16": False, "fp16": False}, "fp32"


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


def choose_loader(job: Any) -> Any:
    """The configured loader, or the one the ``verifily_select_model_loader`` hook names."""
    regs, cfg = job.registries, job.config
    if cfg.model.loader != "auto":
        return regs.model_loaders.get(cfg.model.loader)
    model_config = load_model_config(job.base_model, cfg, token=job.hf_token)
    name = regs.hook.verifily_select_model_loader(task=cfg.task, model_config=model_config, config=cfg)
    if name is None:
        raise ConfigError(f"$.model.loader: no installed loader fits '{job.base_model}' "
                          f"({type(model_config).__name__}); set model.loader explicitly")
    return regs.model_loaders.get(name)


def init_kwargs(job: Any, device: str) -> dict[str, Any]:
    """Merge the ``verifily_model_init_kwargs`` answers of all plugins; a key given twice is an error."""
    merged: dict[str, Any] = {}
    for part in job.registries.hook.verifily_model_init_kwargs(config=job.config, device=device):
        for key, value in (part or {}).items():
            if key in merged:
                raise ConfigError(f"two plugins both set the model loading argument '{key}'")
            merged[key] = value
    return merged


class PretrainedLoader:
    """Mixin for loaders of ``transformers`` models: ``load()`` via ``from_pretrained`` of the
    requested Auto class from a Hub id or local path, tokenizer with a pad token."""

    def load(self, job: Any, auto_class: str, **kwargs: Any) -> tuple[Any, Any]:
        """Load ``(model, tokenizer)`` of ``job.base_model``; ``kwargs`` go to ``from_pretrained``."""
        tokenizer = load_tokenizer(job.base_model, job.config, token=job.hf_token)
        model = load_model(auto_class, job.base_model, job.config, token=job.hf_token, **kwargs)
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return model, tokenizer
