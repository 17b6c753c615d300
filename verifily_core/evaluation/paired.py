"""Paired bootstrap of a metric difference between two evaluations of the same test rows.

Rows are matched by ``row_id`` (the n-th occurrence of an id with the n-th) when every record
has one, else by ``index``. Each resample draws matched row positions once and evaluates the
metric on both runs' rows at those positions, so the interval of ``delta = B - A`` reflects
only the per-row differences. ``rng = rng_for(seed, "paired|<metric>|<key>")`` (see
:mod:`verifily_core.evaluation.stats`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Mapping, Sequence

import attrs
import numpy as np

from verifily_core.errors import ConfigError, EvalError
from verifily_core.evaluation.records import is_gold, is_test, normalize_records
from verifily_core.evaluation.scoring import plan_metrics
from verifily_core.evaluation.stats import percentile_interval, resample_chunks, rng_for
from verifily_core.interfaces import Metric


@attrs.frozen
class PairedDelta:
    """``delta = value_b - value_a`` on the matched rows, its interval, and whether it excludes 0."""

    metric: str
    n: int
    value_a: float | None
    value_b: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    level: float
    resamples: int
    seed: int
    significant: bool
    higher_is_better: bool

    def to_json(self) -> dict[str, Any]:
        """A plain dict of the fields."""
        return attrs.asdict(self)


def metric_value(records: Sequence[Mapping[str, Any]], metric: Metric | str, *, task: str | None = None,
                 metric_kwargs: Mapping[str, Any] | None = None, metric_options: Mapping[str, Any] | None = None,
                 registries: Any = None) -> float | None:
    """A metric's value on records (test rows; gold rows for gold metrics), e.g. from ``predictions.jsonl``."""
    metric = _resolve(metric, registries)
    recs = normalize_records(records)
    plan = plan_metrics(recs, [metric], task or _task_of(metric), metric_kwargs, {metric.name: metric_options or {}})[0]
    return plan.value(plan.domain)


def paired_bootstrap_delta(
    records_a: Sequence[Mapping[str, Any]],
    records_b: Sequence[Mapping[str, Any]],
    metric: Metric | str,
    *,
    resamples: int = 1000,
    confidence_level: float = 0.95,
    seed: int = 42,
    task: str | None = None,
    metric_kwargs: Mapping[str, Any] | None = None,
    metric_options: Mapping[str, Any] | None = None,
    select: Callable[[Mapping[str, Any], Mapping[str, Any]], bool] | None = None,
    key: str = "",
    registries: Any = None,
) -> PairedDelta:
    """Paired percentile bootstrap of ``metric(B) - metric(A)``.

    :param records_a: evaluation records of run A (e.g. ``read_jsonl(".../predictions.jsonl")``).
    :param metric: a metric object, or a name looked up in ``registries`` (default: installed plugins).
    :param select: keep only matched pairs for which ``select(record_a, record_b)`` is true (e.g. a slice).
    :param key: mixed into the random stream's key (use the slice name when computing several slices).
    :returns: ``significant`` is true when the interval excludes 0.
    :raises EvalError: when no rows match.
    """
    metric = _resolve(metric, registries)
    a, b = _matched(normalize_records(records_a), normalize_records(records_b), metric, select)
    if not a:
        raise EvalError(f"paired bootstrap of '{metric.name}': the two evaluations share no test rows")
    kwargs, options = metric_kwargs, {metric.name: metric_options or {}}
    plan_a = plan_metrics(a, [metric], task or _task_of(metric), kwargs, options)[0]
    plan_b = plan_metrics(b, [metric], task or _task_of(metric), kwargs, options)[0]
    if not plan_a.scalar or not plan_b.scalar:
        raise EvalError(f"paired bootstrap: metric '{metric.name}' is not scalar")
    rows = np.arange(len(a))
    va, vb = plan_a.value(rows), plan_b.value(rows)
    deltas = [plan_b.resampled(rows, chunk) - plan_a.resampled(rows, chunk)
              for chunk in resample_chunks(rng_for(seed, f"paired|{metric.name}|{key}"), len(a), resamples)]
    defined = bool(deltas) and None not in (va, vb)
    interval = percentile_interval(np.concatenate(deltas), confidence_level) if defined else None
    lo, hi = interval or (None, None)
    return PairedDelta(metric.name, len(a), va, vb, None if None in (va, vb) else vb - va, lo, hi, confidence_level,
                       resamples, seed, interval is not None and (lo > 0 or hi < 0), metric.higher_is_better)


def _matched(a: list[dict[str, Any]], b: list[dict[str, Any]], metric: Metric,
             select: Callable[[Mapping[str, Any], Mapping[str, Any]], bool] | None) -> tuple[list, list]:
    keep = is_gold if metric.gold_set else is_test
    a, b = [r for r in a if keep(r)], [r for r in b if keep(r)]
    by_id = all(r.get("row_id") for r in (*a, *b))
    keys_b = dict(zip(_keys(b, by_id), b))
    pairs = [(ra, keys_b[k]) for k, ra in zip(_keys(a, by_id), a) if k in keys_b]
    if select is not None:
        pairs = [(ra, rb) for ra, rb in pairs if select(ra, rb)]
    return [ra for ra, _ in pairs], [rb for _, rb in pairs]


def _keys(records: list[dict[str, Any]], by_id: bool) -> list[tuple[Any, int]]:
    seen: Counter = Counter()
    out = []
    for r in records:
        k = r["row_id"] if by_id else r["index"]
        out.append((k, seen[k]))
        seen[k] += 1
    return out


def _resolve(metric: Metric | str, registries: Any) -> Metric:
    if isinstance(metric, Metric):
        return metric
    if registries is None:
        raise ConfigError(f"metric '{metric}' given by name: pass registries to look it up, or the Metric object")
    return registries.metrics.get(metric)


def _task_of(metric: Metric) -> str:
    return metric.tasks[0] if metric.tasks else ""
