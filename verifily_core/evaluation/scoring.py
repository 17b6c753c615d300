"""Metric plans: how each selected metric is evaluated on any subset of records and its resamples.

Three ways, chosen per metric:

* ``additive``: the metric defines ``statistics()``/``from_statistics()``, or ``per_example()``
  (then the statistics are ``[value, 1]`` per row that counts and the value is their ratio);
  a resample is a weighted column sum: fast and exact.
* ``compute``: only ``compute()``; it is called on every resample.
* ``details``: ``compute()`` returned a mapping (non-scalar); reported once, no interval.

Per-example values are stored in each record's ``scores`` under the metric's name.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import attrs
import numpy as np

from verifily_core.errors import EvalError, VerifilyTrainError
from verifily_core.evaluation.records import is_gold, is_test
from verifily_core.evaluation.stats import Resample, finite, one_hot_codes
from verifily_core.interfaces import Metric


def defines_per_example(metric: Metric) -> bool:
    """Whether a metric overrides :meth:`Metric.per_example`."""
    return type(metric).per_example is not Metric.per_example


@attrs.define(eq=False)
class MetricPlan:
    """One metric prepared over all records (``domain``: the record indices it applies to)."""

    metric: Metric
    kind: str
    domain: np.ndarray
    kwargs: dict[str, Any]
    columns: Sequence[Sequence[Any]]  # predictions, references, rows, scores over all records
    stats: np.ndarray | None = None
    codes: np.ndarray | None = None
    finalize: Callable[[np.ndarray], np.ndarray] | None = None
    counted: np.ndarray | None = None  # per record: whether it counts (per-example metrics)
    details: Any = None
    domain_value: Any = None  # compute() on the whole domain, computed while planning

    @property
    def name(self) -> str:
        """The metric's name."""
        return self.metric.name

    @property
    def scalar(self) -> bool:
        """Whether the metric has a value (and an interval) per set of rows."""
        return self.kind != "details"

    def count(self, subset: np.ndarray) -> int:
        """How many rows of ``subset`` count for the metric."""
        return int(self.counted[subset].sum()) if self.counted is not None else int(len(subset))

    def value(self, subset: np.ndarray) -> float | None:
        """The metric on the records ``subset`` (``None`` where undefined)."""
        if not len(subset):
            return None
        if self.kind == "additive":
            return finite(self.finalize(self.stats[subset].sum(axis=0)))
        if self.domain_value is not None and np.array_equal(subset, self.domain):
            return finite(self.domain_value)
        return finite(self._compute(subset))

    def from_totals(self, totals: np.ndarray) -> np.ndarray:
        """Metric values from summed statistics of shape ``(b, d)`` (additive plans)."""
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            return np.asarray(self.finalize(totals), dtype=float)

    def resampled(self, subset: np.ndarray, resample: Resample) -> np.ndarray:
        """The metric on each resample of ``subset`` (NaN where undefined), shape ``(b,)``."""
        if self.kind == "additive":
            codes = None if self.codes is None else self.codes[subset]
            return self.from_totals(resample.totals(self.stats[subset], codes))
        out = np.empty(resample.size)
        for b, positions in enumerate(resample.positions):
            v = self._compute(subset[positions])
            out[b] = np.nan if v is None else float(v)
        return out

    def _compute(self, subset: np.ndarray) -> Any:
        preds, refs, rows, scores = ([col[i] for i in subset] for col in self.columns)
        return _guard(self.name, lambda: self.metric.compute(preds, refs, rows, scores=scores, **self.kwargs))


def resampled_values(plans: Sequence[MetricPlan], subset: np.ndarray, resample: Resample) -> list[np.ndarray]:
    """Every plan's values on each resample of ``subset``; dense additive statistics share one
    matrix product (``counts @ [stats_1 | stats_2 | ...]``)."""
    fused = [p for p in plans if p.kind == "additive" and p.codes is None]
    if fused:
        blocks = [p.stats[subset] for p in fused]
        totals = resample.totals(np.hstack(blocks))
        edges = np.cumsum([0] + [b.shape[1] for b in blocks])
        done = {id(p): p.from_totals(totals[:, edges[i]:edges[i + 1]]) for i, p in enumerate(fused)}
    else:
        done = {}
    return [done[id(p)] if id(p) in done else p.resampled(subset, resample) for p in plans]


