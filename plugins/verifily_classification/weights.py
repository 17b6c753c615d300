"""Class weights for imbalanced labels (``task_options.class_weights``; no heavy imports)."""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping

from verifily_core.errors import ConfigError

from verifily_classification.labels import LabelSet


def class_weights(spec: Any, train_rows: Iterable[Mapping[str, Any]], labels: LabelSet) -> list[float] | None:
    """Per-class loss weights in id order, or ``None`` for plain cross-entropy.

    ``none``: ``None``. ``auto``: ``n / (k * n_c)`` for ``n`` training rows, ``k`` classes and
    ``n_c`` rows of class ``c`` (scikit-learn's "balanced"; a class without training rows gets
    1.0). A mapping ``{label: weight}``: those weights, 1.0 for labels it leaves out.

    :raises ConfigError: a mapping names a label outside the label set.
    """
    if spec in (None, "none"):
        return None
    if spec == "auto":
        counts = Counter(str(row["label"]) for row in train_rows)
        n, k = sum(counts.values()), len(labels)
        return [n / (k * counts[name]) if counts[name] else 1.0 for name in labels.names()]
    unknown = [str(label) for label in spec if str(label) not in labels]
    if unknown:
        raise ConfigError(f"$.task_options.class_weights.{unknown[0]}: '{unknown[0]}' is not one of the labels "
                          f"({', '.join(labels.names())})")
    given = {str(label): float(w) for label, w in spec.items()}
    return [given.get(name, 1.0) for name in labels.names()]
