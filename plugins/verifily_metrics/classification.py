"""Classification metrics from one confusion matrix: accuracy, macro/weighted F1, per-class
scores, the confusion matrix itself and a classification report.

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


def label_set(predictions: Sequence[Any], references: Sequence[Any], labels: Any = None) -> list[str]:
    """The label set as strings: ``labels`` (a list, or an ``{id: label}`` mapping) or the sorted union."""
    if isinstance(labels, Mapping):
        labels = [labels[k] for k in sorted(labels, key=int)]
    if labels:
        return [str(label) for label in labels]
    found = {str(x) for x in (*references, *predictions)}
    return sorted(found, key=lambda s: (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s))


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


def per_class(totals: Any) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support from confusion counts of shape ``(..., K*(K+1))``.

    A ratio with a zero denominator is 0 (scikit-learn's ``zero_division=0``).
    """
    import numpy as np

    totals = np.asarray(totals, dtype=float)
    k = _k_of(totals.shape[-1])
    conf = totals.reshape(*totals.shape[:-1], k, k + 1)
    tp = np.diagonal(conf[..., :k], axis1=-2, axis2=-1)
    support = conf.sum(axis=-1)
    predicted = conf[..., :k].sum(axis=-2)
    return {"precision": _ratio(tp, predicted), "recall": _ratio(tp, support),
            "f1": _ratio(2 * tp, support + predicted), "support": support}


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
        """One-hot confusion cells, shape ``(n, K*(K+1))``."""
        import numpy as np

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


class Accuracy(MeanMetric):
    """Share of rows whose predicted label equals the reference label."""

    name = "accuracy"
    tasks = ("classification",)

    def per_example(self, prediction: Any, reference: Any, row: Mapping[str, Any],
                    scores: Mapping[str, Any], **kwargs: Any) -> float:
        """1.0 when correct, else 0.0."""
        return float(str(prediction) == str(reference))


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
        """``{"labels", "matrix"}``; predictions outside the label set add a last ``<other>`` column."""
        names, totals = _totals(predictions, references, kwargs.get("labels"))
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
        lines = ["", "  Confusion matrix (rows: true, columns: predicted):",
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
        """Keys as in ``sklearn.metrics.classification_report(output_dict=True)``."""
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
        report["accuracy"] = float(totals.reshape(k, k + 1)[:, :k].trace() / total) if total else 0.0
        for avg, weights in (("macro avg", None), ("weighted avg", support)):
            report[avg] = {key: float(_average(pc[src], weights))
                           for key, src in (("precision", "precision"), ("recall", "recall"), ("f1-score", "f1"))}
            report[avg]["support"] = int(total)
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


def _totals(predictions: Sequence[Any], references: Sequence[Any], labels: Any) -> tuple[list[str], Any]:
    import numpy as np

    names, cells = confusion(predictions, references, labels)
    k = len(names)
    return names, np.bincount(np.asarray(cells, dtype=int), minlength=k * (k + 1)).astype(float)
