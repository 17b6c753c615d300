"""``task_options`` of the ``classification`` task (no heavy imports).

```yaml
task_options:
  labels: [neg, pos]            # optional: the label set in id order (default: sorted training labels)
  pooling: auto                 # auto | cls | mean | max | last
  head:                         # optional: an MLP head instead of the model's own
    num_layers: 1               # 0-3 hidden layers
    hidden_dims: [256]          # one width per hidden layer
    activation: relu            # relu | gelu | tanh
    dropout: 0.1                # 0.0-0.5
  class_weights: none           # none | auto | {label: weight}
  truncation: longest_first     # longest_first | only_first | only_second (which side of a pair is cut)
  padding: longest              # longest (per batch) | max_length (training.max_seq_length)
  formulation: head             # head | label_tokens (causal LMs: score each label's tokens)
  label_tokens:                 # optional, with formulation label_tokens
    template: "{text}\nLabel:"   # the prompt ({text}, {text_pair}); default below
    verbalizer: {pos: " positive", neg: " negative"}   # label -> text (default: " <label>")
    single_token_labels: false         # require one token per label
  threshold: 0.5                # multi-label rows: predict the labels with a probability >= this
  tune_threshold: false         # multi-label rows: pick the threshold with the best val micro F1
```

Leaving ``pooling: auto`` and ``head`` unset keeps the model's standard head (BERT: pooler +
linear; DeBERTa: context pooler + linear; Llama and other decoders: linear on the last token).
"""

from __future__ import annotations

import string
from typing import Any, Literal, Mapping

from attrs import define, field

from verifily_core.errors import ConfigError

ROOT = "$.task_options"
LABEL_TOKEN_LOADER = "label_token_lm"
Pooling = Literal["auto", "cls", "mean", "max", "last"]
Activation = Literal["relu", "gelu", "tanh"]
Truncation = Literal["longest_first", "only_first", "only_second"]
Padding = Literal["longest", "max_length"]
Formulation = Literal["head", "label_tokens"]
TEMPLATE_FIELDS = ("text", "text_pair")
MAX_HEAD_LAYERS = 3
MAX_DROPOUT = 0.5


@define
class HeadOptions:
    """An MLP head: ``num_layers`` hidden layers of ``hidden_dims`` widths, then a linear layer
    to the labels; ``dropout`` before every linear layer. ``num_layers: 0`` is dropout + linear."""

    num_layers: int = 0
    hidden_dims: list[int] = field(factory=list)
    activation: Activation = "relu"
    dropout: float = 0.1


@define
class LabelTokenOptions:
    """The label-token (verbalizer) formulation: the row in ``template`` (``{text}``, and
    ``{text_pair}`` for pairs; default ``"{text}\\nLabel:"``, with a pair
    ``"{text}\\n{text_pair}\\nLabel:"``), each label answered by the tokens of its
    ``verbalizer`` text (default ``" <label>"``); ``single_token_labels`` requires one token per label."""

    template: str | None = None
    verbalizer: dict[str, str] | None = None
    single_token_labels: bool = False


@define
class ClassificationOptions:
    """The classification task's options, structured from ``config.task_options``.

    ``label_names``, ``multi_label`` and ``validation`` are not options: training fills them with
    the resolved label set (id order) and the rows' form (label sets or one label per row), so
    feature preparation and the trainer agree with the model's head,
    and with the metric plugins that score the val split for ``training.metric_for_best_model``
    (``({name: metric}, higher_is_better)``).
    """

    labels: list[Any] | None = None
    pooling: Pooling = "auto"
    head: HeadOptions | None = None
    class_weights: Any = "none"
    truncation: Truncation = "longest_first"
    padding: Padding = "longest"
    formulation: Formulation = "head"
    label_tokens: LabelTokenOptions | None = None
    threshold: float | None = None
    tune_threshold: bool = False
    label_names: list[Any] = field(init=False, factory=list)
    multi_label: bool = field(init=False, default=False)
    validation: tuple[dict[str, Any], bool | None] = field(init=False, factory=lambda: ({}, None))
    label_token_ids: list[list[int]] = field(init=False, factory=list)
    pad_id: int = field(init=False, default=0)

    @property
    def uses_label_tokens(self) -> bool:
        """Whether labels are scored as tokens of a causal LM (``formulation: label_tokens``)."""
        return self.formulation == "label_tokens"

    @property
    def tokens(self) -> "LabelTokenOptions":
        """The label-token settings (defaults when ``label_tokens`` is not given)."""
        return self.label_tokens or LabelTokenOptions()

    @property
    def decision_threshold(self) -> float:
        """The multi-label decision threshold (``threshold``, default 0.5)."""
        return 0.5 if self.threshold is None else float(self.threshold)

    @property
    def custom_head(self) -> bool:
        """Whether the model's own head is replaced (``pooling`` set or ``head`` given)."""
        return self.pooling != "auto" or self.head is not None

    def head_spec(self) -> dict[str, Any]:
        """The custom head as plain data (``{}`` for the model's own head)."""
        if not self.custom_head:
            return {}
        head = self.head or HeadOptions()
        return {"pooling": self.pooling, "num_layers": head.num_layers, "hidden_dims": list(head.hidden_dims),
                "activation": head.activation, "dropout": head.dropout}


