"""Preference metrics from the per-example implicit rewards of the ``dpo`` task.

Each prediction's ``scores`` hold ``reward_margin``: the chosen response's reward minus the
rejected one's, where a reward is ``beta * (logp_policy - logp_reference)``.

* ``reward_accuracy``: the share of pairs with ``reward_margin > 0`` (the trained model moved
  towards the chosen response more than towards the rejected one; a tie counts as wrong);
* ``reward_margin``: the mean margin.

Both are means of per-example values, so their bootstrap intervals are fast.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from verifily_core.errors import EvalError
from verifily_core.interfaces import Metric


def margin_of(scores: Mapping[str, Any], metric: str) -> float:
    """``scores["reward_margin"]`` as a float, or an EvalError naming what the metric needs."""
    value = scores.get("reward_margin")
    if value is None:
        raise EvalError(f"metric '{metric}' needs the per-example score 'reward_margin' of the dpo task, "
                        f"but a prediction has none (scores: {sorted(scores) or 'empty'})")
    return float(value)


class _PairMean(Metric):
    """The mean of :meth:`per_example` over the pairs."""

    tasks = ("dpo",)
    reads = frozenset({"reward_margin"})

    def compute(self, predictions: Sequence[Any], references: Sequence[Any],
                rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> float | None:
        """Mean of the per-pair values; ``None`` without pairs."""
        scores = kwargs.get("scores") or [{}] * len(predictions)
        values = [self.per_example(p, r, {}, s) for p, r, s in zip(predictions, references, scores)]
        return math.fsum(values) / len(values) if values else None


class RewardAccuracy(_PairMean):
    """Share of pairs whose chosen response gets the higher reward."""

    name = "reward_accuracy"

    def per_example(self, prediction: Any, reference: Any, row: Mapping[str, Any],
                    scores: Mapping[str, Any], **kwargs: Any) -> float:
        """1.0 when ``reward_margin > 0``, else 0.0."""
        return 1.0 if margin_of(scores, self.name) > 0 else 0.0


class RewardMargin(_PairMean):
    """Mean of chosen reward minus rejected reward."""

    name = "reward_margin"

    def per_example(self, prediction: Any, reference: Any, row: Mapping[str, Any],
                    scores: Mapping[str, Any], **kwargs: Any) -> float:
        """The pair's ``reward_margin``."""
        return margin_of(scores, self.name)
