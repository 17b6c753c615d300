"""Automatic val/test splits: a seeded, stratified carve-out of the train file when the input
has no such split (``verifily dataset create --val-fraction 0.1 --stratify label,tags.source``).

Rows are grouped by their stratum (the values of the ``stratify`` keys: a row field, or
``tags.<key>``); within each group, in a shuffle seeded by the seed and the group, the first
``round(n * fraction)`` rows go to each split, so every split keeps the groups' proportions.
Rows keep their file order within each split and are copied byte for byte. The same input,
fractions, keys and seed always give the same files. Two passes over the file: memory holds a
line number and a group per row, not the rows.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Mapping, Sequence

import attrs

from verifily_core.datasets.rows import iter_jsonl
from verifily_core.errors import ConfigError, DataError
from verifily_core.files import write_lines

AUTO_SPLITS = ("val", "test")


@attrs.frozen
class SplitPlan:
    """Fractions of the train rows that become ``val``/``test``, the stratum keys and the seed."""

    fractions: Mapping[str, float]
    stratify: tuple[str, ...] = ()
    seed: int = 0

    def check(self) -> "SplitPlan":
        """Fractions in (0, 1) that leave training rows; known split names.

        :raises ConfigError: naming the bad fraction.
        """
        for split, fraction in self.fractions.items():
            if split not in AUTO_SPLITS:
                raise ConfigError(f"--{split}-fraction: only val and test splits can be made from train")
            if not 0 < fraction < 1:
                raise ConfigError(f"--{split}-fraction {fraction}: must be between 0 and 1")
        if sum(self.fractions.values()) >= 1:
            raise ConfigError("--val-fraction and --test-fraction together must leave rows for training (sum < 1)")
        for key in self.stratify:
            if not key or key == "tags." or key.count(".") > 1 or (key.count(".") == 1 and not key.startswith("tags.")):
                raise ConfigError(f"--stratify {key!r}: use a row field (label) or a tag (tags.source)")
        return self

    def record(self, rows: Mapping[str, int]) -> dict[str, Any]:
        """The manifest's ``split`` entry: how the splits were made and their row counts."""
        return {"from": "train", "method": "stratified" if self.stratify else "random", "seed": self.seed,
                "fractions": dict(self.fractions), "stratify_by": list(self.stratify), "rows": dict(rows)}


def stratum(row: Mapping[str, Any], keys: Sequence[str]) -> str:
    """The group of a row: the canonical JSON of its values for ``keys`` (missing: ``null``)."""
    values = []
    for key in keys:
        if key.startswith("tags."):
            tags = row.get("tags")
            values.append(tags.get(key[5:]) if isinstance(tags, dict) else None)
        else:
            values.append(row.get(key))
    return json.dumps(values, sort_keys=True, ensure_ascii=False, default=str)


def assign(strata: Sequence[str], plan: SplitPlan) -> list[str]:
    """The split of every row (``train``, ``val`` or ``test``) from the rows' groups, in row order."""
    groups: dict[str, list[int]] = {}
    for position, group in enumerate(strata):
        groups.setdefault(group, []).append(position)
    out = ["train"] * len(strata)
    for group in sorted(groups):
        members = groups[group]
        random.Random(f"{plan.seed}|{group}").shuffle(members)
        start = 0
        for split in AUTO_SPLITS:
            count = int(len(members) * plan.fractions.get(split, 0.0) + 0.5)
            for position in members[start:start + count]:
                out[position] = split
            start += count
    return out


def split_train_file(train: str | Path, plan: SplitPlan, out_dir: str | Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """Write ``train/val/test.jsonl`` of ``plan`` into ``out_dir`` from the ``train`` JSONL file.

    :returns: the files by split, and the manifest's ``split`` record.
    :raises DataError: the train file is missing or a line is not a JSON object (named);
        a split that would get no row.
    """
    train, out_dir = Path(train), Path(out_dir)
    if not train.is_file():
        raise DataError(f"{train}: train file not found")
    linenos, strata = [], []
    for lineno, row in iter_jsonl(train):
        linenos.append(lineno)
        strata.append(stratum(row, plan.stratify))
    where = dict(zip(linenos, assign(strata, plan)))
    counts = {s: sum(1 for v in where.values() if v == s) for s in ("train", *plan.fractions)}
    empty = [s for s, n in counts.items() if n == 0]
    if empty:
        raise DataError(f"{train}: {len(linenos)} rows leave no row for the {' and '.join(empty)} split; "
                        "use a larger fraction or more rows")
    paths = {s: out_dir / f"{s}.jsonl" for s in counts}
    for split, path in paths.items():
        write_lines(path, _lines(train, where, split))
    return paths, plan.record(counts)


def _lines(path: Path, where: Mapping[int, str], split: str) -> Any:
    """The lines of ``path`` that ``where`` gives to ``split``, as written (newline-terminated,
    a byte-order mark dropped); lines are counted as the row reader counts them."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if where.get(lineno) == split:
                line = raw.decode("utf-8")
                line = line[1:] if lineno == 1 and line.startswith("\ufeff") else line
                yield line if line.endswith("\n") else line + "\n"
