"""TRL's ``DPOTrainer`` from the pieces the local backend prepared (imports trl)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from trl import DPOConfig, DPOTrainer

from verifily_dpo.options import DPOOptions

__all__ = ["DPOTrainer", "dpo_config", "build"]


def dpo_config(args: Mapping[str, Any], options: DPOOptions, max_length: int) -> DPOConfig:
    """``DPOConfig`` with every backend argument plus the task's options; prompt + response
    sequences are cut to ``max_length`` tokens, keeping their start.

    TRL's own defaults that would change what ``training.*`` means are pinned: no gradient
    checkpointing and no mixed precision unless the backend asked for it. TRL disables dropout
    during DPO (``disable_dropout``), including LoRA's.
    """
    values = dict(args)
    values.setdefault("bf16", False)
    values.setdefault("fp16", False)
    names = {f.name for f in dataclasses.fields(DPOConfig)}  # transformers 5 renamed gradient checkpointing
    values.setdefault("activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing",
                      False)
    return DPOConfig(**values, beta=options.beta, loss_type=[options.loss_type], max_length=max_length)


def build(trainer_class: type, args: Mapping[str, Any], *, model: Any, tokenizer: Any, train_dataset: Any,
          eval_dataset: Any, callbacks: list[Any], options: DPOOptions, max_length: int) -> Any:
    """The DPO trainer: the model's adapter is trained, and with it disabled the model is the reference.

    ``args`` go to ``DPOConfig`` (a ``TrainingArguments`` subclass); the features are
    the rows' ``prompt``/``chosen``/``rejected`` columns, which TRL tokenizes and collates itself.
    """
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # TRL maps the rows in steps; our progress lines cover training
    return trainer_class(
        model=model, ref_model=None, args=dpo_config(args, options, max_length), processing_class=tokenizer,
        train_dataset=Dataset.from_list(list(train_dataset)),
        eval_dataset=Dataset.from_list(list(eval_dataset)) if eval_dataset is not None else None,
        callbacks=callbacks,
    )
