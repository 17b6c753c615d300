"""The label set of a classifier: where it comes from, its order, and ``labels.json`` (no heavy imports).

Labels are strings or integers and are compared as strings (``1`` and ``"1"`` are one label,
as in the classification metrics). The set, in id order, is ``task_options.labels`` when
given, otherwise the sorted labels of the training split: integers (and digit strings)
numerically first, then strings in code-point order. It is saved in the run as
``labels.json`` and in the model config (``id2label``/``label2id``), so evaluation and
inference use the same ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from verifily_core.files import read_json, write_json
from verifily_core.errors import DataError

LABELS_FILE = "labels.json"
MULTI_LABEL_PROBLEM = "multi_label_classification"  # transformers' problem_type: sigmoid + BCEWithLogits


def sort_labels(values: Iterable[Any]) -> list[Any]:
    """Distinct labels (first spelling kept), numbers numerically first, then strings."""
    unique: dict[str, Any] = {}
    for value in values:
        unique.setdefault(str(value), value)

    def key(name: str) -> tuple[int, int, str]:
        return (0, int(name), "") if name.lstrip("-").isdigit() else (1, 0, name)

    return [unique[name] for name in sorted(unique, key=key)]


class LabelSet:
    """Labels in id order with string-keyed lookup; ``index`` raises a DataError naming the row.

    ``multi_label``: rows carry label sets (a sigmoid per label); ``threshold``: the probability
    from which a multi-label classifier predicts a label."""

    def __init__(self, labels: Sequence[Any], multi_label: bool = False, threshold: float = 0.5) -> None:
        self.labels = list(labels)
        self.multi_label, self.threshold = multi_label, threshold
        self._ids = {str(label): i for i, label in enumerate(self.labels)}

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, value: Any) -> bool:
        return str(value) in self._ids

    def names(self) -> list[str]:
        """The labels as strings, in id order."""
        return [str(label) for label in self.labels]

    def index(self, value: Any, where: str) -> int:
        """The id of ``value``; ``where`` (e.g. ``test row 3``) names the row in the error."""
        try:
            return self._ids[str(value)]
        except KeyError:
            raise DataError(f"{where}: label {value!r} is not one of the run's labels "
                            f"({', '.join(self.names())}); fix the row or list the label in "
                            "task_options.labels and retrain") from None

    def model_kwargs(self) -> dict[str, Any]:
        """``from_pretrained`` arguments that size the head and name its outputs; a base model
        whose classification head has another number of labels gets a new head."""
        out = {"num_labels": len(self.labels), "id2label": dict(enumerate(self.names())),
               "label2id": {name: i for i, name in enumerate(self.names())}, "ignore_mismatched_sizes": True}
        if self.multi_label:
            out["problem_type"] = MULTI_LABEL_PROBLEM
        return out


def resolve_labels(explicit: Sequence[Any] | None, train_rows: Iterable[Mapping[str, Any]]) -> LabelSet:
    """``explicit`` (``task_options.labels``) or the sorted training labels; a training label
    outside an explicit set is a DataError naming the row."""
    if explicit:
        labels = LabelSet(explicit)
        for i, row in enumerate(train_rows, start=1):
            labels.index(row["label"], f"train row {i}")
        return labels
    found = sort_labels(row["label"] for row in train_rows)
    if len(found) < 2:
        raise DataError(f"the training split has {len(found)} distinct label(s) {found}; a classifier needs at "
                        "least 2 (or list them in task_options.labels)")
    return LabelSet(found)


def check_rows(labels: LabelSet, rows: Iterable[Mapping[str, Any]], split: str, path: Any = None) -> None:
    """Fail on the first row of ``split`` whose label is outside the set (DataError naming the row)."""
    where = f" of {path}" if path else ""
    for i, row in enumerate(rows, start=1):
        labels.index(row["label"], f"{split} row {i}{where}")


def write_labels(run_dir: str | Path, labels: LabelSet, head: Mapping[str, Any] | None = None,
                 **extra: Any) -> Path:
    """Write ``labels.json`` (``labels`` in id order, ``id2label``, ``label2id``, the custom ``head``;
    for a multi-label set ``multi_label: true`` and the decision ``threshold``; and ``extra`` keys
    such as the label-token ``formulation`` and ``verbalizer`` or the ``threshold_tuning``)
    atomically; returns its path."""
    path = Path(run_dir) / LABELS_FILE
    doc = {"labels": labels.labels, "id2label": {str(i): n for i, n in enumerate(labels.names())},
           "label2id": {n: i for i, n in enumerate(labels.names())}, "head": dict(head or {})}
    if labels.multi_label:
        doc.update(multi_label=True, threshold=labels.threshold)
    doc.update(extra)
    return write_json(path, doc)


def read_labels(run_dir: str | Path) -> LabelSet:
    """The label set a run was trained with (DataError when ``labels.json`` is missing or unreadable)."""
    path = Path(run_dir) / LABELS_FILE
    try:
        doc = read_json(path)
        return LabelSet(doc["labels"], bool(doc.get("multi_label", False)), float(doc.get("threshold", 0.5)))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: cannot read the run's label set ({type(exc).__name__}); "
                        "the run directory is incomplete") from None
