"""Built-in task plugin ``sft``: supervised fine-tuning on instruction/input/output rows."""

from __future__ import annotations

from typing import Any

from verifily_core import hookimpl
from verifily_core.interfaces import Task


class SFTTask(Task):
    """Rows ``{"instruction", "input"?, "output", "tags"?}``; the model learns to write ``output``."""

    name = "sft"
    required_fields = ("instruction", "output")
    reference_field = "output"
    optional_fields = ("input",)
    default_metrics = ("loss", "perplexity")


@hookimpl
def verifily_register_tasks(registry: Any) -> None:
    """Register the ``sft`` task."""
    registry.add(SFTTask())
