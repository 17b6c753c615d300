"""Built-in compute backend ``local``: HF Trainer + PEFT on this machine (CUDA > MPS > CPU)."""

from __future__ import annotations

from typing import Any

from verifily_core import hookimpl
from verifily_core.interfaces import ComputeBackend


REPORT_TO = ("all", "azure_ml", "clearml", "codecarbon", "comet_ml", "dagshub", "dvclive", "flyte", "kubeflow",
             "mlflow", "neptune", "none", "swanlab", "tensorboard", "trackio", "wandb")
"""``training.report_to`` values: the Trainer's reporting integrations (``all``: every installed one)."""


class LocalBackend(ComputeBackend):
    """Trains on this machine and writes the run directory."""

    name = "local"
    streams = True

    def run(self, job: Any) -> Any:
        """Train ``job`` (continuing ``job.resume_from`` when set) and return the sealed run."""
        from pathlib import Path

        from verifily_local.backend import run_local

        return run_local(job, resume_dir=Path(job.resume_from) if job.resume_from else None)

    def check_batch(self, job: Any, memory_limit: int | None = None) -> dict[str, Any]:
        """Tokenize, load the model as training does and run the largest batch (forward, backward,
        optimizer step); see :mod:`verifily_local.batch_check`."""
        from verifily_local.batch_check import check_batch

        return check_batch(job, memory_limit=memory_limit)


@hookimpl
def verifily_register_backends(registry: Any) -> None:
    """Register the ``local`` backend."""
    registry.add(LocalBackend())


@hookimpl
def verifily_validate_config(config: Any) -> list[str]:
    """Settings the local Trainer cannot honour, caught before anything loads."""
    if config.compute.mode != "local":
        return []
    t, out = config.training, []
    if t.early_stopping_patience and t.save_steps % t.eval_steps:
        out.append(f"$.training.save_steps: must be a multiple of training.eval_steps ({t.eval_steps}) when "
                   "training.early_stopping_patience is set (the best checkpoint is kept)")
    for i, name in enumerate(t.report_to):
        if name not in REPORT_TO:
            out.append(f"$.training.report_to[{i}]: unknown integration {name!r}; expected one of {', '.join(REPORT_TO)}")
    if config.lora.enabled and not config.output.save_adapter_only and config.lora.quantization != "none":
        out.append("$.output.save_adapter_only: a merged model cannot be saved from a quantized base; "
                   "keep save_adapter_only=true with lora.quantization")
    from verifily_local.optimizations import optimization_problems  # torch only for device-bound settings

    return out + optimization_problems(config)


@hookimpl
def verifily_environment_packages(config: Any) -> list[str] | None:
    """Packages whose kernels compute a run's results through ``training.optimizations``:
    bitsandbytes for its optimizers, flash-attn for ``flash_attention_2``."""
    opts = config.training.optimizations
    found = (["bitsandbytes"] if opts.optimizer_type in ("adamw_bnb_8bit", "paged_adamw_8bit", "paged_adamw_32bit")
             else []) + (["flash_attn"] if opts.attention_implementation == "flash_attention_2" else [])
    return found or None
