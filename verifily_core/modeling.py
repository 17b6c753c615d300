"""Shared model-loading helpers for loader plugins: devices, tokenizers, ``from_pretrained``.

Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from verifily_core.errors import ConfigError, TrainingError, describe_os_error, os_error_of


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
    warnings.filterwarnings("ignore", category=UserWarning, module=r"peft\..*")


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


def training_precision(config: Any, device: str) -> tuple[dict[str, bool], str]:
    """The mixed-precision flags of a training run and their one-line description.

    ``training.optimizations.use_amp`` decides when it is set: ``true`` trains in
    ``amp_dtype`` (config validation has refused a device that cannot), ``false`` in fp32.
    Unset, ``compute.bf16``/``compute.fp16`` apply as "where supported" (:func:`precision_flags`).
    """
    opts = config.training.optimizations
    if opts.use_amp is None:
        return precision_flags(device, config.compute.bf16, config.compute.fp16)
    if not opts.use_amp:
        return {"bf16": False, "fp16": False}, "fp32 (training.optimizations.use_amp=false)"
    bf16 = opts.amp_dtype == "bf16"
    return {"bf16": bf16, "fp16": not bf16}, f"{opts.amp_dtype} mixed precision"


def uses_gradient_checkpointing(config: Any, device: str) -> bool:
    """``training.optimizations.gradient_checkpointing``, or when unset: on for a quantized base on a
    GPU (what PEFT's k-bit preparation does), off otherwise."""
    chosen = config.training.optimizations.gradient_checkpointing
    if chosen is not None:
        return bool(chosen)
    return config.lora.quantization != "none" and device.split(":")[0] not in ("cpu", "mps")


def dataloader_flags(training: Any, device: str) -> dict[str, Any]:
    """The Trainer's data-loading arguments from ``training.dataloader_*`` for the resolved ``device``.

    Worker processes only prepare batches, so these settings cannot change results (they are
    not in the config hash). Pinned memory (default: on CUDA only) helps copies to a CUDA device.

    :raises ConfigError: ``dataloader_pin_memory: true`` and ``device`` is not CUDA.
    """
    pin = training.dataloader_pin_memory
    cuda = device.startswith("cuda")
    if pin and not cuda:
        raise ConfigError(f"$.training.dataloader_pin_memory: pinned memory speeds up copies to a CUDA device and "
                          f"this run trains on {device}; set it to false or null")
    return {"dataloader_num_workers": training.dataloader_num_workers,
            "dataloader_pin_memory": cuda if pin is None else bool(pin),
            "dataloader_persistent_workers": training.dataloader_persistent_workers}


def load_tokenizer(source: str, config: Any, token: str | None = None) -> Any:
    """Load a tokenizer and make sure it has a pad token (the eos token when it has none)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=config.model.trust_remote_code,
                                            revision=config.model.revision, token=token)
    except (OSError, ValueError) as exc:  # ValueError: "Couldn't instantiate the backend tokenizer ..."
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
        if kwargs.get("attn_implementation") and "attention" in str(exc).lower():
            raise ConfigError(f"$.training.optimizations.attention_implementation: '{source}' cannot be loaded with "
                              f"{kwargs['attn_implementation']} ({_first_line(exc)}); choose another or leave it "
                              "unset (the model's default)") from None
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


def raise_training_error(exc: BaseException, run_dir: str | Path | None = None) -> None:
    """Turn device errors into TrainingError with advice (out of memory in particular); a file
    system error (a full disk while writing into ``run_dir``) names the file, else ``run_dir``,
    and what to do (:func:`~verifily_core.errors.describe_os_error`)."""
    os_error = os_error_of(exc, run_dir)
    if os_error is not None:
        raise TrainingError(describe_os_error(os_error, "set output.dir elsewhere", path=run_dir)) from exc
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


@attrs.frozen
class AssembledModel:
    """A model ready to train or evaluate, its tokenizer, and how it was loaded."""

    model: Any
    tokenizer: Any
    loader: str
    kind: str
    auto_class: str

    def describe(self) -> dict[str, str]:
        """``{"loader", "kind", "auto_class"}``: recorded in ``run_meta.json`` as ``model``."""
        return {"loader": self.loader, "kind": self.kind, "auto_class": self.auto_class}


def assemble_model(source: Any, device: str, options: Any, *, trained_run: Path | None = None,
                   loader: str | None = None) -> AssembledModel:
    """The one way a model is built, for training and for evaluation.

    Base model and tokenizer come from the loader (``loader`` when given, e.g. the one a run
    recorded, otherwise the configured or selected one) with the ``verifily_model_init_kwargs``
    of all plugins and the task's keyword arguments; then the ``verifily_prepare_model`` hook
    and the task's ``prepare_model`` run. For training (``trained_run`` is ``None``) a fresh,
    seeded LoRA adapter is added. For evaluation the run's trained adapter is attached (with
    ``lora.enabled: false`` the run's full model is loaded instead), the run's tokenizer is
    used, and the model is put on ``device`` in eval mode. Every ``from_pretrained`` of a run's
    files passes the run config's ``model.trust_remote_code`` (default false), so a run folder's
    ``auto_map`` is never executed unless that config opted in.

    :param source: a :class:`~verifily_core.jobs.TrainJob` (training) or :class:`ModelSource`.
    :param options: the task's parsed ``task_options``.
    """
    cfg, regs = source.config, source.registries
    task = regs.tasks.get(cfg.task)
    chosen = regs.model_loaders.get(loader) if loader else choose_loader(source)
    auto_class = task.model_auto_class(chosen.kind)
    kwargs = init_kwargs(source, device)
    kwargs.update(attention_kwargs(cfg, device, training=trained_run is None))
    kwargs.update(task.eval_model_kwargs(trained_run) if trained_run is not None else task.model_kwargs(source))
    if trained_run is None:
        import transformers

        transformers.set_seed(cfg.seed)  # before model creation: heads and dropout draw from the RNG
        model, tokenizer = chosen.load(source, auto_class=auto_class, **kwargs)
    elif cfg.lora.enabled:
        model, _ = chosen.load(source, auto_class=auto_class, **kwargs)  # the base the adapter was trained on
        tokenizer = _run_tokenizer(trained_run, cfg)
    else:  # full fine-tuning: the run holds the whole model
        import transformers

        model = getattr(transformers, auto_class).from_pretrained(
            str(trained_run / "adapter"), trust_remote_code=cfg.model.trust_remote_code, **kwargs)
        tokenizer = _run_tokenizer(trained_run, cfg)
    regs.hook.verifily_prepare_model(model=model, config=cfg)
    model = task.prepare_model(model, tokenizer, source, options) or model
    if trained_run is None:
        model = apply_lora(model, cfg, task, chosen.kind)
    else:
        model = _attach_trained(model, cfg, trained_run, device, quantized="quantization_config" in kwargs)
    return AssembledModel(model, tokenizer, chosen.name, chosen.kind, auto_class)


def attention_kwargs(cfg: Any, device: str, training: bool = True) -> dict[str, str]:
    """``attn_implementation`` for ``from_pretrained`` from ``training.optimizations.attention_implementation``.

    Training uses it as configured (config validation has checked the device and packages).
    Evaluation uses it too, except ``flash_attention_2`` where this machine cannot run it (not
    CUDA, or flash-attn not installed): the model's default attention computes the same values.
    """
    attention = cfg.training.optimizations.attention_implementation
    if not attention:
        return {}
    if not training and attention == "flash_attention_2":
        import importlib.util

        if not device.startswith("cuda") or importlib.util.find_spec("flash_attn") is None:
            return {}
    return {"attn_implementation": attention}


def apply_lora(model: Any, cfg: Any, task: Any, kind: str) -> Any:
    """Wrap the model with a new PEFT LoRA adapter (seeded), or return it for full fine-tuning."""
    lo = cfg.lora
    if not lo.enabled:
        return model
    import transformers
    from peft import LoraConfig, get_peft_model

    targets = None if lo.target_modules == "auto" else lo.target_modules
    lora = LoraConfig(r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=targets,
                      task_type=task.peft_task_type(kind), **task.lora_extra(model))
    transformers.set_seed(cfg.seed)  # LoRA initialisation draws from the RNG
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise ConfigError(f"$.lora.target_modules: {str(exc).splitlines()[0]}") from None


def _run_tokenizer(run_dir: Path, cfg: Any) -> Any:
    """The tokenizer a run saved; remote code only when the run's config set
    ``model.trust_remote_code`` (default false), never on the folder's own say-so."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(run_dir / "tokenizer"), trust_remote_code=cfg.model.trust_remote_code)


def _attach_trained(model: Any, cfg: Any, run_dir: Path, device: str, quantized: bool) -> Any:
    """The run's LoRA adapter on the prepared base, on ``device``, in eval mode."""
    if cfg.lora.enabled:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(run_dir / "adapter"))
    if not quantized:  # quantized weights are placed by from_pretrained and cannot be moved
        model.to(device)
    model.eval()
    return model
