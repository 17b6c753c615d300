"""Classification metrics from one confusion matrix: accuracy, macro/weighted/micro F1, per-class
scores, the confusion matrix itself, a classification report, subset accuracy and Hamming loss.

Multi-label rows (references that are lists of labels, predictions the predicted label sets)
are scored per label: each label is a yes/no decision with its own true positives, false
positives and false negatives; macro, weighted and micro F1, the per-class scores and the
report come from these counts as in scikit-learn's multi-label averages; ``accuracy`` and
``subset_accuracy`` are the share of rows whose predicted set equals the reference set;
``hamming_loss`` is the share of wrong (row, label) decisions; the confusion matrix is one
``tp, fp, fn, tn`` row per label. Every reference of an evaluation must have the same form.

Labels are compared as strings (``1`` and ``"1"`` are the same label). The label set is the
run's (``labels=`` in id order, from ``id2label``); without it, the sorted union of references
and predictions. Every label of the set counts in the macro average, also one that never
occurs in the predictions or references (its F1 is 0, as in scikit-learn with ``labels=``).
A prediction outside the label set is wrong for its row and counts as a false positive for
no class; a reference outside the label set is a data error.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from verifily_core.interfaces import Metric
from verifily_metrics.base import MeanMetric

MAX_TABLE_LABELS = 10
"""Confusion matrices with more labels are not printed in the terminal report."""

OTHER = "<other>"
MULTILABEL_COLUMNS = ("tp", "fp", "fn", "tn")


def is_multilabel(references: Sequence[Any]) -> bool:
    """Whether the references are label sets (lists); an error when some are and some are not.

    :raises DataError: references of both forms.
    """
    kinds = {isinstance(r, (list, tuple)) for r in references}
    if len(kinds) > 1:
        from verifily_core.errors import DataError

        raise DataError("the references mix label lists (multi-label) and single labels; score one form at a time")
    return kinds == {True}


def _flat(values: Sequence[Any]) -> list[Any]:
    return [x for v in values for x in (v if isinstance(v, (list, tuple)) else [v])]


def label_set(predictions: Sequence[Any], references: Sequence[Any], labels: Any = None) -> list[str]:
    """The label set as strings: ``labels`` (a list, or an ``{id: label}`` mapping) or the sorted
    union (of the labels in the sets, for multi-label rows)."""
    if isinstance(labels, Mapping):
        labels = [labels[k] for k in sorted(labels, key=int)]
    if labels:
        return [str(label) for label in labels]
    found = {str(x) for x in (*_flat(references), *_flat(predictions))}
    return sorted(found, key=lambda s: (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s))


def label_counts(predictions: Sequence[Any], references: Sequence[Any], labels: Any = None) -> tuple[list[str], Any]:
    """Multi-label rows as ``(labels, counts)``: per row ``[1, tp_1..tp_K, fp_1..fp_K, fn_1..fn_K]``
    (shape ``(n, 3K + 1)``; a predicted label outside the set counts for no label).

    ``3K + 1`` columns never equal the ``K'(K' + 1)`` of a confusion matrix (``K'(K' + 1)`` is
    0 or 2 modulo 3), so summed counts say which form they are.

    :raises DataError: a reference label outside the label set.
    """
    import numpy as np

    from verifily_core.errors import DataError

    names = label_set(predictions, references, labels)
    index = {name: i for i, name in enumerate(names)}
    k = len(names)
    out = np.zeros((len(references), 3 * k + 1))
    out[:, 0] = 1.0
    for row, (pred, ref) in enumerate(zip(predictions, references)):
        gold = {str(x) for x in ref}
        for name in gold:
            if name not in index:
                raise DataError(f"reference label '{name}' is not in the run's label set ({', '.join(names)})")
        guessed = {str(x) for x in (pred or ())} & set(index)
        for name in gold & guessed:
            out[row, 1 + index[name]] = 1.0
        for name in guessed - gold:
            out[row, 1 + k + index[name]] = 1.0
        for name in gold - guessed:
            out[row, 1 + 2 * k + index[name]] = 1.0
    return names, out


def confusion(predictions: Sequence[Any], references: Sequence[Any], labels: Any = None) -> tuple[list[str], list[int]]:
    """``(labels, cells)``: each row's cell ``true * (K + 1) + predicted`` (predicted ``K``: outside the set)."""
    from verifily_core.errors import DataError

    names = label_set(predictions, references, labels)
    index = {name: i for i, name in enumerate(names)}
    k = len(names)
    cells = []
    for pred, ref in zip(predictions, references):
        if str(ref) not in index:
            raise DataError(f"reference label '{ref}' is not in the run's label set ({', '.join(names)})")
        cells.append(index[str(ref)] * (k + 1) + index.get(str(pred), k))
    return names, cells


