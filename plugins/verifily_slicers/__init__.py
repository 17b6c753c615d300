"""Built-in slicer plugin ``slicers``: ``tag``, ``cross`` and ``length``.

``--slice-by`` syntax (see ``docs/evaluation.md``): ``source`` slices by one tag key,
``source&difficulty`` (or ``source+difficulty``) crosses keys, ``length:reference`` buckets
rows by length; ``NAME:ARG`` picks any installed slicer by name.
"""

from __future__ import annotations

from typing import Any

from verifily_core import hookimpl
from verifily_slicers.length import LengthSlicer
from verifily_slicers.tags import CrossSlicer, TagSlicer


@hookimpl
def verifily_register_slicers(registry: Any) -> None:
    """Register ``tag``, ``cross`` and ``length``."""
    for cls in (TagSlicer, CrossSlicer, LengthSlicer):
        registry.add(cls())
