"""Differences between two dataset versions, per split and per tag value.

Rows are matched by their stable :func:`~verifily_core.datasets.rows.row_id`. A removed row
and an added row with the same normalized input (e.g. the same instruction and input but a
new output, or the same text with a new label) count as one *changed* row; rows whose
content is equal but whose tags differ count as *retagged*.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Callable, Mapping

from verifily_core.datasets.manifest import SPLITS, DatasetVersion
from verifily_core.datasets.rows import input_key, row_id
from verifily_core.errors import DataError
from verifily_core.slices import tag_labels

KINDS = ("added", "removed", "changed", "retagged")


def _index(version: DatasetVersion, split: str) -> dict[str, list[dict[str, Any]]]:
    """Rows by id; duplicates (same content) stay as separate rows of one id."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if version.has_split(split):
        for r in version.iter_rows(split):
            out[row_id(r)].append(r)
    return out


def _tags_key(row: dict[str, Any]) -> tuple:
    return tuple(sorted((row.get("tags") or {}).items(), key=lambda kv: kv[0]))


def _match(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> tuple[list, list, list]:
    """Pair copies of one row id, same tags first: (removed, added, retagged new rows)."""
    pending: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in old:
        pending[_tags_key(row)].append(row)
    unmatched_new = []
    for row in new:
        bucket = pending.get(_tags_key(row))
        if bucket:
            bucket.pop()
        else:
            unmatched_new.append(row)
    leftover = [row for rows in pending.values() for row in rows]
    n = min(len(leftover), len(unmatched_new))
    return leftover[n:], unmatched_new[n:], unmatched_new[:n]


def diff_versions(
    a: DatasetVersion, b: DatasetVersion, row_input: Callable[[Mapping[str, Any]], Mapping[str, Any]],
) -> dict[str, Any]:
    """Rows added, removed, changed and retagged from ``a`` to ``b``.

    ``row_input`` decides what "the same input" means for *changed* rows: the task plugin's
    :meth:`~verifily_core.interfaces.Task.row_input` (``instruction`` and ``input``, or a
    conversation before its last assistant message, for SFT; ``text``, ``text_pair`` for
    classification).

    :returns: ``{"from", "to", "splits": {split: {kind: n}}, "by_tag": {split: {"source=human":
        {kind: n}}}, "total": {kind: n}}``. Added and changed rows count under the tags they
        have in ``b``; removed rows under their tags in ``a``.
    """
    if a.task != b.task:
        raise DataError(f"cannot diff {a.ref} ({a.task}) with {b.ref} ({b.task}): different tasks")
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
            removed_by_input[input_key(row_input(r))].append(k)
        counts: Counter[str] = Counter()
        by_tag: dict[str, Counter[str]] = defaultdict(Counter)

        def count(kind: str, row: dict[str, Any]) -> None:
            counts[kind] += 1
            for label in tag_labels(row.get("tags")):
                by_tag[label][kind] += 1

        for r in added:
            match = removed_by_input.get(input_key(row_input(r)))
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
