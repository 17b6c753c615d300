"""Built-in task plugin ``sft``: supervised fine-tuning on instruction/input/output rows.

Prompts follow a documented template (``task_options.prompt_template``) or the model's chat
template (``task_options.use_chat_template: true``). For CausalLM models the loss covers the
output tokens only; for Seq2Seq models the output is the target sequence.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from verifily_core import hookimpl
from verifily_core.interfaces import Task


class SFTTask(Task):
    """Rows ``{"instruction", "input"?, "output", "tags"?}``; the model learns to write ``output``."""

    name = "sft"
    required_fields = ("instruction", "output")
    reference_field = "output"
    optional_fields = ("input",)
    default_metrics = ("exact_match", "token_f1", "loss", "perplexity")
    main_metrics = ("token_f1", "exact_match")
    metric_aliases = {"f1": "token_f1"}
    hard_example_scores = ("token_f1", "exact_match", "loss")
    score_directions = {"loss": False}
    validation_metrics = ("token_accuracy", "sequence_accuracy")
    validation_reads = frozenset({"n_correct", "n_tokens"})

    def parse_options(self, options: Mapping[str, Any]) -> Any:
        """Structure ``task_options`` into :class:`verifily_sft.options.SFTOptions`."""
        from verifily_core.structuring import structure
        from verifily_sft.options import SFTOptions

        return structure(dict(options), SFTOptions, root="$.task_options").check()

    def model_auto_class(self, model_kind: str) -> str:
        """``AutoModelForSeq2SeqLM`` for seq2seq models, ``AutoModelForCausalLM`` otherwise."""
        return "AutoModelForSeq2SeqLM" if model_kind == "seq2seq" else "AutoModelForCausalLM"

    def peft_task_type(self, model_kind: str) -> str:
        """``SEQ_2_SEQ_LM`` or ``CAUSAL_LM``."""
        return "SEQ_2_SEQ_LM" if model_kind == "seq2seq" else "CAUSAL_LM"

    def prepare_features(self, rows: Sequence[Mapping[str, Any]], tokenizer: Any, model_kind: str,
                         config: Any, options: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Tokenize with prompt masking; truncation to ``training.max_seq_length`` is counted."""
        from verifily_sft.data import prepare

        return prepare(rows, tokenizer, model_kind, config.training.max_seq_length, options)

    def data_collator(self, tokenizer: Any, model_kind: str, model: Any) -> Any:
        """Right padding (labels padded with -100)."""
        from verifily_sft.data import PadCollator

        return PadCollator(tokenizer.pad_token_id)

    def build_trainer(self, trainer_class: type, args_class: type, args: Mapping[str, Any], *, job: Any,
                      model: Any, tokenizer: Any, train_dataset: Any, eval_dataset: Any, data_collator: Any,
                      callbacks: list[Any], options: Any) -> Any:
        """The default trainer, scoring the val split with the validation metrics
        (``training.validation_metrics``, default token and sequence accuracy) from the
        teacher-forced pass of its loss."""
        from verifily_sft.validation import metrics_function, top_choices

        trainer = super().build_trainer(trainer_class, args_class, args, job=job, model=model, tokenizer=tokenizer,
                                        train_dataset=train_dataset, eval_dataset=eval_dataset,
                                        data_collator=data_collator, callbacks=callbacks, options=options)
        names = job.config.training.validation_metrics
        names = self.validation_metrics if names is None else names
        if eval_dataset is not None and names:
            kind = "seq2seq" if getattr(model.config, "is_encoder_decoder", False) else "causal_lm"
            trainer.compute_metrics = metrics_function({n: job.registries.metrics.get(n) for n in names}, kind)
            trainer.preprocess_logits_for_metrics = top_choices
        return trainer

    def predict(self, model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], model_kind: str,
                config: Any, options: Any, batch_size: int, device: str,
                needs: frozenset[str] | None = None) -> list[dict[str, Any]]:
        """Per row: the generated output, the reference, and ``scores`` with the teacher-forced
        ``loss`` (mean NLL per reference token), ``n_tokens`` and ``n_correct`` (reference tokens
        that are the model's top choice). With ``needs``, generation runs
        only when ``prediction`` is needed and the losses only when a score is."""
        from verifily_sft.predict import generate, reference_losses

        max_len = config.training.max_seq_length
        want_text = needs is None or "prediction" in needs
        want_loss = needs is None or bool(needs - {"prediction"})
        losses = reference_losses(model, tokenizer, rows, model_kind, max_len, options, batch_size, device) \
            if want_loss else [None] * len(rows)
        texts = generate(model, tokenizer, rows, model_kind, max_len, options, batch_size,
                         config.eval.max_new_tokens, device) if want_text else [None] * len(rows)
        return [{"prediction": text, "reference": row["output"],
                 "scores": {"loss": tf[0], "n_tokens": tf[1], "n_correct": tf[2]} if tf else {}}
                for row, text, tf in zip(rows, texts, losses)]


@hookimpl
def verifily_register_tasks(registry: Any) -> None:
    """Register the ``sft`` task."""
    registry.add(SFTTask())

