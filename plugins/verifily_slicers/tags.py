"""Slicing by tag values: one key at a time (``tag``) or crossed keys (``cross``).

Slice names are ``key=value`` (crossed: ``key1=v1&key2=v2``). A row without the key, or with
``null``, goes to ``key=<missing>``; non-string values are written as JSON (``true``, ``3``);
a list value puts the row in one slice per element (so multi-valued tags may overlap).
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping, Sequence

from verifily_core.interfaces import Slicer
from verifily_core.slices import MISSING, slice_name, tag_value_texts


def tag_values(row: Mapping[str, Any], key: str) -> list[str]:
    """The slice values of one tag key for a row (``[MISSING]`` when absent)."""
    return tag_value_texts((row.get("tags") or {}).get(key))


def ordered(groups: dict[str, list[int]]) -> dict[str, list[int]]:
    """Largest slices first, then by name; slices with a missing value last."""
    return dict(sorted(groups.items(), key=lambda kv: (MISSING in kv[0], -len(kv[1]), kv[0])))


def cross_slices(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, list[int]]:
    """Slices of every observed combination of values of ``keys``."""
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        for combo in itertools.product(*(tag_values(row, k) for k in keys)):
            groups.setdefault(slice_name(list(zip(keys, combo))), []).append(i)
    return ordered(groups)


class TagSlicer(Slicer):
    """``source`` -> ``source=human``, ``source=synthetic``, ... (each key sliced on its own)."""

    name = "tag"

    def slices(self, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, list[int]]:
        """One slice per value of each key."""
        out: dict[str, list[int]] = {}
        for key in keys:
            out.update(cross_slices(rows, [key]))
        return out


class CrossSlicer(Slicer):
    """``source&difficulty`` -> ``source=human&difficulty=hard``, ... (keys crossed); computes the
    plain specs (``source``, ``source&difficulty``)."""

    name = "cross"
    plain_specs = True

    def slices(self, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, list[int]]:
        """One slice per observed combination of values."""
        return cross_slices(rows, keys)
