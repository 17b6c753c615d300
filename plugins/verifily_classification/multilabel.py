"""Multi-label rows (``labels: [..]``, a set of label names, possibly empty): row checks, the
dataset's mode, the label set and the decision threshold (no heavy imports; NumPy inside the
threshold search).

A dataset is single-label (every row has ``label``) or multi-label (every row has ``labels``);
a mix is a data error naming a row of each form by ``file:line``. A multi-label classifier
scores every label on its own (a sigmoid per label, binary cross-entropy) and predicts the
labels whose probability is at least ``task_options.threshold`` (default 0.5); with
``task_options.tune_threshold: true`` the threshold is the one of :data:`GRID` with the best
micro F1 on the val split, recorded in ``labels.json``.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, Sequence

from verifily_core.errors import ConfigError, DataError

from verifily_classification.labels import LabelSet, sort_labels

FIELD = "labels"
SPLITS = ("train", "val", "test")
DEFAULT_THRESHOLD = 0.5
GRID = tuple(round(0.01 * i, 2) for i in range(1, 100))
"""Candidate thresholds of ``tune_threshold``: 0.01 to 0.99 in steps of 0.01."""


def is_multilabel_row(row: Mapping[str, Any]) -> bool:
    """Whether a row gives a label set (``labels``) rather than one ``label``."""
    return FIELD in row


def row_problem(row: Mapping[str, Any]) -> str | None:
    """The first problem of a multi-label row's ``labels`` as a short phrase, or ``None``."""
    if "label" in row:
        return "a row has 'label' (one label) or 'labels' (a list), not both"
    labels = row[FIELD]
    if not isinstance(labels, list):
        return f"field 'labels' must be a list of label names, got {type(labels).__name__}"
    seen: set[str] = set()
    for i, name in enumerate(labels):
        if not isinstance(name, str) or not name.strip():
            return f"field 'labels' item {i} must be a non-empty string, got {name!r}"
        if name in seen:
            return f"field 'labels' lists '{name}' twice"
        seen.add(name)
    return None


def numbered_rows(dataset: Any, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("file:line", row)`` of a split, in order."""
    from verifily_core.datasets.rows import iter_jsonl

    path = dataset.split_path(split)
    for lineno, row in iter_jsonl(path):
        yield f"{path}:{lineno}", row


def dataset_is_multilabel(dataset: Any) -> bool:
    """Whether the dataset's rows are multi-label: every row of every split one form.

    :raises DataError: rows of both forms (a row of each is named by ``file:line``).
    """
    first: dict[bool, str] = {}
    for split in SPLITS:
        if not dataset.has_split(split):
            continue
        for where, row in numbered_rows(dataset, split):
            first.setdefault(is_multilabel_row(row), where)
            if len(first) == 2:
                raise DataError(f"the dataset mixes single-label and multi-label rows: {first[False]} has 'label', "
                                f"{first[True]} has 'labels'; give every row 'labels' (a list, possibly empty) "
                                "or every row 'label'")
    return first.get(True) is not None


def resolve_multilabels(explicit: Sequence[Any] | None, dataset: Any) -> LabelSet:
    """``explicit`` (``task_options.labels``) or the sorted labels of the training rows' sets;
    with ``explicit`` every split's labels are checked against it.

    :raises DataError: a label outside the configured set (named by ``file:line``), or fewer
        than 2 labels in the training rows.
    """
    if explicit:
        labels = LabelSet(explicit, multi_label=True)
        for split in SPLITS:
            if dataset.has_split(split):
                check_rows(labels, numbered_rows(dataset, split))
        return labels
    found = sort_labels(name for _, row in numbered_rows(dataset, "train") for name in row[FIELD])
    if len(found) < 2:
        raise DataError(f"the training split's label lists hold {len(found)} distinct label(s) {found}; a multi-label "
                        "classifier needs at least 2 (or list them in task_options.labels)")
    return LabelSet(found, multi_label=True)


def check_rows(labels: LabelSet, rows: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
    """Fail on the first ``(where, row)`` with a label outside ``labels`` (DataError naming it)."""
    for where, row in rows:
        for name in row[FIELD]:
            if name not in labels:
                raise DataError(f"{where}: label {name!r} is not one of the run's labels ({', '.join(labels.names())}); "
                                "fix the row or list the label in task_options.labels and retrain")


def multi_hot(names: Sequence[Any], labels: LabelSet, where: str) -> list[float]:
    """The 0/1 vector of a label set in id order (DataError naming ``where`` for an unknown label)."""
    out = [0.0] * len(labels)
    for name in names:
        out[labels.index(name, where)] = 1.0
    return out


def check_options(options: Any, multi_label: bool, has_val: bool) -> None:
    """The options that depend on the rows' form.

    :raises ConfigError: ``threshold``/``tune_threshold`` with single-label rows; with multi-label
        rows, ``formulation: label_tokens``, ``class_weights``, or ``tune_threshold`` without a
        val split.
    """
    root = "$.task_options"
    if not multi_label:
        for name in ("threshold", "tune_threshold"):
            if getattr(options, name) not in (None, False):
                raise ConfigError(f"{root}.{name}: applies to multi-label rows ('labels': [...]); the dataset's rows "
                                  "have one 'label' each (the prediction is the most probable label); remove it")
        return
    if options.uses_label_tokens:
        raise ConfigError(f"{root}.formulation: label_tokens scores one label per row; the dataset's rows are "
                          "multi-label ('labels'); use formulation: head (a sigmoid per label)")
    if options.class_weights != "none":
        raise ConfigError(f"{root}.class_weights: weights one label per row and the dataset's rows are multi-label "
                          "('labels'); remove class_weights")
    if options.tune_threshold and not has_val:
        raise ConfigError(f"{root}.tune_threshold: picks the threshold on the val split and the dataset has none; "
                          "add a val split or set task_options.threshold")


def decide(probs: Sequence[float], threshold: float) -> list[int]:
    """The ids of the labels whose probability is at least ``threshold``."""
    return [k for k, p in enumerate(probs) if p >= threshold]


def micro_f1_at(probs: Any, gold: Any, threshold: float) -> float:
    """Micro F1 of the decisions ``probs >= threshold`` against the 0/1 matrix ``gold`` (0 without
    any positive)."""
    import numpy as np

    pred = np.asarray(probs) >= threshold
    truth = np.asarray(gold) > 0.5
    tp = float((pred & truth).sum())
    wrong = float((pred ^ truth).sum())
    return 2 * tp / (2 * tp + wrong) if tp + wrong else 0.0


def tune_threshold(probs: Any, gold: Any, configured: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """The threshold of :data:`GRID` with the best micro F1 of ``probs`` (``(n, K)``) against
    ``gold``; ties go to the candidate nearest ``configured``, then to the lower one.

    Returns ``threshold``, ``micro_f1`` (val, at that threshold), ``configured`` and
    ``configured_micro_f1``, ``metric``, ``split`` and ``candidates``.
    """
    scored = [(micro_f1_at(probs, gold, t), t) for t in GRID]
    best_f1, best = max(scored, key=lambda st: (st[0], -abs(st[1] - configured), -st[1]))
    return {"threshold": best, "micro_f1": round(best_f1, 6), "configured": configured,
            "configured_micro_f1": round(micro_f1_at(probs, gold, configured), 6), "metric": "micro_f1",
            "split": "val", "candidates": f"{GRID[0]} to {GRID[-1]} in steps of 0.01"}

