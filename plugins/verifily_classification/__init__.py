"""Built-in task plugin ``classification``: text (or text pair) to label."""

from __future__ import annotations

from typing import Any, Mapping

from verifily_core import hookimpl
from verifily_core.interfaces import Task


class ClassificationTask(Task):
    """Rows ``{"text", "text_pair"?, "label", "tags"?}``; labels are strings or integers."""

    name = "classification"
    required_fields = ("text", "label")
    reference_field = "label"
    optional_fields = ("text_pair",)
    default_metrics = ("accuracy", "macro_f1")

    def validate_row(self, row: Mapping[str, Any]) -> str | None:
        """Like the default, but ``label`` may be a string or an integer."""
        label = row.get("label")
        if "label" in row and (isinstance(label, bool) or not isinstance(label, (str, int))):
            return "field 'label' must be a string or an integer"
        if isinstance(label, str) and not label.strip():
            return "field 'label' must not be empty"
        probe = dict(row)
        if "label" in probe:
            probe["label"] = str(label)
        return super().validate_row(probe)


@hookimpl
def verifily_register_tasks(registry: Any) -> None:
    """Register the ``classification`` task."""
    registry.add(ClassificationTask())