def _multilabel_width(d: int) -> bool:
    return d % 3 == 1


def counts(totals: Any) -> dict[str, Any]:
    """``tp``, ``fp``, ``fn`` per label (shape ``(..., K)``) and ``n`` rows from summed statistics:
    confusion counts ``(..., K*(K+1))`` or multi-label counts ``(..., 3K+1)`` (:func:`label_counts`)."""
    import numpy as np

    totals = np.asarray(totals, dtype=float)
    d = totals.shape[-1]
    if _multilabel_width(d):
        k = (d - 1) // 3
        return {"tp": totals[..., 1:1 + k], "fp": totals[..., 1 + k:1 + 2 * k], "fn": totals[..., 1 + 2 * k:],
                "n": totals[..., 0], "multi_label": True}
    k = _k_of(d)
    conf = totals.reshape(*totals.shape[:-1], k, k + 1)
    tp = np.diagonal(conf[..., :k], axis1=-2, axis2=-1)
    support = conf.sum(axis=-1)
    predicted = conf[..., :k].sum(axis=-2)
    return {"tp": tp, "fp": predicted - tp, "fn": support - tp, "n": support.sum(axis=-1), "multi_label": False}


def per_class(totals: Any) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support from confusion counts of shape ``(..., K*(K+1))``
    or multi-label counts of shape ``(..., 3K+1)``.

    A ratio with a zero denominator is 0 (scikit-learn's ``zero_division=0``).
    """
    c = counts(totals)
    tp, fp, fn = c["tp"], c["fp"], c["fn"]
    return {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn), "support": tp + fn}


def _ratio(num: Any, den: Any) -> Any:
    import numpy as np

    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def _k_of(d: int) -> int:
    k = int(round(((1 + 4 * d) ** 0.5 - 1) / 2))
    if k * (k + 1) != d:
        raise ValueError(f"{d} confusion cells do not form a K x (K+1) matrix")
    return k


class _ConfusionMetric(Metric):
    """Scalar metrics computed from the confusion counts (fast, exact bootstrap)."""

    tasks = ("classification",)

    def statistics(self, predictions: Sequence[Any], references: Sequence[Any],
                   rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> Any:
        """One-hot confusion cells, shape ``(n, K*(K+1))``; for multi-label rows the per-label
        counts of :func:`label_counts`, shape ``(n, 3K+1)``."""
        import numpy as np

        if is_multilabel(references):
            return label_counts(predictions, references, kwargs.get("labels"))[1]
        names, cells = confusion(predictions, references, kwargs.get("labels"))
        k = len(names)
        out = np.zeros((len(cells), k * (k + 1)))
        out[np.arange(len(cells)), cells] = 1.0
        return out

    def compute(self, predictions: Sequence[Any], references: Sequence[Any],
                rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> float | None:
        """The metric over the given rows."""
        stats = self.statistics(predictions, references, rows, **kwargs)
        value = float(self.from_statistics(stats.sum(axis=0)))
        return None if value != value else value


class MacroF1(_ConfusionMetric):
    """Unweighted mean of the per-class F1 over the whole label set."""

    name = "macro_f1"

    def from_statistics(self, totals: Any) -> Any:
        """Mean F1 over classes."""
        return per_class(totals)["f1"].mean(axis=-1)


class WeightedF1(_ConfusionMetric):
    """Per-class F1 averaged with the classes' support as weights."""

    name = "weighted_f1"

    def from_statistics(self, totals: Any) -> Any:
        """``sum(f1 * support) / sum(support)`` (NaN without rows)."""
        import numpy as np

        pc = per_class(totals)
        total = pc["support"].sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, (pc["f1"] * pc["support"]).sum(axis=-1) / np.where(total > 0, total, 1), np.nan)


class MicroF1(_ConfusionMetric):
    """F1 of the true positives, false positives and false negatives summed over the labels (for
    single-label rows whose predictions are all in the label set, this is the accuracy)."""

    name = "micro_f1"

    def from_statistics(self, totals: Any) -> Any:
        """``2 TP / (2 TP + FP + FN)`` over all labels (0 without any)."""
        c = counts(totals)
        tp, fp, fn = (c[key].sum(axis=-1) for key in ("tp", "fp", "fn"))
        return _ratio(2 * tp, 2 * tp + fp + fn)


