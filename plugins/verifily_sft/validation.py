"""Metrics of the val split at every evaluation during training, from the teacher-forced pass
the Trainer already makes for the loss: each position's top-choice token is kept (not the
logits), and the task's validation metrics (``token_accuracy``, ``sequence_accuracy``) are
computed from the per-row counts of right reference tokens, as ``verifily eval`` computes them.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

def top_choices(logits: Any, labels: Any) -> Any:
    """``preprocess_logits_for_metrics``: the top-choice token id at each position."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(-1)


def metrics_function(metrics: Mapping[str, Any], model_kind: str) -> Any:
    """``compute_metrics`` for the Trainer: ``{name: value}`` of ``metrics`` on the val split."""
    def compute(prediction: Any) -> dict[str, float]:
        ids = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        labels = prediction.label_ids
        if model_kind != "seq2seq":  # position t predicts token t + 1
            ids, labels = ids[:, :-1], labels[:, 1:]
        mask = labels != -100
        right, total = ((ids == labels) & mask).sum(axis=1), mask.sum(axis=1)
        scores = [{"n_correct": int(r), "n_tokens": int(n)} for r, n in zip(right, total)]
        n = len(scores)
        out = {}
        for name, metric in metrics.items():
            value = metric.compute([None] * n, [None] * n, [{}] * n, task="sft", scores=scores)
            out[name] = math.nan if value is None else float(value)
        return out

    return compute