def plan_metrics(records: list[dict[str, Any]], metrics: Sequence[Metric], task: str,
                 metric_kwargs: Mapping[str, Any] | None = None,
                 metric_options: Mapping[str, Mapping[str, Any]] | None = None) -> list[MetricPlan]:
    """Prepare every metric over ``records`` (filling per-example ``scores``) in the given order.

    :param metric_kwargs: keywords for every metric (e.g. ``labels``).
    :param metric_options: per-metric keywords, by metric name (e.g. ``format_compliance``'s ``format``).
    """
    columns = ([r["prediction"] for r in records], [r["reference"] for r in records],
               [r["row"] for r in records], [r["scores"] for r in records])
    test = np.array([i for i, r in enumerate(records) if is_test(r)], dtype=int)
    gold = np.array([i for i, r in enumerate(records) if is_gold(r)], dtype=int)
    plans = []
    for metric in metrics:
        kwargs = {**(metric_kwargs or {}), "task": task, **((metric_options or {}).get(metric.name) or {})}
        domain = gold if metric.gold_set else test
        plans.append(_plan(metric, domain, kwargs, columns, len(records)))
    return plans


def _plan(metric: Metric, domain: np.ndarray, kwargs: dict[str, Any], columns: Sequence[Sequence[Any]],
          size: int) -> MetricPlan:
    plan = MetricPlan(metric, "compute", domain, kwargs, columns)
    preds, refs, rows, scores = columns
    per_example = None
    if defines_per_example(metric):
        per_example = np.full(size, np.nan)
        for i in domain:
            v = _guard(metric.name, lambda: metric.per_example(preds[i], refs[i], rows[i], scores[i], **kwargs), i)
            if v is not None:
                per_example[i] = scores[i][metric.name] = float(v)
    sub = [[col[i] for i in domain] for col in columns]
    stats = _guard(metric.name, lambda: metric.statistics(sub[0], sub[1], sub[2], scores=sub[3], **kwargs))
    if stats is not None:
        arr = np.asarray(stats, dtype=float)
        if arr.ndim != 2 or arr.shape[0] != len(domain):
            if len(domain):
                raise EvalError(f"metric '{metric.name}': statistics() returned shape {arr.shape}; "
                                f"expected ({len(domain)}, d)")
            arr = np.zeros((0, 1))
        full = np.zeros((size, arr.shape[1]))
        full[domain] = arr
        plan.kind, plan.stats, plan.finalize = "additive", full, metric.from_statistics
        plan.codes = one_hot_codes(full)
    elif per_example is not None:
        counted = ~np.isnan(per_example)
        plan.kind, plan.stats, plan.finalize = "additive", np.stack([np.where(counted, per_example, 0.0),
                                                                     counted.astype(float)], axis=1), _ratio
        plan.counted = counted
    elif len(domain):
        value = plan._compute(domain)
        if isinstance(value, Mapping):
            plan.kind, plan.details = "details", dict(value)
        elif value is not None and not isinstance(value, (int, float, np.floating, np.integer)):
            raise EvalError(f"metric '{metric.name}' returned {type(value).__name__}; expected a number or a mapping")
        else:
            plan.domain_value = value
    return plan


def _ratio(totals: np.ndarray) -> np.ndarray:
    totals = np.asarray(totals, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return totals[..., 0] / totals[..., 1]


def _guard(name: str, fn: Callable[[], Any], index: int | None = None) -> Any:
    where = f" on record {index}" if index is not None else ""
    try:
        return fn()
    except VerifilyTrainError:
        raise
    except Exception as exc:  # a plugin's bug: name the metric, keep one line
        text = str(exc).splitlines()[0] if str(exc) else ""
        raise EvalError(f"metric '{name}' failed{where}: {type(exc).__name__}: {text}") from exc
