"""Built-in metric plugin ``metrics``.

SFT: ``loss``, ``perplexity``, ``token_accuracy``, ``sequence_accuracy`` (teacher-forced, from
the model's per-example scores),
``exact_match``, ``token_f1`` (SQuAD normalisation), ``format_compliance``, ``gold_exact_match``.
Classification (single- and multi-label): ``accuracy``, ``macro_f1``, ``weighted_f1``,
``micro_f1``, ``subset_accuracy``, ``hamming_loss`` and the non-scalar ``per_class``,
``confusion_matrix`` (JSON and PNG) and ``classification_report``.

The math is pure Python and NumPy (imported when computing). ``verifily_metrics.hf`` offers
the same metrics as local ``evaluate.Metric`` modules; it is imported only on demand.
"""

from __future__ import annotations

from typing import Any

from verifily_core import hookimpl
from verifily_metrics.classification import (
    Accuracy, ClassificationReport, ConfusionMatrix, HammingLoss, MacroF1, MicroF1, PerClass, SubsetAccuracy,
    WeightedF1,
)
from verifily_metrics.lm import Loss, Perplexity, SequenceAccuracy, TokenAccuracy
from verifily_metrics.text import ExactMatch, FormatCompliance, GoldExactMatch, TokenF1

BUILTIN_METRICS = (
    Loss, Perplexity, TokenAccuracy, SequenceAccuracy, ExactMatch, TokenF1, FormatCompliance, GoldExactMatch,
    Accuracy, MacroF1, WeightedF1, MicroF1, SubsetAccuracy, HammingLoss, PerClass, ConfusionMatrix,
    ClassificationReport,
)


@hookimpl
def verifily_register_metrics(registry: Any) -> None:
    """Register the built-in metrics."""
    for cls in BUILTIN_METRICS:
        registry.add(cls())
