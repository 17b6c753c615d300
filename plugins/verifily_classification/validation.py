"""Which metrics score the val split at each evaluation during training
(``training.validation_metrics``) and keep the best checkpoint (``training.metric_for_best_model``)."""

from __future__ import annotations

from typing import Any, Mapping

from verifily_core.errors import ConfigError

LOSS_NAMES = (None, "", "loss", "eval_loss")


def best_model_metrics(name: str | None, registries: Any) -> tuple[dict[str, Any], bool | None]:
    """``({metric_name: metric}, higher_is_better)`` for a metric plugin name (``eval_`` prefix
    allowed), or ``({}, None)`` for the validation loss (the Trainer's default).

    :raises ConfigError: the name is not an installed scalar metric for classification.
    """
    if name in LOSS_NAMES:
        return {}, None
    key = name[len("eval_"):] if name.startswith("eval_") else name
    metric = registries.metrics.get(key) if key in registries.metrics else None
    if metric is None or not _scalar_for_classification(metric):
        choices = sorted(n for n in registries.metrics.names() if _scalar_for_classification(registries.metrics.get(n)))
        raise ConfigError(f"$.training.metric_for_best_model: '{name}' is not a scalar classification metric; "
                          f"use loss or one of {', '.join(choices)}")
    return {key: metric}, bool(metric.higher_is_better)


def _scalar_for_classification(metric: Any) -> bool:
    if metric.tasks and "classification" not in metric.tasks:
        return False
    try:
        value = metric.compute(["a"], ["a"], [{}], task="classification", scores=[{}], labels=["a", "b"])
    except Exception:  # a metric that needs other inputs (scores, gold rows) cannot score the val split
        return False
    return not isinstance(value, Mapping)


def validation_metrics(names: Any, best: str | None, registries: Any) -> tuple[dict[str, Any], bool | None]:
    """``({metric_name: metric}, higher_is_better of the best-model metric)``: the scalar
    classification metrics ``names`` plus the one of ``training.metric_for_best_model``.

    :raises ConfigError: a name that is not an installed scalar classification metric.
    """
    chosen, higher = best_model_metrics(best, registries)
    metrics: dict[str, Any] = {}
    for i, name in enumerate(names or ()):
        metric = registries.metrics.get(name) if name in registries.metrics else None
        if metric is None or not _scalar_for_classification(metric):
            raise ConfigError(f"$.training.validation_metrics[{i}]: '{name}' is not a scalar classification metric")
        metrics[name] = metric
    return {**metrics, **chosen}, higher
