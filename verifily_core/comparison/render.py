"""Renderings of a :class:`CompareResult`: the terminal table, CSV and JSON.

The CSV has one row per run and column of the table (``slice`` is ``overall`` or a slice
name) with value, delta, interval and training-data changes, so it carries every number
the table shows.
"""

from __future__ import annotations

import csv
import io
import json

from verifily_core.comparison.result import OVERALL, CompareResult
from verifily_core.slices import slice_keys

CSV_FIELDS = ("run", "run_id", "dataset_version", "slice", "n", "value", "delta", "ci_low", "ci_high", "significant",
              "train_added", "train_removed", "train_changed", "train_retagged")
KINDS = ("added", "removed", "changed", "retagged")


def fmt_value(value: float | None) -> str:
    """A value with 4 decimals, ``-`` when absent."""
    return "-" if value is None else f"{value:.4f}"


def fmt_delta(value: float | None, ci: dict | None = None) -> str:
    """A signed delta with 4 decimals, ``*`` when its interval excludes 0."""
    if value is None:
        return "-"
    return f"{value:+.4f}" + ("*" if ci and ci.get("significant") else "")


def fmt_interval(ci: dict | None) -> str:
    """``[+0.0012, +0.0345]`` or empty."""
    if not ci or ci.get("ci_low") is None:
        return ""
    return f"[{ci['ci_low']:+.4f}, {ci['ci_high']:+.4f}]"


def fmt_changes(counts: dict | None) -> str:
    """Training rows ``+added/-removed/~changed`` (``-`` when unknown)."""
    if counts is None:
        return "-"
    return f"+{counts.get('added', 0)}/-{counts.get('removed', 0)}/~{counts.get('changed', 0)}"


def _changes(result: CompareResult, rid: str, column: str) -> dict | None:
    changes = result.data_changes.get(rid)
    if not changes:
        return None
    if column == OVERALL:
        return changes["train"]
    if len(slice_keys(column)) > 1:  # crossed slices have no per-tag diff
        return None
    return changes["by_tag"].get(column, dict.fromkeys(KINDS, 0))


def _delta_label(result: CompareResult, rid: str) -> str:
    refs = list(result.datasets.values())
    if len(set(refs)) == len(refs) and "data_paths" not in refs:
        a, b = (result.datasets[x].split("@", 1)[-1] for x in (rid, result.baseline))
    else:
        a, b = result.labels[rid], result.labels[result.baseline]
    return f"Delta ({a} vs {b}):"


def to_table(result: CompareResult) -> str:
    """The table of cli-design.md plus interval and training-data rows, then the interpretation;
    with several slice specs, one table per spec (each with the overall column)."""
    out = [f"Comparison: {result.metric}" + (f" ('{result.requested_metric}' for {result.task})"
                                              if result.requested_metric not in ("", result.metric) else ""), ""]
    out += [f"  WARNING: {w}" for w in result.warnings]
    if result.warnings:
        out.append("")
    groups = result.slice_groups or ({result.slice_by: result.slice_names} if result.slice_names else {})
    if len(groups) > 1:
        for i, (spec, names) in enumerate(groups.items()):
            out += ([""] if i else []) + [f"  Sliced by {spec}:"] + _table_lines(result, names)
    else:
        out += _table_lines(result, next(iter(groups.values()), []))
    if any(ci.get("ci_low") is not None for per_run in result.intervals.values() for ci in per_run.values()):
        out += ["", "  * the paired bootstrap interval of the delta excludes 0 (significant)"]
    out += ["", "  Interpretation:"]
    out += [f"    {text}" if text.startswith("Note:") else f"    - {text}" for text in result.interpretation]
    return "\n".join(out)


def _table_lines(result: CompareResult, slice_names: list[str]) -> list[str]:
    """The rows of one table: a line per run, then per compared run its deltas, intervals and changes."""
    columns = [OVERALL, *slice_names]
    heads = ["Overall", *slice_names]
    grid: list[tuple[str, list[str]]] = []  # (left text, cells); left text spans run + dataset columns
    name_w = max(len("Run"), *(len(v) for v in result.labels.values()))
    data_w = max(len("Dataset Version"), *(len(v) for v in result.datasets.values()))
    rows = [(f"{result.labels[r]:<{name_w}}   {result.datasets[r]:<{data_w}}", [fmt_value(result.value(r, c)) for c in columns])
            for r in result.runs]
    for rid in result.runs[1:]:
        grid.append(("", []))
        grid.append((_delta_label(result, rid), [fmt_delta(result.delta(rid, c), result.interval(rid, c)) for c in columns]))
        cis = [fmt_interval(result.interval(rid, c)) for c in columns]
        if any(cis):
            level = round(100 * (result.confidence.get("level") or 0.95))
            grid.append((f"{level}% CI of delta:", cis))
        if result.data_changes.get(rid):
            grid.append(("Train rows +add/-rem/~chg:", [fmt_changes(_changes(result, rid, c)) for c in columns]))
    left_w = max(name_w + 3 + data_w, *(len(left) for left, _ in grid))
    widths = [max(len(h), *(len(cells[i]) for _, cells in rows + grid if cells)) + 3 for i, h in enumerate(heads)]

    def line(left: str, cells: list[str]) -> str:
        return ("  " + f"{left:<{left_w}}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths))).rstrip()

    return [line(f"{'Run':<{name_w}}   {'Dataset Version':<{data_w}}", heads),
            *(line(left, cells) for left, cells in rows + grid)]


def csv_rows(result: CompareResult) -> list[dict[str, object]]:
    """The CSV content as dicts (``None`` for absent values)."""
    rows = []
    for rid in result.runs:
        for column in [OVERALL, *result.slice_names]:
            ci = result.interval(rid, column) or {}
            counts = _changes(result, rid, column) or {}
            n = (result.slice_sizes.get(column) or {}).get(rid)
            rows.append({
                "run": result.labels[rid], "run_id": rid, "dataset_version": result.datasets[rid], "slice": column,
                "n": n, "value": result.value(rid, column), "delta": result.delta(rid, column),
                "ci_low": ci.get("ci_low"), "ci_high": ci.get("ci_high"), "significant": ci.get("significant"),
                **{f"train_{k}": counts.get(k) for k in KINDS},
            })
    return rows


def to_csv(result: CompareResult) -> str:
    """CSV with a header; empty cells for absent values."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS), lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(result):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def to_json(result: CompareResult) -> str:
    """Indented JSON of :meth:`CompareResult.to_json_dict`."""
    return json.dumps(result.to_json_dict(), indent=2)
