"""Plain-language lines computed from a :class:`CompareResult` (never canned text).

Deltas of metrics whose values lie in [0, 1] and where higher is better are said in points
(``+1.46 points`` for +0.0146); others as raw differences. A delta below one point is
"slight". An interval that excludes 0 is "significant", one that includes it "within noise".
"""

from __future__ import annotations

from typing import Any

from verifily_core.comparison.result import NOTE, OVERALL, CompareResult

SLIGHT = 0.01  # deltas smaller than this (one point) are called slight
MAX_DATA_LINES = 3


def interpret(result: CompareResult) -> list[str]:
    """The interpretation lines: overall change, most-improved and most-declined slices,
    training-data changes beside the slice deltas, the test-set caveat and the note."""
    lines: list[str] = []
    points = _in_points(result)
    for rid in result.runs[1:]:
        prefix = f"{result.labels[rid]} vs {result.labels[result.baseline]}: " if len(result.runs) > 2 else ""
        lines += [prefix + line for line in _run_lines(result, rid, points)]
    if not result.same_test_set:
        lines.append("The runs were evaluated on different test sets: deltas mix model and test-set changes.")
    lines.append(NOTE)
    return lines


def _run_lines(result: CompareResult, rid: str, points: bool) -> list[str]:
    out = []
    d = result.deltas[rid]
    if d is not None:
        change = "did not change" if d == 0 else f"{_verb(result, d)} {_amount(d, points)}"
        out.append(f"Overall {result.metric} {change}{_significance(result, rid, OVERALL, points)}.")
    ranked = sorted(((s, result.slice_deltas[s][rid]) for s in result.slice_names
                     if result.slice_deltas[s][rid] is not None), key=lambda x: _better(result, x[1]), reverse=True)
    if ranked and _better(result, ranked[0][1]) > 0:
        s, v = ranked[0]
        most = " most" if sum(1 for _, x in ranked if _better(result, x) > 0) > 1 else ""
        out.append(f"{s} slice improved{most} ({_amount(v, points)}){_significance(result, rid, s, points)}.")
    if ranked and _better(result, ranked[-1][1]) < 0:
        s, v = ranked[-1]
        word = "slightly " if abs(v) < SLIGHT and points else ""
        worst = "decreased" if result.higher_is_better else "worsened"
        most = " most" if sum(1 for _, x in ranked if _better(result, x) < 0) > 1 else ""
        out.append(f"{s} slice {word}{worst}{most} ({_amount(v, points)}){_significance(result, rid, s, points)}.")
    out += _data_lines(result, rid, points)
    return out


def _data_lines(result: CompareResult, rid: str, points: bool) -> list[str]:
    changes = result.data_changes.get(rid)
    if not changes:
        return []
    span = f"{changes['from']} -> {changes['to']}"
    by_tag = changes.get("by_tag", {})
    touched = [(s, by_tag[s]) for s in result.slice_names if sum(by_tag.get(s, {}).values())]
    if not touched:
        return [f"Training data {span}: {_counts(changes['train'])}."]
    touched.sort(key=lambda item: -sum(item[1].values()))
    out = []
    for s, counts in touched[:MAX_DATA_LINES]:
        d = result.slice_deltas[s][rid]
        beside = "" if d is None else f"; its delta: {_amount(d, points)}"
        out.append(f"{s}: training rows {_counts(counts)} ({span}){beside}.")
    return out


def _counts(counts: dict[str, int]) -> str:
    parts = [f"{counts.get(k, 0)} {k}" for k in ("added", "removed", "changed", "retagged") if counts.get(k)]
    return ", ".join(parts) or "unchanged"


def _in_points(result: CompareResult) -> bool:
    values = [v for v in result.overall.values() if v is not None]
    values += [v for per_run in (result.slices or {}).values() for v in per_run.values() if v is not None]
    return result.higher_is_better and all(0.0 <= v <= 1.0 for v in values)


def _better(result: CompareResult, delta: float) -> float:
    return delta if result.higher_is_better else -delta


def _verb(result: CompareResult, delta: float) -> str:
    if _better(result, delta) > 0:
        return "improved by"
    return "decreased by" if result.higher_is_better else "worsened by"


def _amount(delta: float, points: bool) -> str:
    return f"{delta * 100:+.2f} points" if points else f"{delta:+.4f}"


def _significance(result: CompareResult, rid: str, key: str, points: bool) -> str:
    ci: dict[str, Any] | None = result.interval(rid, key)
    if not ci or ci.get("ci_low") is None:
        return ""
    lo, hi = (ci["ci_low"] * 100, ci["ci_high"] * 100) if points else (ci["ci_low"], ci["ci_high"])
    fmt = "{:+.2f}" if points else "{:+.4f}"
    level = round(100 * ci.get("level", 0.95))
    shared = "" if result.same_test_set else f" on the {ci['n']} shared test rows"
    verdict = "significant" if ci["significant"] else "within noise"
    return f"; {level}% CI {fmt.format(lo)} to {fmt.format(hi)}{shared}: {verdict}"