class HammingLoss(_ConfusionMetric):
    """Share of wrong (row, label) decisions: multi-label, ``(FP + FN) / (n K)``; single-label,
    the share of wrong rows (scikit-learn's ``hamming_loss``). Lower is better."""

    name = "hamming_loss"
    higher_is_better = False

    def from_statistics(self, totals: Any) -> Any:
        """Wrong decisions over all decisions (NaN without rows)."""
        import numpy as np

        c = counts(totals)
        if c["multi_label"]:
            wrong, total = (c["fp"] + c["fn"]).sum(axis=-1), c["n"] * c["tp"].shape[-1]
        else:
            wrong, total = c["n"] - c["tp"].sum(axis=-1), c["n"]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, wrong / np.where(total > 0, total, 1), np.nan)


def _same(prediction: Any, reference: Any) -> bool:
    if isinstance(reference, (list, tuple)):
        if not isinstance(prediction, (list, tuple)):
            return False
        return {str(x) for x in prediction} == {str(x) for x in reference}
    return str(prediction) == str(reference)


class Accuracy(MeanMetric):
    """Share of rows whose predicted label equals the reference label (multi-label rows: whose
    predicted label set equals the reference set, i.e. subset accuracy)."""

    name = "accuracy"
    tasks = ("classification",)

    def per_example(self, prediction: Any, reference: Any, row: Mapping[str, Any],
                    scores: Mapping[str, Any], **kwargs: Any) -> float:
        """1.0 when correct, else 0.0."""
        return float(_same(prediction, reference))


class SubsetAccuracy(Accuracy):
    """Share of rows whose predicted label set equals the reference set exactly (multi-label
    exact match; for single-label rows, the accuracy)."""

    name = "subset_accuracy"