def parse_options(options: Mapping[str, Any]) -> ClassificationOptions:
    """Structure and check ``task_options``; errors name ``$.task_options.<field>``.

    :raises ConfigError: one line naming the field, what was expected and what was found.
    """
    from verifily_core.structuring import structure

    data = dict(options)
    labels = data.pop("labels", None)
    weights = data.pop("class_weights", "none")
    verbalizer = None
    if isinstance(data.get("label_tokens"), Mapping):
        data["label_tokens"] = dict(data["label_tokens"])
        verbalizer = data["label_tokens"].pop("verbalizer", None)
    opts = structure(data, ClassificationOptions, root=ROOT)
    opts.labels = _check_labels(labels)
    opts.class_weights = _check_class_weights(weights)
    if opts.head is not None:
        _check_head(opts.head)
    if opts.label_tokens is not None:
        opts.label_tokens.verbalizer = _check_verbalizer(verbalizer)
        _check_template(opts.label_tokens.template)
    if opts.threshold is not None and not 0.0 < opts.threshold < 1.0:
        raise ConfigError(f"{ROOT}.threshold: expected a probability between 0 and 1 (exclusive), got {opts.threshold}")
    return opts


def _check_verbalizer(verbalizer: Any) -> dict[str, str] | None:
    path = f"{ROOT}.label_tokens.verbalizer"
    if verbalizer is None:
        return None
    if not isinstance(verbalizer, Mapping) or not verbalizer:
        raise ConfigError(f"{path}: expected a mapping label -> text, got {verbalizer!r}")
    out = {}
    for label, text in verbalizer.items():
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{path}.{label}: expected a non-empty text, got {text!r}")
        out[str(label)] = text
    return out


def _check_template(template: str | None) -> None:
    path = f"{ROOT}.label_tokens.template"
    if template is None:
        return
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc} (write literal braces as {{{{ and }}}})") from None
    unknown = [n for n in names if n not in TEMPLATE_FIELDS]
    if unknown:
        raise ConfigError(f"{path}: unknown placeholder {{{unknown[0]}}}; use {{text}} and {{text_pair}}")
    if names.count("text") != 1 or names.count("text_pair") > 1:
        raise ConfigError(f"{path}: needs {{text}} once (and {{text_pair}} at most once), got {template!r}")


def _check_labels(labels: Any) -> list[Any] | None:
    if labels is None:
        return None
    if not isinstance(labels, list) or not labels:
        raise ConfigError(f"{ROOT}.labels: expected a non-empty list of labels (strings or integers), got {labels!r}")
    seen: set[str] = set()
    for i, label in enumerate(labels):
        if isinstance(label, bool) or not isinstance(label, (str, int)) or (isinstance(label, str) and not label.strip()):
            raise ConfigError(f"{ROOT}.labels[{i}]: expected a non-empty string or an integer, got {label!r}")
        if str(label) in seen:
            raise ConfigError(f"{ROOT}.labels[{i}]: label {label!r} is listed twice")
        seen.add(str(label))
    if len(labels) < 2:
        raise ConfigError(f"{ROOT}.labels: a classifier needs at least 2 labels, got {labels!r}")
    return list(labels)


def _check_class_weights(weights: Any) -> Any:
    if weights is None or weights == "none":
        return "none"
    if weights == "auto":
        return "auto"
    if isinstance(weights, dict) and weights:
        out = {}
        for label, w in weights.items():
            if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
                raise ConfigError(f"{ROOT}.class_weights.{label}: expected a number >= 0, got {w!r}")
            out[str(label)] = float(w)
        return out
    raise ConfigError(f"{ROOT}.class_weights: expected none, auto or a mapping label -> weight, got {weights!r}")


def _check_head(head: HeadOptions) -> None:
    path = f"{ROOT}.head"
    if not 0 <= head.num_layers <= MAX_HEAD_LAYERS:
        raise ConfigError(f"{path}.num_layers: expected 0 to {MAX_HEAD_LAYERS}, got {head.num_layers}")
    if len(head.hidden_dims) != head.num_layers:
        raise ConfigError(f"{path}.hidden_dims: expected {head.num_layers} width(s), one per hidden layer, "
                          f"got {head.hidden_dims!r}")
    for i, dim in enumerate(head.hidden_dims):
        if dim < 1:
            raise ConfigError(f"{path}.hidden_dims[{i}]: expected a width >= 1, got {dim}")
    if not 0.0 <= head.dropout <= MAX_DROPOUT:
        raise ConfigError(f"{path}.dropout: expected 0.0 to {MAX_DROPOUT}, got {head.dropout}")


def config_problems(config: Any) -> list[str]:
    """Problems of a classification config visible without loading anything (for ``--dry-run``)."""
    try:
        opts = parse_options(config.task_options)
    except ConfigError as exc:
        return [str(exc)]
    out = []
    if opts.custom_head and not config.lora.enabled:
        out.append(f"{ROOT}.head: a custom pooling/head needs lora.enabled: true (full fine-tuning saves "
                   "the model with its standard head only); remove pooling/head or enable LoRA")
    if opts.uses_label_tokens and opts.custom_head:
        out.append(f"{ROOT}.formulation: label_tokens scores the model's own LM head; remove pooling/head")
    if opts.uses_label_tokens and config.model.loader not in ("auto", LABEL_TOKEN_LOADER):
        out.append(f"{ROOT}.formulation: label_tokens needs model.loader auto or {LABEL_TOKEN_LOADER}, "
                   f"got '{config.model.loader}'")
    if opts.label_tokens is not None and not opts.uses_label_tokens:
        out.append(f"{ROOT}.label_tokens: used with formulation: label_tokens only; set it or remove label_tokens")
    if opts.custom_head and config.model.loader not in ("auto", "sequence_classification"):
        out.append(f"{ROOT}.head: a custom pooling/head needs model.loader auto or sequence_classification, "
                   f"got '{config.model.loader}'")
    return out
