"""Slicing by a derived length bucket: ``short``, ``medium``, ``long``.

Spec ``FIELD[:LO:HI]`` or ``FIELD:tertiles``. FIELD is ``reference`` (default), ``input`` or
``prediction``; length is counted in whitespace-separated tokens. With thresholds (default
``10`` and ``50``): ``short`` is ``len < LO``, ``medium`` is ``LO <= len < HI``, ``long`` is
``len >= HI``. ``tertiles`` sets ``LO``/``HI`` to the lengths at positions ``n // 3`` and
``2 * n // 3`` of the sorted lengths of the evaluated rows. Slice names: ``length=short``
for the reference, ``input_length=short``, ``prediction_length=short``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from verifily_core.interfaces import Slicer

FIELDS = ("reference", "input", "prediction")
DEFAULT_THRESHOLDS = (10, 50)
BUCKETS = ("short", "medium", "long")


def text_of(row: Mapping[str, Any], field: str) -> str:
    """The text whose length is bucketed (a list reference: its first element)."""
    if field == "input":
        value = row.get("input")
        if value is None:
            ref = row.get("reference")
            value = {k: v for k, v in (row.get("row") or {}).items() if k not in ("tags", "id") and v != ref}
    else:
        value = row.get(field)
    if isinstance(value, Mapping):
        return " ".join(str(v) for v in value.values() if v is not None)
    if isinstance(value, (list, tuple)):
        return str(value[0]) if value else ""
    return "" if value is None else str(value)


def parse(spec: str) -> tuple[str, tuple[int, int] | None]:
    """``(field, (lo, hi))``, or ``(field, None)`` for tertiles."""
    from verifily_core.errors import ConfigError

    parts = [p.strip() for p in spec.split(":")] if spec.strip() else []
    field = parts[0] if parts else "reference"
    if field not in FIELDS:
        raise ConfigError(f"slice spec 'length:{spec}': field must be one of {', '.join(FIELDS)}")
    rest = parts[1:]
    if rest == ["tertiles"]:
        return field, None
    if not rest:
        return field, DEFAULT_THRESHOLDS
    try:
        lo, hi = (int(x) for x in rest)
    except ValueError:
        lo = hi = -1
    if not 0 < lo < hi:
        raise ConfigError(f"slice spec 'length:{spec}': give FIELD:LO:HI with integers 0 < LO < HI, or FIELD:tertiles")
    return field, (lo, hi)


class LengthSlicer(Slicer):
    """``length:reference`` -> ``length=short|medium|long`` by whitespace-token count."""

    name = "length"

    def slices(self, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, list[int]]:
        """Three buckets per spec (empty buckets are left out)."""
        out: dict[str, list[int]] = {}
        for spec in keys or [""]:
            field, bounds = parse(spec)
            lengths = [len(text_of(row, field).split()) for row in rows]
            if bounds is None:
                ranked = sorted(lengths)
                bounds = (ranked[len(ranked) // 3], ranked[2 * len(ranked) // 3]) if ranked else DEFAULT_THRESHOLDS
            prefix = "length" if field == "reference" else f"{field}_length"
            for bucket in BUCKETS:
                members = [i for i, n in enumerate(lengths) if _bucket(n, bounds) == bucket]
                if members:
                    out[f"{prefix}={bucket}"] = members
        return out

    def tag_keys(self, keys: Sequence[str]) -> list[str]:
        """Length buckets read no tags."""
        return []


def _bucket(n: int, bounds: tuple[int, int]) -> str:
    lo, hi = bounds
    return "short" if n < lo else "medium" if n < hi else "long"
