"""Built-in task plugin ``classification`` and model loader ``sequence_classification``.

Rows are ``{"text", "text_pair"?, "label", "tags"?}``: a text (or a sentence pair) to a label;
or, in a multi-label dataset, ``{"text", "text_pair"?, "labels": [..], "tags"?}``: to a set of
labels (:mod:`verifily_classification.multilabel`; a sigmoid per label).
Any ``AutoModelForSequenceClassification`` works: encoders (BERT, DeBERTa-v2/v3, RoBERTa, ...)
and decoders with a last-token head (``LlamaForSequenceClassification``, ...). LoRA adapts the
backbone; the head is trained in full and saved with the adapter (``modules_to_save``). The
label set is saved as ``labels.json`` in the run. Options: :mod:`verifily_classification.options`;
guide: ``docs/classification.md``. Heavy libraries are imported in the submodules only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from verifily_core import hookimpl
from verifily_core.errors import ConfigError
from verifily_core.interfaces import ModelLoader, Task
from verifily_core.modeling import PretrainedLoader

from verifily_classification.options import LABEL_TOKEN_LOADER, ClassificationOptions, config_problems, parse_options

TASK = "classification"
MULTI_LABEL_METRICS = ("micro_f1", "macro_f1", "weighted_f1", "subset_accuracy", "hamming_loss", "per_class",
                       "confusion_matrix", "classification_report")
MULTI_LABEL_VALIDATION_METRICS = ("micro_f1", "macro_f1", "subset_accuracy")
LOADER = "sequence_classification"
LABEL_TOKENS = "label_tokens"  # the model kind of LABEL_TOKEN_LOADER


class ClassificationTask(Task):
    """Text (or text pair) classification with string or integer labels."""

    name = TASK
    required_fields = ("text", "label")
    reference_field = "label"
    optional_fields = ("text_pair",)
    default_metrics = ("accuracy", "macro_f1", "weighted_f1", "per_class", "confusion_matrix", "classification_report")
    main_metrics = ("macro_f1", "accuracy")
    metric_aliases = {"f1": "macro_f1"}
    hard_example_scores = ("p_true", "accuracy")
    score_directions = {"p_true": True, "p_pred": True, "loss": False}
    validation_metrics = ("accuracy", "macro_f1", "weighted_f1")
    validation_reads = frozenset({"prediction"})
    prediction_scores = ("p_pred", "probabilities")
    streams = True
    label_predictions = True
    list_fields = ("labels",)

    def __init__(self) -> None:
        self._label_sets: dict[str, Any] = {}  # job id -> LabelSet, resolved once per training job
        self._tokenizers: dict[str, Any] = {}  # job id -> tokenizer of a multi-label training job

    def validate_row(self, row: Mapping[str, Any]) -> str | None:
        """Like the default, but ``label`` may be a string or an integer, and a multi-label row has
        ``labels`` (a list of distinct label names, possibly empty) instead."""
        from verifily_classification.multilabel import FIELD, is_multilabel_row, row_problem

        if is_multilabel_row(row):
            problem = row_problem(row)
            if problem:
                return problem
            probe = {k: v for k, v in row.items() if k != FIELD}
            return super().validate_row({**probe, "label": "-"})
        label = row.get("label")
        if "label" in row and (isinstance(label, bool) or not isinstance(label, (str, int))):
            return "field 'label' must be a string or an integer"
        probe = dict(row)
        if isinstance(label, int):
            probe["label"] = str(label)
        return super().validate_row(probe)

    def parse_options(self, options: Mapping[str, Any]) -> ClassificationOptions:
        """Structure ``task_options`` (errors name ``$.task_options.<field>``)."""
        return parse_options(options)

    def model_auto_class(self, model_kind: str) -> str:
        """``AutoModelForCausalLM`` for the label-token formulation, else
        ``AutoModelForSequenceClassification`` for every model family."""
        return "AutoModelForCausalLM" if model_kind == LABEL_TOKENS else "AutoModelForSequenceClassification"

    def peft_task_type(self, model_kind: str) -> str:
        """``CAUSAL_LM`` for the label-token formulation, else ``SEQ_CLS``."""
        return "CAUSAL_LM" if model_kind == LABEL_TOKENS else "SEQ_CLS"

    # -- training ----------------------------------------------------------------------------

    def validate_dataset(self, dataset: Any, options: ClassificationOptions) -> None:
        """Every row is single-label or every row multi-label (a mix is a DataError naming a row of
        each by ``file:line``), the options fit that form (ConfigError), and the label set
        (``task_options.labels``, else the training labels, at least 2) holds every label of the
        train, val and test splits (DataError naming the row); run when the dataset is resolved,
        so ``--dry-run`` finds a stray label and training never loads a model for one."""
        from verifily_classification.labels import check_rows, resolve_labels
        from verifily_classification.multilabel import check_options, dataset_is_multilabel, resolve_multilabels

        multi = dataset_is_multilabel(dataset)
        check_options(options, multi, dataset.has_split("val"))
        if multi:
            resolve_multilabels(options.labels, dataset)
            return
        labels = resolve_labels(options.labels, dataset.iter_rows("train"))
        for split in ("val", "test"):
            if dataset.has_split(split):
                check_rows(labels, dataset.iter_rows(split), split, dataset.split_path(split))

    def model_kwargs(self, job: Any) -> dict[str, Any]:
        """``num_labels``/``id2label``/``label2id`` from the label set (its val and test labels
        were checked by :meth:`validate_dataset` when the dataset was resolved)."""
        return self._labels(job).model_kwargs()

    def trained_options(self, options: ClassificationOptions, run_path: Path) -> ClassificationOptions:
        """``label_names``, ``multi_label`` and the decision ``threshold`` (tuned or configured) from
        the run's ``labels.json``."""
        from verifily_classification.labels import read_labels

        labels = read_labels(run_path)
        options.label_names = list(labels.labels)
        options.multi_label = labels.multi_label
        if labels.multi_label:
            options.threshold = labels.threshold
        return options

    def prepare_model(self, model: Any, tokenizer: Any, job: Any, options: ClassificationOptions) -> Any:
        """A pad token id for the head; when training, fill ``options.label_names`` and the
        metrics of the val split (``training.validation_metrics``, default accuracy, macro F1 and weighted F1,
        plus ``training.metric_for_best_model``)."""
        from verifily_classification.validation import validation_metrics

        if options.uses_label_tokens and (getattr(model.config, "is_encoder_decoder", False)
                                          or model.get_output_embeddings() is None):
            raise ConfigError(f"$.task_options.formulation: label_tokens needs a causal LM (a decoder with an LM "
                              f"head); {type(model).__name__} is not one; use formulation: head")
        if getattr(job, "dataset", None) is not None:  # training (evaluation reads the run's labels.json)
            labels = self._labels(job)
            options.label_names, options.multi_label = labels.labels, labels.multi_label
            if labels.multi_label:
                self._tokenizers[job.job_id] = tokenizer  # for tune_threshold after training
            t = job.config.training
            default = MULTI_LABEL_VALIDATION_METRICS if labels.multi_label else self.validation_metrics
            chosen = default if t.validation_metrics is None else t.validation_metrics
            options.validation = validation_metrics(chosen, t.metric_for_best_model, job.registries)
            if options.uses_label_tokens:
                from verifily_classification.labeltokens import label_token_ids
                from verifily_classification.labels import LabelSet

                tokens = options.tokens
                options.label_token_ids = label_token_ids(tokenizer, LabelSet(options.label_names),
                                                          tokens.verbalizer, tokens.single_token_labels)
                options.pad_id = tokenizer.pad_token_id
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return model

    def lora_extra(self, model: Any) -> dict[str, Any]:
        """``modules_to_save``: the head (and a task pooler such as DeBERTa's), trained in full."""
        from verifily_classification.head import head_modules

        modules = head_modules(model)
        return {"modules_to_save": modules} if modules else {}

    def prepare_features(self, rows: Sequence[Mapping[str, Any]], tokenizer: Any, model_kind: str,
                         config: Any, options: ClassificationOptions) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Token ids (``text_pair`` as a pair, cut per ``task_options.truncation``) with label ids;
        truncation is counted."""
        from verifily_classification.data import features
        from verifily_classification.labels import LabelSet

        if options.uses_label_tokens:
            from verifily_classification import labeltokens

            feats, truncated = labeltokens.features(rows, tokenizer, LabelSet(options.label_names),
                                                    options.label_token_ids, options.tokens.template,
                                                    options.truncation, config.training.max_seq_length)
            return feats, {"rows": len(feats), "truncated": truncated}
        feats, truncated = features(rows, tokenizer, self._label_set(options), config.training.max_seq_length,
                                    truncation=options.truncation)
        return feats, {"rows": len(feats), "truncated": truncated}

    def data_collator(self, tokenizer: Any, model_kind: str, model: Any) -> Any:
        """Dynamic padding (:meth:`build_trainer` applies ``task_options.padding``)."""
        from verifily_classification.data import collator

        if model_kind == LABEL_TOKENS:
            from verifily_classification.labeltokens import LabelTokenCollator

            return LabelTokenCollator(tokenizer.pad_token_id)
        return collator(tokenizer)

    def build_trainer(self, trainer_class: type, args_class: type, args: Mapping[str, Any], *, job: Any, model: Any,
                      tokenizer: Any, train_dataset: Any, eval_dataset: Any, data_collator: Any, callbacks: list[Any],
                      options: ClassificationOptions) -> Any:
        """The default trainer, with batches padded per ``task_options.padding``."""
        from verifily_classification.data import collator

        max_len = job.config.training.max_seq_length
        if options.uses_label_tokens:
            from verifily_classification.labeltokens import LabelTokenCollator

            pad = LabelTokenCollator(tokenizer.pad_token_id, options.padding, max_len)
        else:
            pad = collator(tokenizer, options.padding, max_len)
        return super().build_trainer(trainer_class, args_class, args, job=job, model=model, tokenizer=tokenizer,
                                     train_dataset=train_dataset, eval_dataset=eval_dataset, data_collator=pad,
                                     callbacks=callbacks, options=options)

    def trainer_class(self, options: ClassificationOptions, rows: Sequence[Mapping[str, Any]]) -> type:
        """Cross-entropy (class-weighted per ``task_options.class_weights``; multi-label rows: binary
        cross-entropy of a sigmoid per label) and val metrics."""
        from verifily_classification.trainer import (
            class_weights, label_token_trainer_class, metrics_function, trainer_class,
        )

        labels = self._label_set(options)
        weights = None if labels.multi_label else class_weights(options.class_weights, rows, labels)
        metrics, higher = options.validation
        compute = metrics_function(labels, metrics) if metrics else None
        if options.uses_label_tokens:
            return label_token_trainer_class(weights, options.label_token_ids, options.pad_id, compute, higher)
        return trainer_class(weights, compute, higher, multi_label=labels.multi_label)

    def save_artifacts(self, run_dir: Path, model: Any, job: Any) -> None:
        """``labels.json``: the label set in id order, ``id2label``/``label2id`` and the custom head."""
        from verifily_classification.labels import write_labels

        labels = self._label_sets.pop(job.job_id, None) or self._labels(job)
        tokenizer = self._tokenizers.pop(job.job_id, None)
        options = parse_options(job.config.task_options)
        extra: dict[str, Any] = {}
        if labels.multi_label and options.tune_threshold:
            from verifily_classification.predict import tune_on_val

            extra["threshold_tuning"] = tune_on_val(model, tokenizer, job, labels, options)
            labels.threshold = extra["threshold_tuning"]["threshold"]
        if options.uses_label_tokens:
            from verifily_classification.labeltokens import verbalizer_texts

            extra = {"formulation": LABEL_TOKENS, "verbalizer": dict(zip(labels.names(), verbalizer_texts(
                labels, options.tokens.verbalizer)))}
        write_labels(run_dir, labels, options.head_spec(), **extra)

    def _labels(self, job: Any) -> Any:
        if job.job_id not in self._label_sets:
            from verifily_classification.labels import resolve_labels
            from verifily_classification.multilabel import dataset_is_multilabel, resolve_multilabels

            options = parse_options(job.config.task_options)
            if dataset_is_multilabel(job.dataset):
                labels = resolve_multilabels(options.labels, job.dataset)
                labels.threshold = options.decision_threshold
            else:
                labels = resolve_labels(options.labels, job.dataset.iter_rows("train"))
            self._label_sets[job.job_id] = labels
        return self._label_sets[job.job_id]

    @staticmethod
    def _label_set(options: ClassificationOptions) -> Any:
        from verifily_classification.labels import LabelSet

        return LabelSet(options.label_names, options.multi_label, options.decision_threshold)

    # -- evaluation --------------------------------------------------------------------------

    def eval_model_kwargs(self, run_path: Path) -> dict[str, Any]:
        """The head size and label names of a trained run (from its ``labels.json``)."""
        from verifily_classification.labels import read_labels

        return read_labels(run_path).model_kwargs()

    def reference_placeholder(self, run_path: Path) -> Any:
        """The run's first label (the reference must be a label of the run); for a multi-label run,
        the empty label set."""
        from verifily_classification.labels import read_labels

        labels = read_labels(run_path)
        return [] if labels.multi_label else labels.labels[0]

    def with_reference(self, row: Mapping[str, Any], reference: Any) -> dict[str, Any]:
        """A copy of ``row`` with ``reference`` as its ``label`` (a list: as its ``labels``) where
        it has neither."""
        from verifily_classification.multilabel import FIELD

        out = dict(row)
        if "label" not in out and FIELD not in out:
            out[FIELD if isinstance(reference, list) else "label"] = reference
        return out

    def reference(self, row: Mapping[str, Any]) -> Any:
        """The row's ``label``, or its ``labels`` list in a multi-label dataset."""
        from verifily_classification.multilabel import FIELD

        return row[FIELD] if FIELD in row else row["label"]

    def eval_default_metrics(self, run_path: Path) -> tuple[str, ...]:
        """The multi-label metrics for a multi-label run, else :attr:`default_metrics`."""
        from verifily_classification.labels import read_labels

        return MULTI_LABEL_METRICS if read_labels(run_path).multi_label else self.default_metrics

    def eval_metric_kwargs(self, run_path: Path) -> dict[str, Any]:
        """``labels``: the run's label set in id order (from its ``labels.json``)."""
        from verifily_classification.labels import read_labels

        return {"labels": read_labels(run_path).labels}

    def predict(self, model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], model_kind: str,
                config: Any, options: Any, batch_size: int, device: str) -> list[dict[str, Any]]:
        """Per row: the predicted label, the reference, and ``scores`` ``p_true``, ``p_pred``, ``loss``
        (multi-label: the predicted label set, and also ``probabilities``, see
        :func:`~verifily_classification.predict.multilabel_record`)."""
        from verifily_classification.labels import MULTI_LABEL_PROBLEM, LabelSet
        from verifily_classification.predict import predict

        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if getattr(model.config, "problem_type", None) == MULTI_LABEL_PROBLEM:
            return predict(model, tokenizer, rows, LabelSet(names, True, options.decision_threshold),
                           config.training.max_seq_length, batch_size, device, truncation=options.truncation,
                           padding=options.padding)
        if model_kind == LABEL_TOKENS:
            from verifily_classification.predict import predict_label_tokens

            return predict_label_tokens(model, tokenizer, rows, LabelSet(names), options,
                                        config.training.max_seq_length, batch_size, device)
        return predict(model, tokenizer, rows, LabelSet(names), config.training.max_seq_length, batch_size, device,
                       truncation=options.truncation, padding=options.padding)


