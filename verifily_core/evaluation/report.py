"""``build_eval_result``: per-example records in, overall and sliced metrics with bootstrap
intervals, hard examples and over-represented slices out. No model, no files."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from verifily_core.errors import ConfigError
from verifily_core.evaluation.hard import at_or_below, choose_score, over_represented, rank, tie_breakers
from verifily_core.evaluation.records import is_gold, is_test, normalize_records, public_record
from verifily_core.evaluation.result import METHOD, EvalResult, MetricValue, SliceResult
from verifily_core.evaluation.scoring import MetricPlan, plan_metrics, resampled_values
from verifily_core.evaluation.slicing import compute_slices, plain_slicer
from verifily_core.slices import parse_slice_by
from verifily_core.evaluation.stats import percentile_interval, resample_chunks, rng_for
from verifily_core.interfaces import Metric, Task

OVERALL = "overall"
MAX_TAG_VALUES = 50  # tag keys with more values are not searched for over-representation


def build_eval_result(
    records: Sequence[Mapping[str, Any]],
    task: str | Task,
    metrics: Sequence[Metric] | Mapping[str, Metric],
    *,
    slicers: Any = None,
    slice_by: str | Sequence[str] | None = (),
    hard_examples: int = 50,
    hard_score: str | None = None,
    confidence_level: float = 0.95,
    resamples: int = 1000,
    seed: int = 42,
    min_slice_size: int = 30,
    metric_kwargs: Mapping[str, Any] | None = None,
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    row_input: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
    run_id: str | None = None,
    test_data: Mapping[str, Any] | None = None,
) -> EvalResult:
    """Score ``records`` (see :mod:`verifily_core.evaluation.records`) and assemble an :class:`EvalResult`.

    :param task: the task object (``regs.tasks.get("sft")``), whose declarations rank hard
        examples; a bare task name applies none of them.
    :param metrics: metric objects (a registry lookup's result), in report order.
    :param slicers: the slicer registry or a ``{name: Slicer}`` mapping; needed for ``slice_by`` and
        for the search of over-represented tag values among hard examples (skipped without it).
    :param slice_by: slice specs (``source``, ``source&difficulty``, ``length:reference``; a string is
        split on commas).
    :param hard_score: the per-example score that ranks hard examples (default: the task's
        ``hard_example_scores``, see :mod:`verifily_core.evaluation.hard`).
    :param resamples: bootstrap resamples (``0``: no intervals); ``confidence_level`` and ``seed`` as documented.
    :param metric_kwargs: keywords for every metric (e.g. ``labels``); ``metric_options``: per metric name.
    :param row_input: a row's input parts, copied to each record's ``input`` (shown with hard
        examples): the task's :meth:`~verifily_core.interfaces.Task.row_input`.
    :raises ConfigError: a metric that does not apply to ``task``, a repeated metric, an unknown slicer.
    :raises EvalError: a metric or slicer that fails on the records.
    """
    started = time.monotonic()
    task_obj = task if isinstance(task, Task) else None
    task = task_obj.name if task_obj is not None else task
    chosen = _check_metrics(list(metrics.values()) if isinstance(metrics, Mapping) else list(metrics), task)
    if not 0 < confidence_level < 1 or resamples < 0:
        raise ConfigError("eval: confidence_level must be in (0, 1) and bootstrap_resamples >= 0")
    recs = normalize_records(records, row_input)
    plans = plan_metrics(recs, chosen, task, metric_kwargs, metric_options)
    scalar = [p for p in plans if p.scalar]
    test = np.array([i for i, r in enumerate(recs) if is_test(r)], dtype=int)
    gold_mask = np.array([is_gold(r) for r in recs], dtype=bool)
    boot = _Bootstrap(resamples, confidence_level, seed)

    specs = parse_slice_by(slice_by)
    if specs and slicers is None:
        raise ConfigError("slice_by needs the slicers to compute them: pass slicers=registries.slicers")
    test_records = [recs[i] for i in test]
    slice_defs = compute_slices(test_records, specs, slicers) if specs else []
    for rec in test_records if specs else ():
        rec["slices"] = []
    for sd in slice_defs:  # membership is written with each prediction, so readers never re-slice
        for i in sd.indices:
            test_records[i]["slices"].append(sd.name)
    slice_results = {}
    for sd in slice_defs:
        members = test[list(sd.indices)]
        slice_results[sd.name] = SliceResult(sd.name, list(sd.keys), sd.spec, len(members),
                                             len(members) < min_slice_size,
                                             boot.evaluate(scalar, members, gold_mask, sd.name))
    directions = {p.name: p.metric.higher_is_better for p in plans}
    ranking = (task_obj.hard_example_scores if task_obj else (), {p.name: p.metric.higher_is_better for p in scalar},
               task_obj.score_directions if task_obj else {})
    choice = choose_score(test_records, hard_score, *ranking)
    hard: list[dict[str, Any]] = []
    over: list[dict[str, Any]] = []
    ties: list[tuple[str, bool]] = []
    tested, threshold = [], None
    if choice and hard_examples > 0:
        ties = tie_breakers(test_records, choice[0], *ranking)
        ranked = rank(test_records, choice[0], choice[1], ties)
        hard = [{**public_record(test_records[p]), "score": test_records[p]["scores"][choice[0]]}
                for _, p in ranked[:hard_examples]]
        tested = at_or_below(ranked, hard_examples)
        threshold = hard[-1]["score"] if hard else None
        groups = {sd.name: sd.indices for sd in slice_defs} or _tag_groups(test_records, slicers)
        over = over_represented(groups, tested, len(test_records))
    return EvalResult(
        task=task, num_examples=len(test), metric_values=boot.evaluate(scalar, test, gold_mask, OVERALL),
        slice_results=slice_results, details={p.name: p.details for p in plans if not p.scalar}, hard_examples=hard,
        metrics=[p.name for p in plans], higher_is_better=directions,
        confidence={"method": METHOD, "level": confidence_level, "resamples": resamples, "seed": seed},
        slice_by=[s.text for s in specs], min_slice_size=min_slice_size,
        hard_score=choice[0] if choice else None, hard_higher_is_better=choice[1] if choice else None,
        hard_tie_break=[name for name, _ in ties], hard_threshold=threshold, hard_tested=len(tested),
        over_represented=over, run_id=run_id, test_data=dict(test_data) if test_data else None,
        metric_settings={m.name: dict(s) for m in chosen
                         if (s := m.settings(**((metric_options or {}).get(m.name) or {})))},
        test_data_path=(test_data or {}).get("path"), eval_duration_seconds=round(time.monotonic() - started, 3),
        created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        records=recs, metric_objects={m.name: m for m in chosen},
    )


class _Bootstrap:
    """Values and intervals of scalar metric plans on one set of rows."""

    def __init__(self, resamples: int, level: float, seed: int) -> None:
        self.resamples, self.level, self.seed = resamples, level, seed

    def evaluate(self, plans: list[MetricPlan], members: np.ndarray, gold_mask: np.ndarray,
                 key: str) -> dict[str, MetricValue]:
        """``{metric: MetricValue}`` on ``members``; gold metrics use the gold rows among them
        (overall: every gold row, including those appended from ``eval.gold_set``)."""
        gold = np.flatnonzero(gold_mask) if key == OVERALL else members[gold_mask[members]]
        out: dict[str, MetricValue] = {}
        for subset, group, rng_key in ((members, [p for p in plans if not p.metric.gold_set], key),
                                       (gold, [p for p in plans if p.metric.gold_set], f"{key}|gold")):
            if group:
                out.update(self._group(group, subset, rng_key))
        return {p.name: out[p.name] for p in plans}

    def _group(self, plans: list[MetricPlan], subset: np.ndarray, key: str) -> dict[str, MetricValue]:
        draws: dict[str, list[np.ndarray]] = {p.name: [] for p in plans}
        for chunk in resample_chunks(rng_for(self.seed, key), len(subset), self.resamples):
            for p, values in zip(plans, resampled_values(plans, subset, chunk)):
                draws[p.name].append(values)
        out = {}
        for p in plans:
            value = p.value(subset)
            interval = None
            if draws[p.name] and value is not None:
                interval = percentile_interval(np.concatenate(draws[p.name]), self.level)
            out[p.name] = MetricValue(value, *(interval or (None, None)), n=p.count(subset))
        return out


def _check_metrics(metrics: list[Metric], task: str) -> list[Metric]:
    seen: set[str] = set()
    for m in metrics:
        if m.name in seen:
            raise ConfigError(f"eval.metrics: metric '{m.name}' is selected twice")
        seen.add(m.name)
        if m.tasks and task not in m.tasks:
            raise ConfigError(f"eval.metrics: metric '{m.name}' applies to task(s) {', '.join(m.tasks)}, not '{task}'")
    return metrics


def _tag_groups(records: list[dict[str, Any]], slicers: Any) -> dict[str, Sequence[int]]:
    """Without ``--slice-by``: one slice per value of every categorical tag key, to search for
    over-represented tag values among the hard examples."""
    keys = sorted({k for r in records for k in r["tags"]})
    keys = [k for k in keys
            if len({repr(r["tags"].get(k)) for r in records}) <= min(MAX_TAG_VALUES, max(len(records) // 2, 1))]
    if not keys or slicers is None:
        return {}
    try:
        _, plain = plain_slicer(slicers)
    except ConfigError:
        return {}
    groups: dict[str, Sequence[int]] = {}
    for key in keys:
        groups.update(plain.slices(records, [key]))
    return groups
