"""Paired bootstrap intervals of the deltas between two runs evaluated on the same test rows.

Uses the evaluation's :func:`~verifily_core.evaluation.paired.paired_bootstrap_delta` on the
records of both runs' ``eval/predictions.jsonl``: rows are matched by ``row_id``, each
resample draws the same matched rows for both runs, and the metric is recomputed on them by
its plugin (so corpus-level metrics such as ``macro_f1`` are handled exactly). A slice's
rows are the first run's rows its evaluation put in it (each prediction's ``slices``).
"""

from __future__ import annotations

from typing import Any, Sequence

from verifily_core.comparison.evaluated import RunEval
from verifily_core.comparison.result import OVERALL
from verifily_core.errors import ConfigError, EvalError


def paired_intervals(base: RunEval, other: RunEval, metric: str, slice_names: Sequence[str], *, level: float, resamples: int, seed: int,
                     registries: Any, metric_kwargs: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Intervals of ``other - base`` overall and per slice, and warnings for what was left out.

    :param metric_kwargs: the keywords the metric got at evaluation (the task's ``eval_metric_kwargs``).

    :returns: ``({"overall": PairedDelta dict, "source=human": ..., ...}, warnings)``; a slice
        without matched rows has no entry.
    """
    from verifily_core.evaluation.paired import paired_bootstrap_delta

    records_a, records_b = base.records(), other.records()
    if records_a is None or records_b is None:
        lacking = base if records_a is None else other
        return {}, [f"{lacking.label} has no eval/predictions.jsonl: deltas against it carry no confidence interval"]
    try:
        metric_obj = registries.metrics.get(metric)
    except ConfigError:
        return {}, [f"metric '{metric}' is not installed here: deltas carry no confidence interval"]
    options = {"resamples": resamples, "confidence_level": level, "seed": seed, "task": base.task,
               "metric_kwargs": metric_kwargs, "registries": registries,
               "metric_options": base.result.metric_settings.get(metric) or {}}
    try:
        out = {OVERALL: paired_bootstrap_delta(records_a, records_b, metric_obj, key=OVERALL, **options).to_json()}
    except EvalError as exc:
        return {}, [f"{other.label} vs {base.label}: {exc}"]
    members, warnings = _members(records_a, base.label) if slice_names else ({}, [])
    for name in slice_names:
        rows = members.get(name)
        if not rows:
            continue
        try:
            delta = paired_bootstrap_delta(records_a, records_b, metric_obj, key=name,
                                           select=lambda a, _b, rows=rows: a["index"] in rows, **options)
        except EvalError:  # the slice's rows are not shared by both runs
            continue
        out[name] = delta.to_json()
    return out, warnings


def _members(records: list[dict[str, Any]], label: str) -> tuple[dict[str, set], list[str]]:
    """Slice name -> the ``index`` values of its rows, as the evaluation recorded them."""
    if not any("slices" in r for r in records):
        return {}, [f"{label}: eval/predictions.jsonl records no slice membership (evaluated by an older "
                    "version); run `verifily eval` again for intervals of slice deltas"]
    members: dict[str, set] = {}
    for r in records:
        for name in r.get("slices") or ():
            members.setdefault(name, set()).add(r["index"])
    return members, []
