"""An example third-party plugin: the ``response_length`` metric and the ``first_letter`` slicer."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from verifily_core import hookimpl
from verifily_core.interfaces import Metric, Slicer


class ResponseLength(Metric):
    """Mean length of the predictions in characters (any task)."""

    name = "response_length"
    higher_is_better = False

    def compute(self, predictions: Sequence[Any], references: Sequence[Any],
                rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> float:
        """Mean ``len(str(prediction))``; 0.0 for no examples."""
        if not predictions:
            return 0.0
        return sum(len(str(p)) for p in predictions) / len(predictions)


class FirstLetter(Slicer):
    """Slices rows by the first letter of a tag value: ``source^=h``."""

    name = "first_letter"

    def slices(self, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, list[int]]:
        """One slice per (key, first letter of the value)."""
        out: dict[str, list[int]] = {}
        for key in keys:
            for i, row in enumerate(rows):
                value = str((row.get("tags") or {}).get(key, "?"))
                out.setdefault(f"{key}^={value[:1]}", []).append(i)
        return out


@hookimpl
def verifily_register_metrics(registry: Any) -> None:
    """Register ``response_length``."""
    registry.add(ResponseLength())


@hookimpl
def verifily_register_slicers(registry: Any) -> None:
    """Register ``first_letter``."""
    registry.add(FirstLetter())
