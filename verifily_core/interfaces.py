"""The five kinds of plugin object: task, model loader, metric, slicer, compute backend.

Plugins register instances of these classes through the registration hooks of
:mod:`verifily_core.hookspecs`. The base classes are deliberately small: a ``name``
and the few methods the core calls. Heavy libraries (torch, transformers, peft)
are only ever imported inside method bodies, so discovering plugins stays cheap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from verifily_core.datasets.manifest import DatasetVersion
    from verifily_core.jobs import TrainJob
    from verifily_core.modeling import ModelSource
    from verifily_core.runs import Run


PREDICTION = "prediction"
"""The name, in :attr:`Metric.reads` and a task's ``needs``, of the generated output."""

class Task(ABC):
    """A learning task (``sft``, ``classification``): row schema, data preparation, prediction.

    ``required_fields``/``optional_fields`` are the row fields besides ``tags``;
    ``reference_field`` is the gold answer's field (the rest is the input, used by leakage
    checks and dataset diffs); ``default_metrics`` are used when ``eval.metrics`` is not set.

    What the core reports about the task's runs is declared here too, so a third-party task
    gets the same treatment as a built-in: ``main_metrics`` (the metrics that summarise a run,
    most important first: ``verifily runs`` shows them and the ``main`` alias of ``verifily
    compare --metric`` means the first), ``metric_aliases`` (further short names for compare,
    e.g. ``{"f1": "token_f1"}``), ``hard_example_scores`` (per-example scores that rank hard
    examples, in order of preference: the first one the evaluated rows carry is used) and
    ``score_directions`` (``higher_is_better`` of per-example model scores that are not
    metrics, e.g. ``{"loss": False}``). ``validation_metrics`` are the metric plugins the task
    computes on the val split at every evaluation during training besides the loss
    (``training.validation_metrics`` chooses others among the metrics that read only
    ``validation_reads``, what the task's evaluation during training gives each row); a task
    without any computes the loss only and refuses that setting.
    """

    name: ClassVar[str]
    required_fields: ClassVar[tuple[str, ...]] = ()
    optional_fields: ClassVar[tuple[str, ...]] = ()
    reference_field: ClassVar[str] = ""
    default_metrics: ClassVar[tuple[str, ...]] = ()
    main_metrics: ClassVar[tuple[str, ...]] = ()
    metric_aliases: ClassVar[Mapping[str, str]] = MappingProxyType({})
    hard_example_scores: ClassVar[tuple[str, ...]] = ()
    score_directions: ClassVar[Mapping[str, bool]] = MappingProxyType({})
    validation_metrics: ClassVar[tuple[str, ...]] = ()
    validation_reads: ClassVar[frozenset[str]] = frozenset()
    groups_by_length: ClassVar[bool] = True
    """Whether ``training.group_by_length`` applies: the features of :meth:`prepare_features`
    carry ``input_ids`` and the trainer batches them with the Trainer's sampler."""
    streams: ClassVar[bool] = False
    """Whether the task trains on a streamed split (``training.streaming``): :meth:`prepare_features`
    may then be called on successive chunks of rows (its features for each row the same as for
    the whole split), and :meth:`trainer_class` receives the rows as an iterable that streams
    them again on each pass, never a list."""
    prediction_scores: ClassVar[tuple[str, ...]] = ()
    """Per-example scores that mean something without a reference (``p_pred``): what
    ``verifily predict`` shows; scores that compare with a reference are left out there."""
    list_fields: ClassVar[tuple[str, ...]] = ()
    """Row fields that hold a list of strings (classification's ``labels``): ``verifily dataset
    create`` reads a CSV/TSV cell for one as a JSON array (``["a", "b"]``) or as ``;``-separated
    values (``a;b``), and an unmapped column of that name fills it."""
    label_predictions: ClassVar[bool] = False
    """Whether predictions and references are labels of a closed set: ``verifily report``
    then counts a confusion matrix from ``predictions.jsonl`` when the evaluation wrote none."""

    def validate_row(self, row: Mapping[str, Any]) -> str | None:
        """Return the first problem with one data row as a short phrase, or ``None``.

        The default checks that required fields are present and are non-empty strings
        and optional fields, when present, are strings or null. Tasks extend it.
        """
        for field in self.required_fields:
            if field not in row:
                return f"missing required field '{field}'"
            if not isinstance(row[field], str) or not row[field].strip():
                return f"field '{field}' must be a non-empty string"
        for field in self.optional_fields:
            if field in row and row[field] is not None and not isinstance(row[field], str):
                return f"field '{field}' must be a string or null"
        allowed = set(self.required_fields) | set(self.optional_fields) | {"tags", "id"}
        unknown = sorted(set(row) - allowed)
        if unknown:
            return f"unknown field '{unknown[0]}' (allowed: {', '.join(sorted(allowed))})"
        return None

    def validate_dataset(self, dataset: "DatasetVersion", options: Any) -> None:
        """Check what no single row shows, without a model or tokenizer (e.g. a classifier's
        label set, rows of one split mixing two forms); raise ``DataError`` naming the split's
        file and the row. ``options`` are the parsed ``task_options``.

        Called once every row passed :meth:`validate_row`, on the one path that resolves a
        config's dataset: the start of training (before any model loads), ``verifily train
        --dry-run`` and the evaluation of a run's test split. The default checks nothing.
        """

    def reference(self, row: Mapping[str, Any]) -> Any:
        """The gold answer of a row (the SFT ``output``, the classification ``label``)."""
        return row[self.reference_field]

    def input_fields(self) -> tuple[str, ...]:
        """The row fields that make up the model input (all fields but the reference)."""
        return tuple(f for f in (*self.required_fields, *self.optional_fields) if f != self.reference_field)

    def row_input(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The model input of a row as named parts: what leakage checks and dataset diffs compare
        and what hard examples show. The default is :meth:`input_fields` (``None`` where absent);
        a task whose input is not a set of fields (a conversation) overrides it."""
        return {f: row.get(f) for f in self.input_fields()}

    def with_reference(self, row: Mapping[str, Any], reference: Any) -> dict[str, Any]:
        """A copy of ``row`` that carries ``reference`` as its gold answer where it has none, so a
        row to predict (``verifily predict``) passes :meth:`validate_row`. The default sets
        :attr:`reference_field` when it is absent."""
        out = dict(row)
        if self.reference_field and self.reference_field not in out:
            out[self.reference_field] = reference
        return out

    def text_row(self, text: str, context: str | None, run_path: Path) -> dict[str, Any]:
        """The row for a free-text prompt (``verifily generate --prompt``), in the form the run at
        ``run_path`` was trained on; ``context`` is extra input where the task has such a field.

        :raises ConfigError: the task does not take free-text prompts (the default)."""
        from verifily_core.errors import ConfigError

        raise ConfigError(f"task '{self.name}' does not generate from a prompt; give rows with verifily predict --input")

    # -- training contract (called by compute backends) -------------------------------------

    def parse_options(self, options: Mapping[str, Any]) -> Any:
        """Structure ``config.task_options`` into the task's own options object.

        The default accepts no options. Errors name ``$.task_options.<field>``.
        """
        if options:
            from verifily_core.errors import ConfigError

            raise ConfigError(f"$.task_options: task '{self.name}' takes no options, got {sorted(options)}")
        return None

    def model_auto_class(self, model_kind: str) -> str:
        """The ``transformers`` Auto class to load for a model family (``causal_lm``/``seq2seq``)."""
        raise NotImplementedError(f"task '{self.name}' does not define model_auto_class()")

    def peft_task_type(self, model_kind: str) -> str:
        """The ``peft.TaskType`` name for LoRA on this task and model family."""
        raise NotImplementedError(f"task '{self.name}' does not define peft_task_type()")

    def prepare_features(self, rows: Sequence[Mapping[str, Any]], tokenizer: Any, model_kind: str,
                         config: Any, options: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Tokenize rows into training features; return them and stats (``rows``, ``truncated``)."""
        raise NotImplementedError(f"task '{self.name}' does not define prepare_features()")

    def data_collator(self, tokenizer: Any, model_kind: str, model: Any) -> Any:
        """A callable that pads a list of features into a batch."""
        raise NotImplementedError(f"task '{self.name}' does not define data_collator()")

    # optional training steps; the defaults do nothing

    def model_kwargs(self, job: "TrainJob") -> dict[str, Any]:
        """Extra ``from_pretrained`` keyword arguments for the base model (e.g. ``num_labels``)."""
        return {}

    def prepare_model(self, model: Any, tokenizer: Any, job: "TrainJob | ModelSource", options: Any) -> Any:
        """Adjust the loaded model before LoRA is applied or a run's adapter is attached; return it
        (or a replacement). Called when training (``job`` is the :class:`TrainJob`) and when a
        run is rebuilt for evaluation (``job`` is a ``ModelSource``: config, plugins, no dataset)."""
        return model

    def lora_extra(self, model: Any) -> dict[str, Any]:
        """Extra ``peft.LoraConfig`` arguments (e.g. ``modules_to_save`` for a task head)."""
        return {}

    def trainer_class(self, options: Any, rows: Sequence[Mapping[str, Any]]) -> type | None:
        """A ``transformers.Trainer`` subclass to train with, or ``None`` for the backend's default
        (``Seq2SeqTrainer`` for seq2seq models, ``Trainer`` otherwise)."""
        return None

    def build_trainer(self, trainer_class: type, args_class: type, args: Mapping[str, Any], *, job: "TrainJob",
                      model: Any, tokenizer: Any, train_dataset: Any, eval_dataset: Any, data_collator: Any,
                      callbacks: list[Any], options: Any) -> Any:
        """Build the trainer from the pieces the compute backend prepared for ``job``.

        ``args`` are the keyword arguments for ``args_class`` (``TrainingArguments``, or
        ``Seq2SeqTrainingArguments`` for seq2seq models) that the backend mapped from ``training.*``;
        ``train_dataset``/``eval_dataset`` hold the :meth:`prepare_features` features (``eval_dataset``
        is ``None`` without a val split); ``trainer_class`` is :meth:`trainer_class`'s answer or the
        backend's default. The default returns ``trainer_class(model=, args=args_class(**args),
        train_dataset=, eval_dataset=, data_collator=, callbacks=)``. Override it to train with a
        ``TrainingArguments`` subclass and extra arguments, another dataset type or extra trainer
        arguments (e.g. ``processing_class``).
        """
        return trainer_class(model=model, args=args_class(**args), train_dataset=train_dataset,
                             eval_dataset=eval_dataset, data_collator=data_collator, callbacks=callbacks)

    def save_artifacts(self, run_dir: Path, model: Any, job: "TrainJob") -> None:
        """Write task files (e.g. ``labels.json``) into the run directory before it is sealed."""

    # -- evaluation contract ----------------------------------------------------------------

    def eval_model_kwargs(self, run_path: Path) -> dict[str, Any]:
        """Extra ``from_pretrained`` keyword arguments to rebuild a trained run's base model for
        evaluation, read from the run directory alone (e.g. ``num_labels`` from ``labels.json``)."""
        return {}

    def trained_options(self, options: Any, run_path: Path) -> Any:
        """The parsed ``task_options`` completed with what training resolved and the run directory
        records (a classifier's label set, a multi-label decision threshold), for predicting with
        a trained run (evaluation, ``verifily predict``) and computing its training features
        (``verifily attribute``). The default returns ``options``."""
        return options

    def eval_default_metrics(self, run_path: Path) -> tuple[str, ...]:
        """The metrics a trained run is evaluated with when ``eval.metrics`` is not set, read from
        the run directory alone (a multi-label classifier has its own). Default
        :attr:`default_metrics`."""
        return self.default_metrics

    def reference_placeholder(self, run_path: Path) -> Any:
        """A valid reference for rows predicted without one (``verifily predict``): the scores
        that depend on it are not shown. Default ``"-"``; classification gives a label of the run."""
        return "-"

    def eval_metric_kwargs(self, run_path: Path) -> dict[str, Any]:
        """Keyword arguments every metric receives for this run's predictions, read from the run
        directory alone (e.g. ``labels``, the label set in id order); used by eval and compare."""
        return {}

    def resolve_metric_alias(self, name: str) -> str:
        """The metric a ``--metric`` name means for this task: ``main`` is the first of
        :attr:`main_metrics`, then :attr:`metric_aliases`; any other name is itself."""
        if name == "main" and self.main_metrics:
            return self.main_metrics[0]
        return self.metric_aliases.get(name, name)

    def predict(self, model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], model_kind: str,
                config: Any, options: Any, batch_size: int, device: str) -> list[dict[str, Any]]:
        """Predict each row in batches: ``{"prediction", "reference", "scores": {...}}`` per row,
        in order (``scores`` holds per-example model quantities such as ``loss`` or ``p_true``).

        A ``predict`` that also accepts ``needs`` gets the set of what the evaluation reads
        (:data:`PREDICTION` and score names, see :attr:`Metric.reads`) and may skip the rest,
        leaving ``prediction`` as ``None`` when it is not needed."""
        raise NotImplementedError(f"task '{self.name}' does not define predict()")


