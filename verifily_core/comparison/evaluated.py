"""Evaluated runs as ``compare`` reads them: ``run_meta.json``, ``eval/eval_results.json`` and
``eval/predictions.jsonl``; the metric a ``--metric`` name means (the task's aliases) and the
slices a ``--slice-by`` spec selects."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import attrs

from verifily_core.errors import ConfigError, EvalError
from verifily_core.evaluation.result import EvalResult, SliceResult, load_eval_result
from verifily_core.interfaces import Task
from verifily_core.runs import STATUS_COMPLETED, Run, load_run
from verifily_core.slices import SliceSpec, parse_slice_by, parse_slice_spec


@attrs.define
class RunEval:
    """One completed run with its evaluation results (predictions are read on demand)."""

    run: Run
    result: EvalResult
    _records: list[dict[str, Any]] | None = attrs.field(default=None, init=False, repr=False)

    @property
    def run_id(self) -> str:
        """The run id."""
        return self.run.run_id

    @property
    def path(self) -> Path:
        """The run directory."""
        return self.run.path

    @property
    def label(self) -> str:
        """The run's name, or its id."""
        return self.run.name or self.run.run_id

    @property
    def task(self) -> str:
        """The task the run was trained and evaluated for."""
        return str(self.result.task or self.run.task)

    @property
    def dataset_ref(self) -> str:
        """``id@version``, or ``data_paths`` for runs trained from explicit files."""
        return self.run.dataset.get("ref") or "data_paths"

    @property
    def test_hash(self) -> str | None:
        """sha256 of the test file the run was evaluated on."""
        return (self.result.test_data or {}).get("sha256")

    def metric_names(self) -> list[str]:
        """The scalar metrics in the results."""
        return sorted(self.result.metric_values)

    def value(self, metric: str, slice_name: str | None = None) -> float | None:
        """A metric's value overall or on a slice, or ``None`` when absent."""
        block = self.result.slice_results.get(slice_name) if slice_name is not None else None
        values = self.result.metric_values if slice_name is None else (block.metrics if block else {})
        entry = values.get(metric)
        return None if entry is None else entry.value

    def slice_size(self, slice_name: str) -> int | None:
        """Rows in a slice, or ``None`` when the run has no such slice."""
        block = self.result.slice_results.get(slice_name)
        return None if block is None else block.n

    def records(self) -> list[dict[str, Any]] | None:
        """The rows of ``eval/predictions.jsonl`` (``None`` when the file is absent)."""
        if self._records is None:
            path = self.path / "eval" / "predictions.jsonl"
            if not path.is_file():
                return None
            from verifily_core.evaluation.result import read_jsonl

            self._records = read_jsonl(path)
        return self._records


READ_FILES = ("run_meta.json", "config.yaml")
"""The run files compare reads besides ``eval/``; with ``verify`` they are re-hashed."""


def load_run_eval(ref: str | Path, runs_dir: str | Path = "runs", verify: bool = True) -> RunEval:
    """A completed run (path or id under ``runs_dir``) and its ``eval/eval_results.json``.

    :param verify: first check the files compare reads against ``hashes.json`` and ``eval/``
        against its seal (see :func:`~verifily_core.reproduction.verify.require_intact`).
    :raises DataError: not a run directory. :raises EvalError: not completed, never evaluated,
        or (with ``verify``) it does not verify.
    """
    run = load_run(ref, search_dirs=(runs_dir,))
    if run.status != STATUS_COMPLETED:
        raise EvalError(f"{run.path}: run status is '{run.status}'; only completed, evaluated runs can be compared")
    if not (run.path / "eval" / "eval_results.json").is_file():
        raise EvalError(f"{run.path}: no evaluation results; run `verifily eval --run {run.path}` first")
    if verify:
        from verifily_core.reproduction.verify import require_intact

        require_intact(run, "compare it", files=READ_FILES, error=EvalError)
    return RunEval(run=run, result=load_eval_result(run.path / "eval"))


def common_task(runs: Sequence[RunEval]) -> str:
    """The task every run was trained for.

    :raises ConfigError: runs of different tasks.
    """
    tasks = sorted({r.task for r in runs})
    if len(tasks) > 1:
        raise ConfigError(f"--runs: the runs are for different tasks ({' vs '.join(tasks)}); compare runs of one task")
    return tasks[0]


def resolve_metric(name: str, runs: Sequence[RunEval], task: Task | None) -> str:
    """Map an alias (``main``, ``f1``) to the metric it means for the runs' task (see
    :meth:`Task.resolve_metric_alias`) and check every run has it.

    :param task: the runs' task plugin (``None`` when it is not installed: no aliases).
    :raises ConfigError: runs of different tasks, or a metric some run lacks (the metrics
        every run has are listed).
    """
    task_name = common_task(runs)
    metric = task.resolve_metric_alias(name) if task is not None else name
    for r in runs:
        if metric not in r.metric_names():
            common = sorted(set.intersection(*(set(x.metric_names()) for x in runs)))
            alias = f" ('{name}' means '{metric}' for {task_name})" if metric != name else ""
            main = task.resolve_metric_alias("main") if task is not None and task.main_metrics else None
            hint = f" (--metric main is {main})" if main in common and main != metric else ""
            raise ConfigError(f"--metric {name}: '{metric}'{alias} is not in the results of {r.label}; "
                              f"available in every run: {', '.join(common) or 'none'}{hint}")
    return metric


def select_slices(runs: Sequence[RunEval], slice_by: str | Sequence[str]) -> dict[str, list[str]]:
    """``{spec: slice names}``: for each spec of a ``--slice-by`` list (``source,difficulty``,
    ``source&difficulty``, ``length:reference``), the slices it selects in the runs' results, in
    the first run's order.

    :raises ConfigError: a spec no run has slices for; the specs the runs were sliced by are
        named, and the advice depends on whether the runs were sliced by it at all.
    """
    groups: dict[str, list[str]] = {}
    for spec in parse_slice_by(slice_by):
        names: list[str] = []
        for r in runs:
            for name, block in r.result.slice_results.items():
                if name not in names and _selected(block, spec):
                    names.append(name)
        if not names:
            done = sorted({s for r in runs for s in r.result.slice_by})
            sliced = [r.label for r in runs if any(_same_spec(s, spec) for s in r.result.slice_by)]
            advice = (f"{', '.join(sliced)} {'was' if len(sliced) == 1 else 'were'} sliced by it, but no test row "
                      "carries the tag" if sliced else
                      f"evaluate with `verifily eval --run R --slice-by {spec.text}`")
            raise ConfigError(f"--slice-by {spec.text}: the runs' results have no such slices (they were sliced by: "
                              f"{', '.join(done) or 'nothing'}); {advice}")
        groups[spec.text] = names
    return groups


def _same_spec(text: str, spec: SliceSpec) -> bool:
    try:
        return parse_slice_spec(text).same_slices(spec)
    except ConfigError:
        return False


def _selected(block: SliceResult, spec: SliceSpec) -> bool:
    return _same_spec(block.spec, spec)
