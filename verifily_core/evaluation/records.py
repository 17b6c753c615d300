"""Evaluation records: one dict per evaluated row, the unit every metric, slicer and file uses.

A record is ``{"index", "row_id", "prediction", "reference", "scores", "tags", "row"}`` plus
optional ``"input"`` (the row's input fields), ``"gold"`` (``true`` for gold rows),
``"split"`` (``"gold"`` for rows appended from ``eval.gold_set``; these count only for gold
metrics) and ``"slices"`` (the names of the slices a test row is in, set by the evaluation
when it slices). ``scores`` holds per-example numbers: the model's (``loss``, ``n_tokens``,
``p_true``) and each per-example metric's value under its name.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from verifily_core.errors import EvalError

GOLD_SPLIT = "gold"
PUBLIC_KEYS = ("index", "row_id", "prediction", "reference", "scores", "tags")
OPTIONAL_PUBLIC_KEYS = ("input", "gold", "split", "slices")


def normalize_records(records: Sequence[Mapping[str, Any]],
                      row_input: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Copy records, fill defaults (``index`` = position, empty ``scores``/``tags``/``row``) and check them.

    With ``row_input`` (the task's :meth:`~verifily_core.interfaces.Task.row_input`), records
    without ``"input"`` get the input parts of their row.
    :raises EvalError: on a record without ``prediction``/``reference`` or a repeated index.
    """
    out: list[dict[str, Any]] = []
    seen: set[Any] = set()
    for pos, rec in enumerate(records):
        missing = [k for k in ("prediction", "reference") if k not in rec]
        if missing:
            raise EvalError(f"evaluation record {pos} has no '{missing[0]}'")
        r = dict(rec)
        r.setdefault("index", pos)
        if r["index"] in seen and r.get("split") != GOLD_SPLIT:
            raise EvalError(f"evaluation record {pos}: index {r['index']} appears twice")
        seen.add(r["index"])
        row = dict(r.get("row") or {})
        r["row"] = row
        r["tags"] = dict(r.get("tags") if r.get("tags") is not None else row.get("tags") or {})
        r["scores"] = dict(r.get("scores") or {})
        r.setdefault("row_id", None)
        if row_input and "input" not in r and row:
            r["input"] = {k: v for k, v in row_input(row).items() if v is not None}
        out.append(r)
    return out


def is_gold(record: Mapping[str, Any]) -> bool:
    """A gold row: from ``eval.gold_set`` (``split: gold`` or ``gold: true``) or tagged ``gold: true``."""
    return (record.get("split") == GOLD_SPLIT or record.get("gold") is True
            or (record.get("tags") or {}).get("gold") in (True, "true"))


def is_test(record: Mapping[str, Any]) -> bool:
    """A test-set row (everything but rows appended from ``eval.gold_set``)."""
    return record.get("split") != GOLD_SPLIT


def public_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as written to ``predictions.jsonl``: without the raw ``row``."""
    out = {k: record.get(k) for k in PUBLIC_KEYS}
    out.update({k: record[k] for k in OPTIONAL_PUBLIC_KEYS if record.get(k) is not None})
    return out
