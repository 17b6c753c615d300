"""Built-in task plugin ``sft``: supervised fine-tuning on instruction/input/output rows or on
conversations (``messages`` rows).

Instruction prompts follow a documented template (``task_options.prompt_template``) or the
model's chat template (``task_options.use_chat_template: true``); conversations always use a chat
template (see :mod:`verifily_sft.chat`). For CausalLM models the loss covers the output (the
assistant's) tokens only; for Seq2Seq models the output (the last assistant message) is the target
sequence. Evaluation generates the output, or the last assistant message, and scores it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from verifily_core import hookimpl
from verifily_core.interfaces import Task


CHAT_FILE = "chat.json"
"""A run trained on conversations: ``{"form": "messages", "system": the system message every
training conversation starts with, or null}``; ``verifily generate`` writes prompts as conversations."""


class SFTTask(Task):
    """Rows ``{"instruction", "input"?, "output", "tags"?}`` (the model learns to write ``output``)
    or ``{"messages": [...], "tags"?}`` (it learns the assistant's messages)."""

    name = "sft"
    required_fields = ("instruction", "output")
    reference_field = "output"
    optional_fields = ("input", "messages")
    default_metrics = ("exact_match", "token_f1", "loss", "perplexity")
    main_metrics = ("token_f1", "exact_match")
    metric_aliases = {"f1": "token_f1"}
    hard_example_scores = ("token_f1", "exact_match", "loss")
    score_directions = {"loss": False}
    validation_metrics = ("token_accuracy", "sequence_accuracy")
    validation_reads = frozenset({"n_correct", "n_tokens"})
    streams = True

    def validate_row(self, row: Mapping[str, Any]) -> str | None:
        """An instruction row, or a conversation: ``messages`` (roles system, user, assistant; a
        system message only first; an assistant message last) besides ``tags`` and ``id``."""
        from verifily_sft.chat import is_chat

        if not is_chat(row):
            return super().validate_row(row)
        from verifily_core.chat import conversation_problem

        unknown = sorted(set(row) - {"messages", "tags", "id"})
        if unknown:
            return f"unknown field '{unknown[0]}' beside 'messages' (allowed: id, messages, tags)"
        return conversation_problem(row["messages"])

    def validate_dataset(self, dataset: Any, options: Any) -> None:
        """Every row of the dataset in one form (instruction or messages), and options that apply to it."""
        from verifily_core.datasets.rows import iter_jsonl
        from verifily_core.errors import DataError
        from verifily_sft.chat import is_chat

        first: dict[bool, str] = {}
        for f in dataset.files:
            path = dataset.split_path(f.split)
            for lineno, row in iter_jsonl(path):
                first.setdefault(is_chat(row), f"{path}:{lineno}")
                if len(first) > 1:
                    raise DataError(f"the dataset mixes instruction rows ({first[False]}) and messages rows "
                                    f"({first[True]}); write every row of a dataset in one form")
        options.check_form(bool(first.get(True)))

    def reference(self, row: Mapping[str, Any]) -> str:
        """``output``, or the last assistant message of a conversation."""
        from verifily_sft.data import reference

        return reference(row)

    def row_input(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """``instruction`` and ``input``, or the conversation before its last assistant message."""
        from verifily_sft.chat import is_chat

        return {"messages": row["messages"][:-1]} if is_chat(row) else super().row_input(row)

    def with_reference(self, row: Mapping[str, Any], reference: Any) -> dict[str, Any]:
        """A conversation that ends with a user message gets ``reference`` as the assistant's reply."""
        from verifily_sft.chat import is_chat

        if is_chat(row):
            messages = row.get("messages")
            if isinstance(messages, list) and messages and isinstance(messages[-1], dict) \
                    and messages[-1].get("role") != "assistant":
                return {**row, "messages": [*messages, {"role": "assistant", "content": reference}]}
            return dict(row)
        return super().with_reference(row, reference)

    def text_row(self, text: str, context: str | None, run_path: Path) -> dict[str, Any]:
        """A user message (after the system message of the training conversations) for a run
        trained on conversations, else an instruction row (``context`` as its input)."""
        from verifily_core.files import read_json

        user = f"{text}\n\n{context}" if context else text
        chat = run_path / CHAT_FILE
        if not chat.is_file():
            return {"instruction": text, **({"input": context} if context else {})}
        system = read_json(chat).get("system")
        return {"messages": [*([{"role": "system", "content": system}] if system else []),
                             {"role": "user", "content": user}]}

    def save_artifacts(self, run_dir: Path, model: Any, job: Any) -> None:
        """``chat.json`` for a run trained on conversations."""
        from verifily_core.files import write_json
        from verifily_sft.chat import is_chat

        rows = job.dataset.iter_rows("train")
        first = next(iter(rows), None)
        if first is None or not is_chat(first):
            return
        systems = {r["messages"][0]["content"] if r["messages"][0]["role"] == "system" else None
                   for r in job.dataset.iter_rows("train")}
        options = self.parse_options(job.config.task_options)
        system = systems.pop() if len(systems) == 1 else None
        write_json(run_dir / CHAT_FILE, {"form": "messages", "system": system or options.system_prompt})

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
        """Tokenize with prompt masking; truncation to ``training.max_seq_length`` is counted. The
        chat template conversations are rendered with is set on the tokenizer, which the run
        saves, so the run's tokenizer renders prompts as training did."""
        from verifily_sft.chat import is_chat, template
        from verifily_sft.data import prepare

        chat = bool(rows) and is_chat(rows[0])
        if chat or options.use_chat_template:
            chosen = template(tokenizer, options, chat)
            if chosen is not None:
                tokenizer.chat_template = chosen
        return prepare(rows, tokenizer, model_kind, config.training.max_seq_length, options)

    def data_collator(self, tokenizer: Any, model_kind: str, model: Any) -> Any:
        """Right padding (labels padded with -100)."""
        from verifily_sft.data import PadCollator

        return PadCollator(tokenizer.pad_token_id)

    def build_trainer(self, trainer_class: type, args_class: type, args: Mapping[str, Any], *, job: Any,
                      model: Any, tokenizer: Any, train_dataset: Any, eval_dataset: Any, data_collator: Any,
                      callbacks: list[Any], options: Any) -> Any:
        """The default trainer on padding-free batches where ``task_options.packing`` allows
        (:mod:`verifily_sft.packing`), a Seq2Seq model's loss weighed by the step's target tokens
        as a CausalLM's is (:mod:`verifily_sft.loss`), scoring the val split with the validation metrics
        (``training.validation_metrics``, default token and sequence accuracy) from the
        teacher-forced pass of its loss."""
        from verifily_sft.validation import metrics_function, top_choices

        from verifily_sft.packing import training_collator

        kind = "seq2seq" if getattr(model.config, "is_encoder_decoder", False) else "causal_lm"
        data_collator = training_collator(model, tokenizer, kind, data_collator, options)
        trainer = super().build_trainer(trainer_class, args_class, args, job=job, model=model, tokenizer=tokenizer,
                                        train_dataset=train_dataset, eval_dataset=eval_dataset,
                                        data_collator=data_collator, callbacks=callbacks, options=options)
        if kind == "seq2seq":  # T5/BART ignore the Trainer's step-token count: weigh their loss ourselves
            from verifily_sft.loss import weigh_by_step_tokens

            weigh_by_step_tokens(trainer, model)
        names = job.config.training.validation_metrics
        names = self.validation_metrics if names is None else names
        if eval_dataset is not None and names:
            trainer.compute_metrics = metrics_function({n: job.registries.metrics.get(n) for n in names}, kind)
            trainer.preprocess_logits_for_metrics = top_choices
        return trainer

    def predict(self, model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], model_kind: str,
                config: Any, options: Any, batch_size: int, device: str,
                needs: frozenset[str] | None = None) -> list[dict[str, Any]]:
        """Per row: the generated output, the reference, and ``scores`` with the teacher-forced
        ``loss`` (mean NLL per reference token), ``n_tokens`` and ``n_correct`` (reference tokens
        that are the model's top choice). With ``needs``, generation runs
        only when ``prediction`` is needed and the losses only when a score is; a CausalLM that
        needs both makes one pass per batch (:func:`verifily_sft.predict.generate_and_score`)."""
        from verifily_sft.data import reference
        from verifily_sft.predict import generate, generate_and_score, reference_losses

        max_len = config.training.max_seq_length
        want_text = needs is None or "prediction" in needs
        want_loss = needs is None or bool(needs - {"prediction"})
        if want_text and want_loss and model_kind != "seq2seq":
            texts, losses = generate_and_score(model, tokenizer, rows, max_len, options, batch_size,
                                               config.eval.max_new_tokens, device)
        else:
            losses = reference_losses(model, tokenizer, rows, model_kind, max_len, options, batch_size, device) \
                if want_loss else [None] * len(rows)
            texts = generate(model, tokenizer, rows, model_kind, max_len, options, batch_size,
                             config.eval.max_new_tokens, device) if want_text else [None] * len(rows)
        return [{"prediction": text, "reference": reference(row),
                 "scores": {"loss": tf[0], "n_tokens": tf[1], "n_correct": tf[2]} if tf else {}}
                for row, text, tf in zip(rows, texts, losses)]


@hookimpl
def verifily_register_tasks(registry: Any) -> None:
    """Register the ``sft`` task."""
    registry.add(SFTTask())

