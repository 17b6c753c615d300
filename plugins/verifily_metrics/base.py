"""Shared pieces of the built-in metrics: the mean-of-per-example base class and option checks."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from verifily_core.interfaces import Metric


class MeanMetric(Metric):
    """A metric whose value is the mean of :meth:`per_example` over the examples that count.

    ``compute`` is defined through ``per_example``, so the evaluation engine's fast bootstrap
    (which averages per-example values itself) and a direct ``compute`` call always agree.
    """

    def compute(self, predictions: Sequence[Any], references: Sequence[Any],
                rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> float | None:
        """Mean of the per-example values that are not ``None``; ``None`` when none count."""
        scores = kwargs.pop("scores", None) or [{}] * len(predictions)
        rows = rows or [{}] * len(predictions)
        values = [self.per_example(p, r, row, s, **kwargs)
                  for p, r, row, s in zip(predictions, references, rows, scores)]
        kept = [v for v in values if v is not None]
        return math.fsum(kept) / len(kept) if kept else None


def references_of(reference: Any) -> list[str]:
    """A reference as a list of strings (a list or tuple of references means "any of these")."""
    if isinstance(reference, (list, tuple)):
        return [str(r) for r in reference] or [""]
    return ["" if reference is None else str(reference)]


def score_of(scores: Mapping[str, Any], key: str, metric: str) -> float:
    """``scores[key]`` as a float, or an EvalError saying which model score the metric needs."""
    from verifily_core.errors import EvalError

    if key not in scores or scores[key] is None:
        raise EvalError(f"metric '{metric}' needs the per-example score '{key}' from the model, "
                        f"but a prediction has none (scores: {sorted(scores) or 'empty'})")
    return float(scores[key])
