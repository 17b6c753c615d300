"""Teacher-forced language-model metrics from the model's per-example scores.

The model side stores, per test row, ``scores["loss"]`` (the mean negative log-likelihood of
the reference tokens under teacher forcing) and ``scores["n_tokens"]`` (how many reference
tokens it averaged over). Both metrics are token-weighted over the whole set:

* ``loss = sum(loss_i * n_tokens_i) / sum(n_tokens_i)`` (the mean NLL per reference token);
* ``perplexity = exp(loss)``.

Without ``n_tokens`` each row weighs 1 (a plain mean of the per-row losses).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from verifily_core.interfaces import Metric
from verifily_metrics.base import score_of


class Loss(Metric):
    """Token-weighted mean teacher-forced loss on the references (lower is better)."""

    name = "loss"
    tasks = ("sft",)
    higher_is_better = False
    reads = frozenset({"loss", "n_tokens"})

    def per_example(self, prediction: Any, reference: Any, row: Mapping[str, Any],
                    scores: Mapping[str, Any], **kwargs: Any) -> float:
        """The row's own loss, ``scores["loss"]``."""
        return score_of(scores, "loss", self.name)

    def statistics(self, predictions: Sequence[Any], references: Sequence[Any],
                   rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> Any:
        """Columns ``loss_i * n_tokens_i`` and ``n_tokens_i``."""
        import numpy as np

        pairs = [_loss_and_weight(s, self.name) for s in kwargs.get("scores") or [{}] * len(predictions)]
        return np.array([[loss * w, w] for loss, w in pairs], dtype=float).reshape(len(pairs), 2)

    def from_statistics(self, totals: Any) -> Any:
        """``sum(loss * n) / sum(n)`` (NaN without tokens)."""
        import numpy as np

        totals = np.asarray(totals, dtype=float)
        tokens = totals[..., 1]
        return np.where(tokens > 0, totals[..., 0] / np.where(tokens > 0, tokens, 1), np.nan)

    def compute(self, predictions: Sequence[Any], references: Sequence[Any],
                rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> float | None:
        """Token-weighted mean loss over the given rows (``None`` for no tokens)."""
        pairs = [_loss_and_weight(s, self.name) for s in kwargs.get("scores") or [{}] * len(predictions)]
        weight = math.fsum(w for _, w in pairs)
        return math.fsum(loss * w for loss, w in pairs) / weight if weight > 0 else None


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


def _loss_and_weight(scores: Mapping[str, Any], metric: str) -> tuple[float, float]:
    loss = score_of(scores, "loss", metric)
    weight = float(scores.get("n_tokens", 1.0) if scores.get("n_tokens") is not None else 1.0)
    return loss, weight


class TokenAccuracy(Metric):
    """Share of reference tokens that are the model's top choice given the reference before them
    (teacher forcing; from the model's per-example ``n_correct`` and ``n_tokens``)."""

    name = "token_accuracy"
    tasks = ("sft",)
    reads = frozenset({"n_correct", "n_tokens"})

    def per_example(self, prediction: Any, reference: Any, row: Mapping[str, Any],
                    scores: Mapping[str, Any], **kwargs: Any) -> float | None:
        """The row's own share of right tokens (``None`` without reference tokens)."""
        right, n = _right_and_total(scores, self.name)
        return right / n if n else None

    def statistics(self, predictions: Sequence[Any], references: Sequence[Any],
                   rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> Any:
        """Columns ``n_correct_i`` and ``n_tokens_i``."""
        import numpy as np

        pairs = [_right_and_total(s, self.name) for s in kwargs.get("scores") or [{}] * len(predictions)]
        return np.array(pairs, dtype=float).reshape(len(pairs), 2)

    def from_statistics(self, totals: Any) -> Any:
        """``sum(n_correct) / sum(n_tokens)`` (NaN without tokens)."""
        import numpy as np

        totals = np.asarray(totals, dtype=float)
        tokens = totals[..., 1]
        return np.where(tokens > 0, totals[..., 0] / np.where(tokens > 0, tokens, 1), np.nan)

    def compute(self, predictions: Sequence[Any], references: Sequence[Any],
                rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> float | None:
        """Token-weighted share of right tokens over the given rows (``None`` for no tokens)."""
        pairs = [_right_and_total(s, self.name) for s in kwargs.get("scores") or [{}] * len(predictions)]
        total = sum(n for _, n in pairs)
        return sum(r for r, _ in pairs) / total if total else None


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

