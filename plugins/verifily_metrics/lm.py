"""Teacher-forced language-model metrics from the model's per-example scores.

The model side stores, per test row, ``scores["loss"]`` (the mean negative log-likelihood of
the reference tokens under teacher forcing), ``scores["n_tokens"]`` (how many reference
tokens it averaged over) and ``scores["n_correct"]`` (how many of them were its top choice).
The metrics are token-weighted over the whole set:

* ``loss = sum(loss_i * n_tokens_i) / sum(n_tokens_i)`` (the mean NLL per reference token);
* ``perplexity = exp(loss)``;
* ``token_accuracy = sum(n_correct_i) / sum(n_tokens_i)``;
* ``sequence_accuracy``: the share of rows with ``n_correct_i == n_tokens_i``.

Without ``n_tokens`` each row weighs 1 in the loss (a plain mean of the per-row losses).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from verifily_core.interfaces import Metric
from verifily_metrics.base import score_of


class _TokenWeighted(Metric):
    """A ratio of sums over rows, ``sum(part_i) / sum(weight_i)``, from each row's scores."""

    def part_and_weight(self, scores: Mapping[str, Any]) -> tuple[float, float]:
        """``(part, weight)`` of one row."""
        raise NotImplementedError

    def statistics(self, predictions: Sequence[Any], references: Sequence[Any],
                   rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> Any:
        """Columns ``part_i`` and ``weight_i``."""
        import numpy as np

        pairs = [self.part_and_weight(s) for s in kwargs.get("scores") or [{}] * len(predictions)]
        return np.array(pairs, dtype=float).reshape(len(pairs), 2)

    def from_statistics(self, totals: Any) -> Any:
        """``sum(part) / sum(weight)`` (NaN without weight)."""
        import numpy as np

        totals = np.asarray(totals, dtype=float)
        weight = totals[..., 1]
        return np.where(weight > 0, totals[..., 0] / np.where(weight > 0, weight, 1), np.nan)

    def compute(self, predictions: Sequence[Any], references: Sequence[Any],
                rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> float | None:
        """``sum(part) / sum(weight)`` over the given rows (``None`` without weight)."""
        pairs = [self.part_and_weight(s) for s in kwargs.get("scores") or [{}] * len(predictions)]
        weight = math.fsum(w for _, w in pairs)
        return math.fsum(part for part, _ in pairs) / weight if weight > 0 else None


class Loss(_TokenWeighted):
    """Token-weighted mean teacher-forced loss on the references (lower is better)."""

    name = "loss"
    tasks = ("sft",)
    higher_is_better = False
    reads = frozenset({"loss", "n_tokens"})

    def per_example(self, prediction: Any, reference: Any, row: Mapping[str, Any],
                    scores: Mapping[str, Any], **kwargs: Any) -> float:
        """The row's own loss, ``scores["loss"]``."""
        return score_of(scores, "loss", self.name)

    def part_and_weight(self, scores: Mapping[str, Any]) -> tuple[float, float]:
        """``(loss * n_tokens, n_tokens)``; a row without ``n_tokens`` weighs 1."""
        loss = score_of(scores, "loss", self.name)
        weight = float(scores["n_tokens"]) if scores.get("n_tokens") is not None else 1.0
        return loss * weight, weight


class Perplexity(Loss):
    """``exp`` of the token-weighted mean loss (lower is better)."""

    name = "perplexity"

    per_example = Metric.per_example  # a per-row perplexity is not averaged into the metric

    def from_statistics(self, totals: Any) -> Any:
        """``exp(sum(loss * n) / sum(n))``."""
        import numpy as np

        with np.errstate(over="ignore"):
            return np.exp(super().from_statistics(totals))

    def compute(self, predictions: Sequence[Any], references: Sequence[Any],
                rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> float | None:
        """``exp(loss)``; ``inf`` when the loss is too large to exponentiate."""
        loss = super().compute(predictions, references, rows, **kwargs)
        if loss is None:
            return None
        try:
            return math.exp(loss)
        except OverflowError:
            return math.inf


class TokenAccuracy(_TokenWeighted):
    """Share of reference tokens that are the model's top choice given the reference before them
    (teacher forcing; from the model's per-example ``n_correct`` and ``n_tokens``)."""

    name = "token_accuracy"
    tasks = ("sft",)
    reads = frozenset({"n_correct", "n_tokens"})

    def per_example(self, prediction: Any, reference: Any, row: Mapping[str, Any],
                    scores: Mapping[str, Any], **kwargs: Any) -> float | None:
        """The row's own share of right tokens (``None`` without reference tokens)."""
        right, n = self.part_and_weight(scores)
        return right / n if n else None

    def part_and_weight(self, scores: Mapping[str, Any]) -> tuple[float, float]:
        """``(n_correct, n_tokens)``."""
        return _right_and_total(scores, self.name)


class SequenceAccuracy(Metric):
    """Share of rows whose every reference token (end of sequence included) is the model's top
    choice given the reference before it: greedy decoding would write the reference token for
    token. Computed from one teacher-forced pass, without generating."""

    name = "sequence_accuracy"
    tasks = ("sft",)
    reads = frozenset({"n_correct", "n_tokens"})

    def per_example(self, prediction: Any, reference: Any, row: Mapping[str, Any],
                    scores: Mapping[str, Any], **kwargs: Any) -> float | None:
        """1.0 when every reference token is right, else 0.0 (``None`` without reference tokens)."""
        right, n = _right_and_total(scores, self.name)
        return float(right == n) if n else None

    def compute(self, predictions: Sequence[Any], references: Sequence[Any],
                rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> float | None:
        """Mean of the per-row values that count."""
        scores = kwargs.get("scores") or [{}] * len(predictions)
        values = [v for s in scores if (v := self.per_example(None, None, {}, s)) is not None]
        return math.fsum(values) / len(values) if values else None


def _right_and_total(scores: Mapping[str, Any], metric: str) -> tuple[float, float]:
    return score_of(scores, "n_correct", metric), score_of(scores, "n_tokens", metric)
