"""Split leakage: evaluation rows whose input also appears in training, and group keys
(e.g. ``tags.post_id``) whose values span splits."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any, Callable, Mapping

import attrs

from verifily_core.datasets.manifest import DatasetVersion
from verifily_core.datasets.rows import input_key

MAX_EXAMPLES = 3


@attrs.define
class LeakageReport:
    """What leaked: per evaluation split the count, a few examples, and counts per tag value."""

    leaked: dict[str, int] = attrs.field(factory=dict)
    examples: dict[str, list[str]] = attrs.field(factory=dict)
    by_tag: dict[str, dict[str, int]] = attrs.field(factory=dict)
    group_key: str | None = None
    spanning_groups: list[str] = attrs.field(factory=list)
    spanning_count: int = 0
    group_rows: int = 0

    @property
    def found(self) -> bool:
        """Whether anything leaked."""
        return any(self.leaked.values()) or self.spanning_count > 0

    def summary(self) -> str:
        """One line describing the leakage."""
        parts = []
        for split, n in self.leaked.items():
            if n:
                tags = ", ".join(f"{k} {v}" for k, v in sorted(self.by_tag.get(split, {}).items()))
                parts.append(f"{n} {split} row(s) also in train" + (f" ({tags})" if tags else "")
                             + f", e.g. {self.examples[split][0]!r}")
        if self.spanning_count:
            parts.append(f"{self.spanning_count} value(s) of {self.group_key} span splits, e.g. "
                         f"{', '.join(self.spanning_groups)}")
        return "; ".join(parts)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def _group_value(row: Mapping[str, Any], key: str) -> Any:
    node: Any = row
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def check_leakage(dataset: DatasetVersion, row_input: Callable[[Mapping[str, Any]], Mapping[str, Any]],
                  group_key: str | None = None) -> LeakageReport:
    """Compare the normalized input of val/test rows with train's, and check ``group_key``.

    :param row_input: a row's input parts (the task's :meth:`~verifily_core.interfaces.Task.row_input`).
    """
    report = LeakageReport(group_key=group_key)
    train_keys = {_digest(input_key(row_input(r))) for r in dataset.iter_rows("train")}
    groups: dict[Any, set[str]] = {}
    for split in ("train", "val", "test"):
        if not dataset.has_split(split):
            continue
        by_tag: Counter[str] = Counter()
        for row in dataset.iter_rows(split):
            if group_key:
                value = _group_value(row, group_key)
                if value is not None:
                    report.group_rows += 1
                    groups.setdefault(value, set()).add(split)
            if split == "train":
                continue
            key = input_key(row_input(row))
            if _digest(key) in train_keys:
                report.leaked[split] = report.leaked.get(split, 0) + 1
                report.examples.setdefault(split, [])
                if len(report.examples[split]) < MAX_EXAMPLES:
                    report.examples[split].append(key.replace("\x1f", " | ")[:80])
                by_tag.update(f"{k}={v}" for k, v in (row.get("tags") or {}).items())
        if by_tag:
            report.by_tag[split] = dict(by_tag)
    spanning = [str(v) for v, splits in groups.items() if len(splits) > 1]
    report.spanning_count = len(spanning)
    report.spanning_groups = spanning[:MAX_EXAMPLES]
    return report