class ModelLoader(ABC):
    """Loads a base model and its tokenizer (``causal_lm``, ``seq2seq``, ...).

    ``kind`` is the model family the task prepares data for (``causal_lm`` or ``seq2seq``).
    """

    name: ClassVar[str]
    kind: ClassVar[str]

    def matches(self, model_config: Any) -> bool:
        """Whether this loader fits a base model's ``PretrainedConfig`` (used for ``model.loader: auto``)."""
        return False

    @abstractmethod
    def load(self, job: "TrainJob", auto_class: str, **kwargs: Any) -> tuple[Any, Any]:
        """Load ``(model, tokenizer)`` for ``job`` with the given ``transformers`` Auto class;
        extra keyword arguments (e.g. ``quantization_config``) come from the
        ``verifily_model_init_kwargs`` hook and go to ``from_pretrained``."""


class Metric(ABC):
    """A metric computed over per-example evaluation records (see ``docs/evaluation.md``).

    ``tasks`` lists the task names it applies to (empty: any task).
    ``higher_is_better`` tells compare and hard-example ranking which way is good.
    ``gold_set``: computed on the gold rows (``eval.gold_set``) instead of the test set.

    Only :meth:`compute` is required; a mapping result is non-scalar and reported under
    ``details``. Two optional forms make bootstrap intervals fast: :meth:`per_example`
    (the value is the mean of per-example values, also stored in each prediction's
    ``scores``) and :meth:`statistics` + :meth:`from_statistics` (the value is a function
    of column sums of per-example statistics). Otherwise ``compute`` runs per resample.
    """

    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]] = ()
    higher_is_better: ClassVar[bool] = True
    gold_set: ClassVar[bool] = False
    reads: ClassVar[frozenset[str]] = frozenset({PREDICTION})
    """What the metric reads from each record: ``prediction`` and/or names of per-example model
    scores (``loss``, ``n_tokens``, ``p_true``). A task's ``predict`` may skip producing what no
    chosen metric reads (an SFT evaluation of ``loss`` alone generates nothing)."""

    @abstractmethod
    def compute(
        self,
        predictions: Sequence[Any],
        references: Sequence[Any],
        rows: Sequence[Mapping[str, Any]],
        **kwargs: Any,
    ) -> float | Mapping[str, Any] | None:
        """Return the metric value over the given examples (``None``: undefined here).

        ``kwargs`` always hold ``task`` and ``scores`` (the per-example model scores such
        as ``loss``, aligned with ``predictions``); classification adds ``labels`` (the
        run's label set in id order); the metric's own options arrive by name.
        """

    def per_example(self, prediction: Any, reference: Any, row: Mapping[str, Any],
                    scores: Mapping[str, Any], **kwargs: Any) -> float | None:
        """Optional: this example's value, or ``None`` when the example does not count."""
        raise NotImplementedError

    def statistics(self, predictions: Sequence[Any], references: Sequence[Any],
                   rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> Any:
        """Optional: an ``(n, d)`` array of additive per-example statistics, or ``None``.

        The metric's value must equal ``from_statistics(statistics.sum(axis=0))``.
        """
        return None

    def from_statistics(self, totals: Any) -> Any:
        """Map summed statistics of shape ``(..., d)`` to metric values of shape ``(...)``
        (NaN where undefined)."""
        raise NotImplementedError(f"metric '{self.name}' defines statistics() but no from_statistics()")

    def settings(self, **options: Any) -> Mapping[str, Any]:
        """Optional: the options this metric's value depends on, resolved with their defaults
        (e.g. ``{"normalize": "text"}``); recorded in ``eval_results.json`` ``metric_settings``
        so a reader knows what was measured. Raises ConfigError for an invalid option."""
        return {}

    def write_artifacts(self, details: Mapping[str, Any], out_dir: Path) -> list[str]:
        """Optional: write files (e.g. a plot) for a non-scalar result into ``out_dir``;
        return the file names written."""
        return []

    def render_details(self, details: Mapping[str, Any]) -> list[str]:
        """Optional: lines that show a non-scalar result in the terminal report of ``verifily
        eval`` (e.g. a small confusion matrix); none by default."""
        return []


class Slicer(ABC):
    """Partitions evaluation records into named slices (``source=human``, ...).

    The rows given to :meth:`slices` are evaluation records: dicts with ``tags``,
    ``reference``, ``prediction``, ``scores`` and the test ``row``. Slice names follow the
    grammar of :mod:`verifily_core.slices` (build them with ``slice_name``).
    ``plain_specs``: this slicer computes plain specs of tag keys (``source``,
    ``source&difficulty``: one slice per observed combination of values); exactly one
    installed slicer may declare it.
    """

    name: ClassVar[str]
    plain_specs: ClassVar[bool] = False

    @abstractmethod
    def slices(self, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, list[int]]:
        """Map slice names to the indices of the rows in each slice."""

    def tag_keys(self, keys: Sequence[str]) -> list[str]:
        """The tag keys a slice spec reads (checked against the dataset's tags)."""
        return list(keys)


class ComputeBackend(ABC):
    """Runs a :class:`~verifily_core.jobs.TrainJob` somewhere and returns a finished run.

    ``reads_data``: whether the backend needs the dataset resolved and verified on this
    machine before :meth:`run` (a remote service that receives only the config does not).
    ``streams``: see the attribute.
    """

    name: ClassVar[str]
    reads_data: ClassVar[bool] = True
    streams: ClassVar[bool] = False
    """Whether the backend trains on a streamed split (``training.streaming``) when the task does."""

    @abstractmethod
    def run(self, job: "TrainJob") -> "Run":
        """Execute the job and return the completed :class:`~verifily_core.runs.Run`."""

    def check_batch(self, job: "TrainJob", memory_limit: int | None = None) -> dict[str, Any]:
        """``verifily train --dry-run --check-batch``: tokenize the data, load the model and run the
        largest batch as training would, and report (``checked``, ``splits``, ``peak_memory``,
        ``memory_limit``, ``fits``, ``seconds_per_step``, ``estimated_seconds``, ``advice``, ...).
        ``memory_limit`` (bytes) replaces the device's own limit. The default checks nothing and says why."""
        return {"checked": False, "reason": f"compute backend '{self.name}' does not check batches on this machine"}