class PerClass(Metric):
    """Precision, recall, F1 and support of every label (non-scalar: goes to ``details``)."""

    name = "per_class"
    tasks = ("classification",)

    def compute(self, predictions: Sequence[Any], references: Sequence[Any],
                rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> dict[str, Any]:
        """``{label: {"precision", "recall", "f1", "support"}}`` in label order."""
        names, totals = _totals(predictions, references, kwargs.get("labels"))
        pc = per_class(totals)
        return {name: {"precision": float(pc["precision"][i]), "recall": float(pc["recall"][i]),
                       "f1": float(pc["f1"][i]), "support": int(pc["support"][i])} for i, name in enumerate(names)}


class ConfusionMatrix(Metric):
    """Counts of (true label, predicted label); rows are true labels. Also written as a PNG."""

    name = "confusion_matrix"
    tasks = ("classification",)

    def compute(self, predictions: Sequence[Any], references: Sequence[Any],
                rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> dict[str, Any]:
        """``{"labels", "columns", "matrix"}``; predictions outside the label set add a last
        ``<other>`` column. Multi-label rows: one row per label with the columns ``tp, fp, fn,
        tn`` (scikit-learn's ``multilabel_confusion_matrix``, flattened) and ``multi_label: true``."""
        names, totals = _totals(predictions, references, kwargs.get("labels"))
        c = counts(totals)
        if c["multi_label"]:
            tp, fp, fn = (c[key].astype(int) for key in ("tp", "fp", "fn"))
            tn = int(c["n"]) - tp - fp - fn
            return {"labels": names, "columns": list(MULTILABEL_COLUMNS), "multi_label": True,
                    "matrix": [[int(a), int(b), int(d), int(e)] for a, b, d, e in zip(tp, fp, fn, tn)]}
        k = len(names)
        conf = totals.reshape(k, k + 1).astype(int)
        columns = names + [OTHER] if conf[:, k].any() else list(names)
        return {"labels": names, "columns": columns, "matrix": conf[:, :len(columns)].tolist()}

    def write_artifacts(self, details: Mapping[str, Any], out_dir: Any) -> list[str]:
        """``confusion_matrix.png`` when matplotlib is installed (the ``plots`` extra)."""
        from verifily_metrics.plots import write_confusion_png

        return write_confusion_png(details, out_dir)

    def render_details(self, details: Mapping[str, Any]) -> list[str]:
        """The matrix as a text table (up to ``MAX_TABLE_LABELS`` labels; larger ones are in the PNG)."""
        if not isinstance(details, Mapping) or len(details.get("labels") or ()) > MAX_TABLE_LABELS:
            return []
        rows = [str(x) for x in details["labels"]]
        cols = [str(x) for x in details.get("columns") or details["labels"]]
        cells = [[str(c) for c in row] for row in details["matrix"]]
        w = max([len(x) for x in rows + cols] + [len(c) for row in cells for c in row])
        title = ("Per-label counts (rows: labels; true/false positives and negatives):" if details.get("multi_label")
                 else "Confusion matrix (rows: true, columns: predicted):")
        lines = ["", f"  {title}",
                 "    " + " " * w + "".join(f"  {c:>{w}}" for c in cols)]
        for name, row in zip(rows, cells):
            lines.append(f"    {name:<{w}}" + "".join(f"  {c:>{w}}" for c in row))
        return lines


REPORT_FILE = "classification_report.json"


class ClassificationReport(Metric):
    """scikit-learn style report: per-label scores, accuracy, macro and weighted averages."""

    name = "classification_report"
    tasks = ("classification",)

    def compute(self, predictions: Sequence[Any], references: Sequence[Any],
                rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> dict[str, Any]:
        """Keys as in ``sklearn.metrics.classification_report(output_dict=True, zero_division=0)``;
        multi-label rows get ``micro avg`` in place of ``accuracy`` and ``samples avg`` (each row's
        precision, recall and F1 of its label set, averaged over rows), as scikit-learn's
        multi-label report."""
        names, totals = _totals(predictions, references, kwargs.get("labels"))
        pc = per_class(totals)
        support = pc["support"]
        total = float(support.sum())
        report: dict[str, Any] = {
            name: {"precision": float(pc["precision"][i]), "recall": float(pc["recall"][i]),
                   "f1-score": float(pc["f1"][i]), "support": int(support[i])}
            for i, name in enumerate(names)
        }
        k = len(names)
        c = counts(totals)
        if c["multi_label"]:
            tp, fp, fn = (float(c[key].sum()) for key in ("tp", "fp", "fn"))
            report["micro avg"] = {"precision": tp / (tp + fp) if tp + fp else 0.0,
                                   "recall": tp / (tp + fn) if tp + fn else 0.0,
                                   "f1-score": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
                                   "support": int(total)}
        else:
            report["accuracy"] = float(totals.reshape(k, k + 1)[:, :k].trace() / total) if total else 0.0
        for avg, weights in (("macro avg", None), ("weighted avg", support)):
            report[avg] = {key: float(_average(pc[src], weights))
                           for key, src in (("precision", "precision"), ("recall", "recall"), ("f1-score", "f1"))}
            report[avg]["support"] = int(total)
        if c["multi_label"]:
            report["samples avg"] = {**_samples_average(label_counts(predictions, references, names)[1], k),
                                     "support": int(total)}
        return report

    def write_artifacts(self, details: Mapping[str, Any], out_dir: Any) -> list[str]:
        """``classification_report.json``: the report as its own file (trackers log it as is)."""
        import json
        from pathlib import Path

        from verifily_core.files import write_text

        write_text(Path(out_dir) / REPORT_FILE, json.dumps(details, indent=2, sort_keys=False) + "\n")
        return [REPORT_FILE]


def _average(values: Any, weights: Any) -> float:
    import numpy as np

    if weights is None:
        return float(np.mean(values)) if len(values) else 0.0
    return float(np.average(values, weights=weights)) if weights.sum() > 0 else 0.0


def _samples_average(rows: Any, k: int) -> dict[str, float]:
    """Precision, recall and F1 of each row's label set (0 where undefined), averaged over the
    rows of :func:`label_counts` ``rows``."""
    import numpy as np

    tp, fp, fn = (rows[:, 1 + i * k:1 + (i + 1) * k].sum(axis=1) for i in range(3))

    def mean_ratio(num: Any, den: Any) -> float:
        return float(np.where(den > 0, num / np.where(den > 0, den, 1), 0.0).mean()) if len(rows) else 0.0

    return {"precision": mean_ratio(tp, tp + fp), "recall": mean_ratio(tp, tp + fn),
            "f1-score": mean_ratio(2 * tp, 2 * tp + fp + fn)}


def _totals(predictions: Sequence[Any], references: Sequence[Any], labels: Any) -> tuple[list[str], Any]:
    import numpy as np

    if is_multilabel(references):
        names, stats = label_counts(predictions, references, labels)
        return names, stats.sum(axis=0)
    names, cells = confusion(predictions, references, labels)
    k = len(names)
    return names, np.bincount(np.asarray(cells, dtype=int), minlength=k * (k + 1)).astype(float)
