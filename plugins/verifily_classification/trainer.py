"""Training pieces: class weights, the cross-entropy Trainer and validation metrics for picking
the best checkpoint (imports torch and transformers)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from transformers import Trainer

from verifily_classification.labels import LabelSet
from verifily_classification.weights import class_weights

__all__ = ["class_weights", "trainer_class", "metrics_function", "label_token_trainer_class"]


def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, weights: Sequence[float] | None) -> torch.Tensor:
    """Cross-entropy, class-weighted when ``weights`` is given: ``sum_i w[y_i] * nll_i / sum_i w[y_i]``."""
    w = None if weights is None else torch.tensor(list(weights), dtype=torch.float32, device=logits.device)
    return torch.nn.functional.cross_entropy(logits.float(), labels.to(logits.device), weight=w)


def multilabel_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of a sigmoid per label, averaged over rows and labels."""
    return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.to(logits.device).float())


def metrics_function(labels: LabelSet, metrics: Mapping[str, Any]) -> Any:
    """``compute_metrics`` for the Trainer: the given metric plugins on the val split's argmax
    predictions (multi-label: the label sets over ``labels.threshold``)."""
    import numpy as np

    names = labels.names()

    def compute(prediction: Any) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        if labels.multi_label:
            probs = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
            predicted: list[Any] = [[names[k] for k in np.flatnonzero(row >= labels.threshold)] for row in probs]
            gold: list[Any] = [[names[k] for k in np.flatnonzero(row > 0.5)] for row in prediction.label_ids]
        else:
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
                  greater_is_better: bool | None = None, multi_label: bool = False) -> type:
    """A ``Trainer`` whose loss is (class-weighted) cross-entropy on the logits (``multi_label``:
    binary cross-entropy of a sigmoid per label) and which scores the val split with
    ``compute_metrics`` (for ``training.metric_for_best_model``)."""

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
            if multi_label:
                loss = multilabel_loss(outputs.logits, labels)
            else:
                loss = weighted_loss(outputs.logits, labels, weights)
            return (loss, outputs) if return_outputs else loss

    return ClassificationTrainer


def label_token_trainer_class(weights: Sequence[float] | None, token_ids: list[list[int]], pad_id: int,
                              compute_metrics: Any = None, greater_is_better: bool | None = None) -> type:
    """A ``Trainer`` for the label-token formulation: the loss is each row's negative log-likelihood
    of its label's tokens (summed over them; class-weighted like the head's cross-entropy), and
    the val split is scored by the log-probabilities of every label's tokens, so
    ``compute_metrics`` sees ``(B, K)`` label scores as with a head."""
    from verifily_classification.labeltokens import label_logprobs, row_nll

    base = trainer_class(weights, compute_metrics, greater_is_better)

    class LabelTokenTrainer(base):  # type: ignore[misc, valid-type]
        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            inputs = dict(inputs)
            y = inputs.pop("label_id")
            inputs.pop("prompt_len", None)
            labels = inputs.pop("labels")
            outputs = model(**inputs, use_cache=False)
            nll = row_nll(outputs.logits, labels)
            if weights is None:
                loss = nll.mean()
            else:
                w = torch.tensor(list(weights), dtype=nll.dtype, device=nll.device)[y.to(nll.device)]
                loss = (w * nll).sum() / w.sum()
            return (loss, outputs) if return_outputs else loss

        def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                            ignore_keys: Any = None) -> Any:
            inputs = self._prepare_inputs(inputs)
            with torch.no_grad():
                loss = self.compute_loss(model, inputs).detach()
                if prediction_loss_only:
                    return loss, None, None
                ids, lens = inputs["input_ids"].tolist(), inputs["prompt_len"].tolist()
                scores = label_logprobs(model, [row[:n] for row, n in zip(ids, lens)], token_ids, pad_id,
                                        inputs["input_ids"].device)
            return loss, scores.to(inputs["input_ids"].device), inputs["label_id"]

    return LabelTokenTrainer
