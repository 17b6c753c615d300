"""``training.*`` -> ``TrainingArguments`` (``Seq2SeqTrainingArguments`` for seq2seq models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import Seq2SeqTrainingArguments, TrainingArguments

from verifily_core.modeling import dataloader_flags, training_precision
from verifily_local.optimizations import argument_values as optimization_values

SAVE_TOTAL_LIMIT = 2  # the latest checkpoint plus the one before it (a kill may interrupt a save)


def training_arguments(job: Any, checkpoints: Path, device: str, has_val: bool, model_kind: str) -> TrainingArguments:
    """Map every ``training.*`` field onto the Trainer's arguments (see :func:`argument_values`)."""
    cls, values = argument_values(job, checkpoints, device, has_val, model_kind)
    return cls(**values)


def argument_values(job: Any, checkpoints: Path, device: str, has_val: bool,
                    model_kind: str) -> tuple[type[TrainingArguments], dict[str, Any]]:
    """The arguments class for the model family and every ``training.*`` field as its keyword arguments.

    ``warmup_ratio`` becomes a fractional ``warmup_steps`` (the Trainer reads a value below 1 as
    a share of the total steps); early stopping keeps the best checkpoint by
    ``metric_for_best_model`` (default ``eval_loss``) and needs a val split. ``training.optimizations``
    adds ``optim``, ``tf32``, checkpointing and ``torch_compile`` (:mod:`verifily_local.optimizations`).
    ``training.streaming`` adds ``ignore_data_skip`` (a resume starts the stream at the checkpoint's
    row instead of re-reading batches) and lets each process read its own rows (no dispatch).
    """
    t, cfg = job.config.training, job.config
    precision, _ = training_precision(cfg, device)
    early = bool(has_val and t.early_stopping_patience)
    cls = Seq2SeqTrainingArguments if model_kind == "seq2seq" else TrainingArguments
    return cls, dict(
        output_dir=str(checkpoints),
        num_train_epochs=t.num_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=cfg.eval.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        eval_strategy="steps" if has_val else "no",
        eval_steps=t.eval_steps if has_val else None,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=SAVE_TOTAL_LIMIT,
        load_best_model_at_end=early,
        metric_for_best_model=(t.metric_for_best_model or "eval_loss") if early else None,
        include_num_input_tokens_seen="non_padding",
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=[name for name in t.report_to if name != "none"],
        disable_tqdm=True,
        use_cpu=device == "cpu",
        **dataloader_flags(t, device),
        remove_unused_columns=False,
        ddp_find_unused_parameters=False,  # LoRA and heads train every parameter they add
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        **_streaming_values(t),
        **precision,
        **optimization_values(cfg, device),
    )


def _streaming_values(t: Any) -> dict[str, Any]:
    """Trainer arguments of a streamed run (:mod:`verifily_local.streaming`); none otherwise."""
    if not t.streaming:
        return {}
    return {"ignore_data_skip": True, "accelerator_config": {"dispatch_batches": False}}
