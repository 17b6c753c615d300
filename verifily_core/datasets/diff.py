"""Differences between two dataset versions, per split and per tag value.

Rows are matched by their stable :func:`~verifily_core.datasets.rows.row_id`. A removed row
and an added row with the same normalized input (e.g. the same instruction and input but a
new output, or the same text with a new label) count as one *changed* row; rows whose
content is equal but whose tags differ count as *retagged*.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from verifily_core.datasets.manifest import SPLITS, DatasetVersion
from verifily_core.datasets.rows import input_key, row_id

KINDS = ("added", "removed", "changed", "retagged")


def _index(version: DatasetVersion, split: str) -> dict[str, list[dict[str, Any]]]:
    """Rows by id; duplicates (same content) stay as separate rows of one id."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if version.has_split(split):
        for r in version.iter_rows(split):
            out[row_id(r)].append(r)
    return out


def _match(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> tuple[list, list, list]:
    """Pair copies of one row id by their tags: (removed, added, retagged new rows)."""
    pending = list(old)
    unmatched_new = []
    for row in new:
        twin = next((i for i, o in enumerate(pending) if (o.get("tags") or {}) == (row.get("tags") or {})), None)
        if twin is None:
            unmatched_new.append(row)
        else:
            pending.pop(twin)
    n = min(len(pending), len(unmatched_new))
    return pending[n:], unmatched_new[n:], unmatched_new[:n]


def _tag_labels(row: dict[str, Any]) -> list[str]:
    return [f"{k}={v}" for k, v in sorted((row.get("tags") or {}).items())]


def diff_versions(a: DatasetVersion, b: DatasetVersion, input_fields: tuple[str, ...]) -> dict[str, Any]:
    """Rows added, removed, changed and retagged from ``a`` to ``b``.

    :returns: ``{"from", "to", "splits": {split: {kind: n}}, "by_tag": {split: {"source=human":
        {kind: n}}}, "total": {kind: n}}``. Added and changed rows count under the tags they
        have in ``b``; removed rows under their tags in ``a``.
    """
    out: dict[str, Any] = {"from": a.ref, "to": b.ref, "splits": {}, "by_tag": {}, "total": dict.fromkeys(KINDS, 0)}
    for split in SPLITS:
        old, new = _index(a, split), _index(b, split)
        if not old and not new:
            continue
        removed_rows, added, retagged = [], [], []
        for k in sorted(old.keys() | new.keys()):
            gone, new_rows, moved = _match(old.get(k, []), new.get(k, []))
            removed_rows += gone
            added += new_rows
            retagged += moved
        removed = dict(enumerate(removed_rows))
        removed_by_input = defaultdict(list)
        for k, r in removed.items():
            removed_by_input[input_key(r, input_fields)].append(k)
        counts: Counter[str] = Counter()
        by_tag: dict[str, Counter[str]] = defaultdict(Counter)

        def count(kind: str, row: dict[str, Any]) -> None:
            counts[kind] += 1
            for label in _tag_labels(row):
                by_tag[label][kind] += 1

        for r in added:
            match = removed_by_input.get(input_key(r, input_fields))
            if match:
                removed.pop(match.pop())
                count("changed", r)
            else:
                count("added", r)
        for r in removed.values():
            count("removed", r)
        for r in retagged:
            count("retagged", r)
        out["splits"][split] = {kind: counts[kind] for kind in KINDS}
        out["by_tag"][split] = {label: {kind: c[kind] for kind in KINDS} for label, c in sorted(by_tag.items())}
        for kind in KINDS:
            out["total"][kind] += counts[kind]
    return out
