"""``compare()``: a metric across runs, deltas against the first run, per tag slice, with
paired bootstrap intervals and the training-data changes between dataset versions.

Reads only run directories (``run_meta.json``, ``config.yaml``, ``eval/eval_results.json``,
``eval/predictions.jsonl``) and dataset manifests: it never imports torch. See
``docs/compare-reproduce.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from verifily_core.comparison.evaluated import (
    RunEval, common_task, load_run_eval, resolve_metric, select_slices,
)
from verifily_core.comparison.result import NOTE, OVERALL, CompareResult
from verifily_core.errors import ConfigError

__all__ = ["NOTE", "CompareResult", "RunEval", "compare", "load_run_eval"]

# Not named ``verifily_core/compare.py``: a submodule of that name would shadow the public
# ``verifily_core.compare`` function once imported.


def compare(
    run_paths: Sequence[str | Path],
    metric: str = "f1",
    slice_by: str | None = None,
    runs_dir: str | Path = "runs",
    confidence_level: float = 0.95,
    resamples: int = 1000,
    seed: int = 42,
    data_changes: bool = True,
    *,
    registries: Any,
    verify: bool = True,
) -> CompareResult:
    """Compare ``metric`` across runs (paths or run ids under ``runs_dir``); the first is the baseline.

    :param metric: a metric of the runs' ``eval_results.json``, or an alias the runs' task
        declares (``main``: its first main metric; ``f1``: ``token_f1`` for SFT, ``macro_f1`` for
        classification).
    :param slice_by: slice specs of the evaluation, comma-separated as in ``verifily eval``
        (``source``, ``source,difficulty``, ``source&difficulty``, ...).
    :param confidence_level: ``resamples`` and ``seed`` set the paired bootstrap of each delta,
        computed when the runs were evaluated on the same test file (else only on the rows they share).
    :param data_changes: diff the training data of differing dataset versions (needs the store).
    :param verify: refuse a run whose ``run_meta.json``, ``config.yaml`` or sealed ``eval/``
        files no longer match their hashes (``False`` skips the check and says so in the warnings).
    :raises ConfigError: fewer than two runs, runs of different tasks, unknown metric or slices.
    :raises EvalError: a run that is not completed, has no evaluation results or does not verify.
    """
    if len(run_paths) < 2:
        raise ConfigError("--runs: give at least two runs, separated by commas")
    runs = [load_run_eval(r, runs_dir, verify=verify) for r in run_paths]
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"--runs: a run is given twice ({', '.join(ids)})")
    task_name = common_task(runs)
    task = registries.tasks.get(task_name) if task_name in registries.tasks else None
    name = resolve_metric(metric, runs, task)
    base = runs[0]
    groups = select_slices(runs, slice_by) if slice_by else {}
    slice_names = list(dict.fromkeys(n for names in groups.values() for n in names))
    result = CompareResult(
        runs=ids, metric=name, requested_metric=metric, slice_by=slice_by, slice_groups=groups, task=base.task,
        overall={r.run_id: r.value(name) for r in runs},
        deltas={r.run_id: _delta(r.value(name), base.value(name)) for r in runs},
        slices={s: {r.run_id: r.value(name, s) for r in runs} for s in slice_names} if slice_by else None,
        slice_deltas={s: {r.run_id: _delta(r.value(name, s), base.value(name, s)) for r in runs} for s in slice_names},
        slice_sizes={OVERALL: {r.run_id: r.result.num_examples for r in runs},
                     **{s: {r.run_id: r.slice_size(s) for r in runs} for s in slice_names}},
        labels={r.run_id: r.label for r in runs}, datasets={r.run_id: r.dataset_ref for r in runs},
        test_sets={r.run_id: r.test_hash for r in runs},
        higher_is_better=bool(base.result.higher_is_better.get(name, True)),
        confidence={"method": "paired percentile bootstrap", "level": confidence_level, "resamples": resamples,
                    "seed": seed},
    )
    if not verify:
        result.warnings.append("--no-verify: the runs' hashes were not checked, so these numbers may have been edited")
    settings = {json.dumps(r.result.metric_settings.get(name) or {}, sort_keys=True) for r in runs}
    if len(settings) > 1:
        result.warnings.append(f"the runs measured {name} with different settings "
                               f"({' vs '.join(sorted(settings))}): the values are not comparable")
    hashes = set(result.test_sets.values())
    result.same_test_set = len(hashes) == 1 and None not in hashes
    if not result.same_test_set:
        result.warnings.append("the runs were evaluated on DIFFERENT test sets (test file sha256 differs): "
                               "deltas are not like-for-like; intervals cover only the test rows both runs share")
    if task is None:
        result.warnings.append(f"task '{task_name}' is not installed here: no metric aliases, and metrics that "
                               "need the task's run files have no confidence interval")
    metric_kwargs = task.eval_metric_kwargs(base.path) if task is not None else {}
    _add_intervals_and_changes(result, runs, data_changes, registries, metric_kwargs)
    from verifily_core.comparison.interpret import interpret

    result.interpretation = interpret(result)
    return result


def _delta(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else value - base


def _add_intervals_and_changes(result: CompareResult, runs: list[RunEval], data_changes: bool, registries: Any, metric_kwargs: dict[str, Any]) -> None:
    from verifily_core.comparison.data_changes import training_data_changes
    from verifily_core.comparison.significance import paired_intervals

    base, conf = runs[0], result.confidence
    for other in runs[1:]:
        intervals, warnings = paired_intervals(base, other, result.metric, result.slice_names,
                                               level=conf["level"], resamples=conf["resamples"], seed=conf["seed"],
                                               registries=registries, metric_kwargs=metric_kwargs)
        if intervals:
            result.intervals[other.run_id] = intervals
        result.warnings += [w for w in warnings if w not in result.warnings]
        if data_changes:
            changes, warning = training_data_changes(base, other, registries)
            if changes:
                result.data_changes[other.run_id] = changes
            if warning:
                result.warnings.append(warning)