class LabelTokenLoader(PretrainedLoader, ModelLoader):
    """Causal LMs with their LM head, for the label-token formulation of classification."""

    name = LABEL_TOKEN_LOADER
    kind = LABEL_TOKENS

    def matches(self, model_config: Any) -> bool:
        """Decoder-only models."""
        return not getattr(model_config, "is_encoder_decoder", False)


class SequenceClassificationLoader(PretrainedLoader, ModelLoader):
    """``*ForSequenceClassification`` models, with the custom head of ``task_options`` installed."""

    name = LOADER
    kind = LOADER

    def matches(self, model_config: Any) -> bool:
        """Encoders and decoders (encoder-decoder models are left to ``seq2seq``)."""
        return not getattr(model_config, "is_encoder_decoder", False)

    def load(self, job: Any, auto_class: str, **kwargs: Any) -> tuple[Any, Any]:
        """Load the model and tokenizer; for the classification task, install the configured head."""
        model, tokenizer = super().load(job, auto_class, **kwargs)
        if job.task == TASK:
            spec = parse_options(job.config.task_options).head_spec()
            if spec:
                from verifily_classification.head import install_head

                install_head(model, spec)
        return model, tokenizer


@hookimpl
def verifily_register_tasks(registry: Any) -> None:
    """Register the ``classification`` task."""
    registry.add(ClassificationTask())


@hookimpl
def verifily_register_model_loaders(registry: Any) -> None:
    """Register the ``sequence_classification`` and ``label_token_lm`` loaders."""
    registry.add(SequenceClassificationLoader())
    registry.add(LabelTokenLoader())


@hookimpl
def verifily_select_model_loader(task: str, model_config: Any, config: Any) -> str | None:
    """``sequence_classification`` for the classification task on encoder or decoder models;
    ``label_token_lm`` with ``task_options.formulation: label_tokens`` (its model is checked to
    be a causal LM when loaded).

    Not ``trylast``: it must answer before the generic built-in loaders, which accept any model.
    """
    if task != TASK:
        return None
    try:
        label_tokens = parse_options(config.task_options).uses_label_tokens
    except Exception:  # bad options are reported by config validation
        label_tokens = False
    if label_tokens:
        return LABEL_TOKEN_LOADER
    return LOADER if SequenceClassificationLoader().matches(model_config) else None


@hookimpl
def verifily_validate_config(config: Any) -> list[str] | None:
    """``task_options`` problems at plan time (``--dry-run``), before anything is loaded."""
    return config_problems(config) if config.task == TASK else None
