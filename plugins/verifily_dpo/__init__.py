"""Built-in task plugin ``dpo``: preference tuning with TRL's ``DPOTrainer``.

Rows are ``{"prompt", "chosen", "rejected", "tags"?}``, as strings or chat messages. LoRA trains
the policy on a causal LM; the reference is the same model with the adapter disabled.
Evaluation scores each pair by the implicit rewards ``beta * (logp_policy - logp_reference)``
(metrics ``reward_accuracy`` and ``reward_margin``). Guide: ``docs/dpo.md``. It is built only on
the task, metric and hook contracts of ``verifily_core``; TRL, torch and datasets are imported
in the submodules only, once a run trains or evaluates.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from verifily_core import hookimpl
from verifily_core.interfaces import Task

from verifily_dpo.metrics import RewardAccuracy, RewardMargin
from verifily_dpo.options import DPOOptions, config_problems, parse_options

TASK = "dpo"


class DPOTask(Task):
    """Direct preference optimisation of a causal LM on prompt/chosen/rejected pairs."""

    name = TASK
    required_fields = ("prompt", "chosen", "rejected")
    reference_field = "chosen"
    default_metrics = ("reward_accuracy", "reward_margin")
    main_metrics = ("reward_accuracy", "reward_margin")
    metric_aliases = {"accuracy": "reward_accuracy", "margin": "reward_margin"}
    hard_example_scores = ("reward_margin",)
    score_directions = {"reward_margin": True, "chosen_reward": True, "rejected_reward": False}
    groups_by_length = False  # TRL's DPOTrainer tokenizes and batches the pairs itself

    def validate_row(self, row: Mapping[str, Any]) -> str | None:
        """Text rows (three non-empty strings) or chat rows (messages); the responses must differ."""
        from verifily_dpo.data import row_problem

        return row_problem(row)

    def validate_dataset(self, dataset: Any, options: DPOOptions) -> None:
        """Each split is in one form, text or chat (TRL trains on one); the lengths need the
        tokenizer and are checked in :meth:`prepare_features`."""
        from verifily_dpo.data import check_form

        for f in dataset.files:
            check_form(dataset.iter_rows(f.split), f"the rows of {dataset.split_path(f.split)} ({f.split} split)")

    def reference(self, row: Mapping[str, Any]) -> str:
        """Always ``"chosen"``: the response the model should prefer."""
        return "chosen"

    def input_fields(self) -> tuple[str, ...]:
        """``("prompt",)``: leakage checks and dataset diffs compare prompts."""
        return ("prompt",)

    def parse_options(self, options: Mapping[str, Any]) -> DPOOptions:
        """Structure ``task_options`` (``beta``, ``loss_type``); errors name ``$.task_options.<field>``."""
        return parse_options(options)

    def model_auto_class(self, model_kind: str) -> str:
        """``AutoModelForCausalLM``; other model families are refused."""
        if model_kind != "causal_lm":
            from verifily_core.errors import ConfigError

            raise ConfigError(f"$.model.loader: task dpo trains causal language models, but the base model loads "
                              f"as '{model_kind}'; use a decoder-only model (model.loader: causal_lm)")
        return "AutoModelForCausalLM"

    def peft_task_type(self, model_kind: str) -> str:
        """``CAUSAL_LM``."""
        return "CAUSAL_LM"

    # -- training ----------------------------------------------------------------------------

    def prepare_features(self, rows: Sequence[Mapping[str, Any]], tokenizer: Any, model_kind: str,
                         config: Any, options: DPOOptions) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The rows' ``prompt``/``chosen``/``rejected`` for TRL, which tokenizes them itself; the
        rows are tokenized here too, to count the ones cut to ``training.max_seq_length``."""
        from verifily_dpo.data import check_form, check_lengths, trl_row

        check_form(rows)
        _, truncated = check_lengths(rows, tokenizer, config.training.max_seq_length)
        return [trl_row(row) for row in rows], {"rows": len(rows), "truncated": truncated}

    def data_collator(self, tokenizer: Any, model_kind: str, model: Any) -> None:
        """``None``: ``DPOTrainer`` pads the pairs with its own preference collator."""
        return None

    def trainer_class(self, options: DPOOptions, rows: Sequence[Mapping[str, Any]]) -> type:
        """TRL's ``DPOTrainer``."""
        from verifily_dpo.trainer import DPOTrainer

        return DPOTrainer

    def build_trainer(self, trainer_class: type, args_class: type, args: Mapping[str, Any], *, job: Any,
                      model: Any, tokenizer: Any, train_dataset: Any, eval_dataset: Any, data_collator: Any,
                      callbacks: list[Any], options: DPOOptions) -> Any:
        """``DPOTrainer`` with ``DPOConfig(**args, beta, loss_type, max_length=training.max_seq_length)``
        instead of ``args_class``, the rows as a ``datasets.Dataset``, ``processing_class=tokenizer``
        and no separate reference model (the adapter is disabled instead)."""
        from verifily_dpo.trainer import build

        return build(trainer_class, args, model=model, tokenizer=tokenizer, train_dataset=train_dataset,
                     eval_dataset=eval_dataset, callbacks=callbacks, options=options,
                     max_length=job.config.training.max_seq_length)

    # -- evaluation --------------------------------------------------------------------------

    def predict(self, model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], model_kind: str,
                config: Any, options: DPOOptions, batch_size: int, device: str) -> list[dict[str, Any]]:
        """Per pair: the preferred response (``chosen``, ``rejected`` or ``tie``), the reference
        ``chosen``, and ``scores`` ``chosen_reward``, ``rejected_reward``, ``reward_margin``."""
        from verifily_dpo.predict import score_pairs

        scores = score_pairs(model, tokenizer, rows, options.beta, config.training.max_seq_length, batch_size, device)
        return [{"prediction": preferred(s["reward_margin"]), "reference": "chosen", "scores": s} for s in scores]


def preferred(margin: float) -> str:
    """Which response the model prefers by the reward margin: ``chosen``, ``rejected`` or ``tie``."""
    return "chosen" if margin > 0 else "rejected" if margin < 0 else "tie"


@hookimpl
def verifily_register_tasks(registry: Any) -> None:
    """Register the ``dpo`` task."""
    registry.add(DPOTask())


@hookimpl
def verifily_register_metrics(registry: Any) -> None:
    """Register ``reward_accuracy`` and ``reward_margin``."""
    registry.add(RewardAccuracy())
    registry.add(RewardMargin())


@hookimpl
def verifily_environment_packages(config: Any) -> list[str] | None:
    """``trl``: its DPOTrainer computes the loss a dpo run is trained with."""
    return ["trl"] if config.task == TASK else None


@hookimpl
def verifily_validate_config(config: Any) -> list[str] | None:
    """``task_options``, LoRA and TRL problems at plan time (``--dry-run``), before anything is loaded."""
    return config_problems(config) if config.task == TASK else None
