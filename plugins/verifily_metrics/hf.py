"""The built-in metrics as local ``evaluate.Metric`` modules that work offline (no Hub).

Importing this module imports ``evaluate`` (several seconds), so nothing else imports it:
verifily's own evaluation calls the plugin metrics directly. Use it where an
``evaluate``-shaped module is wanted, e.g. in a custom ``compute_metrics``::

    from verifily_metrics.hf import load
    load("token_f1").compute(predictions=["the cat"], references=["cat"])  # {"token_f1": 1.0}

Each module holds its data in memory (``keep_in_memory=True``): no cache files are written.
The classification modules take one label per row (string features), or with
``config_name="multilabel"`` (as ``evaluate``'s own ``f1`` does) a list of labels per row::

    load("micro_f1", config_name="multilabel").compute(predictions=[["a"], ["a", "b"]], references=[["a"], ["b"]])
"""

from __future__ import annotations

from typing import Any, ClassVar

import datasets
import evaluate

from verifily_core.interfaces import Metric
from verifily_metrics.classification import (
    Accuracy, ClassificationReport, ConfusionMatrix, HammingLoss, MacroF1, MicroF1, PerClass, SubsetAccuracy,
    WeightedF1,
)
from verifily_metrics.lm import Loss, Perplexity
from verifily_metrics.text import ExactMatch, FormatCompliance, GoldExactMatch, TokenF1

_CITATION = "Verifily Train built-in metrics (see docs/evaluation.md)."


class _VerifilyModule(evaluate.Metric):
    """An ``evaluate`` module backed by a verifily metric; subclasses name their inputs."""

    metric: ClassVar[Metric]
    inputs: ClassVar[str]
    input_types: ClassVar[dict[str, str]]  # input name -> ``datasets.Value`` dtype

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("keep_in_memory", True)
        super().__init__(**kwargs)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=(type(self.metric).__doc__ or self.metric.name).strip().splitlines()[0],
            citation=_CITATION,
            inputs_description=self.inputs,
            features=datasets.Features({name: self._feature(dtype) for name, dtype in self.input_types.items()}),
        )

    def _feature(self, dtype: str) -> Any:
        """The ``datasets`` feature of one input."""
        return datasets.Value(dtype)


class VerifilyTextMetric(_VerifilyModule):
    """An ``evaluate`` module over string predictions and references, backed by a verifily metric."""

    inputs = "predictions: list of str; references: list of str; metric options as keywords."
    input_types = {"predictions": "string", "references": "string"}

    def _compute(self, predictions: list[str], references: list[str], **kwargs: Any) -> dict[str, Any]:
        rows = [{} for _ in predictions]
        scores = [{} for _ in predictions]
        return {self.metric.name: self.metric.compute(predictions, references, rows, scores=scores, **kwargs)}


class VerifilyLossMetric(_VerifilyModule):
    """An ``evaluate`` module over per-example losses and reference token counts."""

    inputs = "losses: per-example mean NLL of the reference tokens; n_tokens: their counts."
    input_types = {"losses": "float64", "n_tokens": "int64"}

    def _compute(self, losses: list[float], n_tokens: list[int]) -> dict[str, Any]:
        scores = [{"loss": loss, "n_tokens": n} for loss, n in zip(losses, n_tokens)]
        blank = [None] * len(scores)
        return {self.metric.name: self.metric.compute(blank, blank, [{}] * len(scores), scores=scores)}


class ExactMatchModule(VerifilyTextMetric):
    metric = ExactMatch()


class TokenF1Module(VerifilyTextMetric):
    metric = TokenF1()


class GoldExactMatchModule(VerifilyTextMetric):
    metric = GoldExactMatch()


class FormatComplianceModule(VerifilyTextMetric):
    metric = FormatCompliance()


class VerifilyLabelMetric(VerifilyTextMetric):
    """An ``evaluate`` module over predicted and reference labels, backed by a verifily
    classification metric; ``config_name="multilabel"`` takes a list of labels per row."""

    inputs = ("predictions: list of str (with config_name='multilabel': list of lists of str); references: "
              "the same; labels=: the label set, in order; metric options as keywords.")

    def _feature(self, dtype: str) -> Any:
        value = datasets.Value(dtype)
        return datasets.Sequence(value) if self.config_name == "multilabel" else value


class AccuracyModule(VerifilyLabelMetric):
    metric = Accuracy()


class MacroF1Module(VerifilyLabelMetric):
    metric = MacroF1()


class WeightedF1Module(VerifilyLabelMetric):
    metric = WeightedF1()


class PerClassModule(VerifilyLabelMetric):
    metric = PerClass()


class ConfusionMatrixModule(VerifilyLabelMetric):
    metric = ConfusionMatrix()


class ClassificationReportModule(VerifilyLabelMetric):
    metric = ClassificationReport()


class MicroF1Module(VerifilyLabelMetric):
    metric = MicroF1()


class SubsetAccuracyModule(VerifilyLabelMetric):
    metric = SubsetAccuracy()


class HammingLossModule(VerifilyLabelMetric):
    metric = HammingLoss()


class LossModule(VerifilyLossMetric):
    metric = Loss()


class PerplexityModule(VerifilyLossMetric):
    metric = Perplexity()


MODULES: dict[str, type[evaluate.Metric]] = {
    cls.metric.name: cls for cls in (
        ExactMatchModule, TokenF1Module, GoldExactMatchModule, FormatComplianceModule, AccuracyModule,
        MacroF1Module, WeightedF1Module, PerClassModule, ConfusionMatrixModule, ClassificationReportModule,
        MicroF1Module, SubsetAccuracyModule, HammingLossModule, LossModule, PerplexityModule,
    )
}


def load(name: str, **kwargs: Any) -> evaluate.Metric:
    """A fresh local ``evaluate`` module for a built-in metric name (offline; unlike ``evaluate.load``)."""
    try:
        return MODULES[name](**kwargs)
    except KeyError:
        raise KeyError(f"no evaluate module for '{name}'; available: {', '.join(sorted(MODULES))}") from None
