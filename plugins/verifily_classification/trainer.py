"""Training pieces: class weights, the cross-entropy Trainer and validation metrics for picking
the best checkpoint (imports torch and transformers)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from transformers import Trainer

from verifily_classification.labels import LabelSet
from verifily_classification.weights import class_weights

__all__ = ["class_weights", "trainer_class", "metrics_function"]


def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, weights: Sequence[float] | None) -> torch.Tensor:
    """Cross-entropy, class-weighted when ``weights`` is given: ``sum_i w[y_i] * nll_i / sum_i w[y_i]``."""
    w = None if weights is None else torch.tensor(list(weights), dtype=torch.float32, device=logits.device)
    return torch.nn.functional.cross_entropy(logits.float(), labels.to(logits.device), weight=w)


def metrics_function(labels: LabelSet, metrics: Mapping[str, Any]) -> Any:
    """``compute_metrics`` for the Trainer: the given metric plugins on the val split's argmax predictions."""
    names = labels.names()

    def compute(prediction: Any) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted = [names[int(i)] for i in logits.argmax(axis=-1)]
        gold = [names[int(i)] for i in prediction.label_ids]
        n = len(gold)
        out = {}
        for name, metric in metrics.items():
            value = metric.compute(predicted, gold, [{}] * n, task="classification", scores=[{}] * n, labels=names)
            out[name] = float("nan") if value is None else float(value)
        return out

    return compute


def trainer_class(weights: Sequence[float] | None, compute_metrics: Any = None,
                  greater_is_better: bool | None = None) -> type:
    """A ``Trainer`` whose loss is (class-weighted) cross-entropy on the logits and which scores the
    val split with ``compute_metrics`` (for ``training.metric_for_best_model``)."""

    class ClassificationTrainer(Trainer):
        loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if compute_metrics is not None and kwargs.get("compute_metrics") is None:
                kwargs["compute_metrics"] = compute_metrics
            super().__init__(*args, **kwargs)
            if greater_is_better is not None and self.args.metric_for_best_model:
                self.args.greater_is_better = greater_is_better
            self.label_names = ["labels"]

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            inputs = dict(inputs)
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss = weighted_loss(outputs.logits, labels, weights)
            return (loss, outputs) if return_outputs else loss

    return ClassificationTrainer
