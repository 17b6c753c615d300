"""The local training loop: load, (quantize), LoRA, HF Trainer, write the run.

Imported only when a local run starts (it imports torch, transformers and peft).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # optional CPU kernels it cannot find

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import Trainer, TrainingArguments  # noqa: E402

from verifily_core.errors import ConfigError, TrainingError, VerifilyTrainError
from verifily_core.modeling import (
    choose_loader, init_kwargs, precision_flags, quiet_libraries, raise_training_error, resolve_device,
)
from verifily_core.plugins import describe_plugins
from verifily_core.run_writer import RunWriter
from verifily_core.runs import Run
from verifily_local.callbacks import JsonlLogCallback, NonFiniteLossCallback, ProgressCallback

log = logging.getLogger("verifily.local")


class _Rows(torch.utils.data.Dataset):
    def __init__(self, features: list[dict[str, Any]]) -> None:
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.features[i]


def apply_lora(model: Any, job: Any, task: Any, kind: str) -> Any:
    """Wrap the model with a PEFT LoRA adapter (seeded), or return it for full fine-tuning."""
    lo = job.config.lora
    if not lo.enabled:
        return model
    from peft import LoraConfig, get_peft_model

    targets = None if lo.target_modules == "auto" else lo.target_modules
    extra = task.lora_extra(model) if hasattr(task, "lora_extra") else {}
    lora = LoraConfig(r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=targets,
                      task_type=task.peft_task_type(kind), **extra)
    transformers.set_seed(job.config.seed)  # LoRA initialisation draws from the RNG
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise ConfigError(f"$.lora.target_modules: {str(exc).splitlines()[0]}") from None


def training_arguments(job: Any, writer: RunWriter, device: str, has_val: bool) -> TrainingArguments:
    """Map ``training.*`` faithfully onto ``TrainingArguments``."""
    t, cfg = job.config.training, job.config
    precision = precision_flags(device, cfg.compute.bf16, cfg.compute.fp16)
    scheduler = {"constant": "constant", "constant_with_warmup": "constant_with_warmup"}.get(t.lr_scheduler, t.lr_scheduler)
    return TrainingArguments(
        output_dir=str(writer.checkpoints),
        num_train_epochs=t.num_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=cfg.eval.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=scheduler,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a fraction of the total steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        eval_strategy="steps" if has_val else "no",
        eval_steps=t.eval_steps if has_val else None,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=2,
        load_best_model_at_end=bool(has_val and t.early_stopping_patience),
        metric_for_best_model=(t.metric_for_best_model or "eval_loss") if has_val and t.early_stopping_patience else None,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=[],
        disable_tqdm=True,
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        **precision,
    )


def run_local(job: Any, resume_dir: Path | None = None) -> Run:
    """Train ``job`` on this machine and return the sealed run."""
    quiet_libraries()
    device = resolve_device(job.config.compute.device)
    writer = RunWriter(job, device, resume_dir=resume_dir)
    writer.start(describe_plugins(job.registries))
    print(f"Run {job.job_id}: training {job.base_model} ({job.task}) on {device}", file=sys.stderr)
    try:
        metrics = _train(job, writer, device, resume_dir is not None)
    except VerifilyTrainError as exc:
        writer.fail(str(exc))
        raise
    except KeyboardInterrupt:
        writer.fail("interrupted")
        raise
    except Exception as exc:  # device errors, OOM, library errors: a failed run, exit 3
        try:
            raise_training_error(exc)
        except TrainingError as err:
            writer.fail(str(err))
            raise
    return writer.complete(metrics)


def _train(job: Any, writer: RunWriter, device: str, resuming: bool) -> dict[str, Any]:
    cfg, regs = job.config, job.registries
    task = regs.tasks.get(cfg.task)
    options = task.parse_options(cfg.task_options)
    loader = choose_loader(job)
    transformers.set_seed(cfg.seed)  # before model creation: heads and dropout draw from the RNG
    model, tokenizer = loader.load(job, auto_class=task.model_auto_class(loader.kind), **init_kwargs(job, device))
    regs.hook.verifily_prepare_model(model=model, config=cfg)
    if hasattr(task, "prepare_model"):
        model = task.prepare_model(model, tokenizer, job, options) or model
    model = apply_lora(model, job, task, loader.kind)
    train_rows = job.dataset.read_rows("train")
    train_feats, stats = task.prepare_features(train_rows, tokenizer, loader.kind, cfg, options)
    val_feats = None
    if job.dataset.has_split("val"):
        val_feats, vstats = task.prepare_features(job.dataset.read_rows("val"), tokenizer, loader.kind, cfg, options)
        stats["truncated"] += vstats["truncated"]
    if stats["truncated"]:
        log.warning("%d row(s) longer than training.max_seq_length=%d were truncated",
                    stats["truncated"], cfg.training.max_seq_length)
    guard = NonFiniteLossCallback()
    callbacks = [JsonlLogCallback(writer.path / "train_log.jsonl"), guard, ProgressCallback()]
    for extra in regs.hook.verifily_trainer_callbacks(config=cfg, run_dir=writer.path):
        callbacks.extend(extra or [])
    if val_feats is not None and cfg.training.early_stopping_patience:
        callbacks.append(transformers.EarlyStoppingCallback(cfg.training.early_stopping_patience))
    trainer_cls = task.trainer_class() if hasattr(task, "trainer_class") else Trainer
    trainer = trainer_cls(
        model=model, args=training_arguments(job, writer, device, val_feats is not None),
        train_dataset=_Rows(train_feats), eval_dataset=_Rows(val_feats) if val_feats is not None else None,
        data_collator=task.data_collator(tokenizer, loader.kind, model), callbacks=callbacks,
    )
    trainer.remove_callback(transformers.PrinterCallback)  # our ProgressCallback prints instead
    checkpoint = _latest_checkpoint(writer.checkpoints) if resuming else None
    if resuming and checkpoint is None:
        log.warning("no checkpoint found in %s; training from the start", writer.checkpoints)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    if guard.bad:
        raise TrainingError(f"non-finite training: {guard.bad}; lower training.learning_rate or check the data")
    metrics: dict[str, Any] = {"train_loss": result.training_loss, "train_steps": result.global_step,
                               "train_rows": stats["rows"], "truncated_rows": stats["truncated"],
                               "train_runtime_s": result.metrics.get("train_runtime")}
    if val_feats is not None:
        metrics["eval_loss"] = trainer.evaluate()["eval_loss"]
    _save(trainer, tokenizer, writer.path, task, job)
    return metrics


def _latest_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def _save(trainer: Any, tokenizer: Any, path: Path, task: Any, job: Any) -> None:
    trainer.model.save_pretrained(str(path / "adapter"), safe_serialization=True)
    tokenizer.save_pretrained(str(path / "tokenizer"))
    if hasattr(task, "save_artifacts"):
        task.save_artifacts(path, trainer.model, job)
