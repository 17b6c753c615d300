"""``compare()``: metric deltas across runs, per tag slice, with paired bootstrap intervals.

Reads only run directories (``run_meta.json``, ``eval/eval_results.json``,
``eval/predictions.jsonl``) and dataset manifests: it never imports torch, so it answers in
a fraction of a second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import attrs

from verifily_core.errors import ConfigError, EvalError
from verifily_core.runs import Run, load_run

F1_ALIASES = {"sft": "token_f1", "classification": "macro_f1"}
NOTE = "Note: Correlation, not causation."


@attrs.define
class RunEval:
    """One run with its evaluation results."""

    run: Run
    results: dict[str, Any]
    path: Path

    @property
    def label(self) -> str:
        """The run's name, or its id."""
        return self.run.name or self.run.run_id

    @property
    def dataset_ref(self) -> str:
        """``id@version``, or ``data_paths`` for runs trained from explicit files."""
        return self.run.dataset.get("ref") or "data_paths"

    def value(self, metric: str, slice_name: str | None = None) -> float | None:
        """A metric's value overall or on a slice, or ``None`` when absent."""
        block = self.results["overall"] if slice_name is None else self.results.get("slices", {}).get(slice_name)
        entry = (block or {}).get("metrics", {}).get(metric)
        return None if entry is None else entry["value"]

    def per_example(self, metric: str) -> dict[str, list[float]] | None:
        """Per-row values of a metric keyed by row id (from predictions.jsonl), when recorded."""
        path = self.path / "eval" / "predictions.jsonl"
        if not path.is_file():
            return None
        out: dict[str, list[float]] = {}
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                value = rec.get("scores", {}).get(metric)
                if value is None:
                    return None
                out.setdefault(rec["row_id"], []).append(float(value))
        return out


@attrs.define
class CompareResult:
    """Per-run values and deltas against the first run, overall and per slice.

    ``intervals[run_id][slice or "overall"]`` holds the paired bootstrap CI of the delta
    (``low``, ``high``, ``significant``) when the runs share a test set.
    """

    runs: list[str]
    metric: str
    overall: dict[str, float | None]
    deltas: dict[str, float | None]
    slices: dict[str, dict[str, float | None]] | None
    slice_deltas: dict[str, dict[str, float | None]] = attrs.field(factory=dict)
    intervals: dict[str, dict[str, dict[str, Any]]] = attrs.field(factory=dict)
    labels: dict[str, str] = attrs.field(factory=dict)
    datasets: dict[str, str] = attrs.field(factory=dict)
    same_test_set: bool = True
    higher_is_better: bool = True
    data_changes: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    interpretation: list[str] = attrs.field(factory=list)
    warnings: list[str] = attrs.field(factory=list)

    def to_json_dict(self) -> dict[str, Any]:
        """Plain data for ``--format json``."""
        return attrs.asdict(self)


def load_run_eval(ref: str, runs_dir: str | Path = "runs") -> RunEval:
    """A run and its ``eval/eval_results.json``; EvalError when it was never evaluated."""
    run = load_run(ref, search_dirs=(runs_dir,))
    path = run.path / "eval" / "eval_results.json"
    if not path.is_file():
        raise EvalError(f"{run.path}: no evaluation results; run `verifily eval --run {run.path}` first")
    return RunEval(run=run, results=json.loads(path.read_text(encoding="utf-8")), path=run.path)


def resolve_metric(name: str, runs: Sequence[RunEval]) -> str:
    """Map ``f1`` to the task's main F1 metric and check every run has the metric."""
    task = runs[0].results.get("task", runs[0].run.task)
    metric = F1_ALIASES.get(task, name) if name == "f1" else name
    for r in runs:
        if metric not in r.results["overall"]["metrics"]:
            available = ", ".join(sorted(r.results["overall"]["metrics"]))
            raise ConfigError(f"metric '{metric}' is not in the results of {r.label}; available: {available}")
    return metric


def compare(run_paths: Sequence[str], metric: str = "f1", slice_by: str | None = None,
            runs_dir: str | Path = "runs", confidence_level: float = 0.95, resamples: int = 1000,
            seed: int = 42) -> CompareResult:
    """Compare ``metric`` across runs (deltas against the first), optionally per ``slice_by`` tag key."""
    if len(run_paths) < 2:
        raise ConfigError("--runs: give at least two runs, separated by commas")
    runs = [load_run_eval(r, runs_dir) for r in run_paths]
    metric = resolve_metric(metric, runs)
    base = runs[0]
    hib = base.results.get("higher_is_better", {}).get(metric, True)
    hashes = {r.results.get("test_data", {}).get("sha256") for r in runs}
    result = CompareResult(
        runs=[r.run.run_id for r in runs], metric=metric, overall={}, deltas={}, slices=None,
        labels={r.run.run_id: r.label for r in runs}, datasets={r.run.run_id: r.dataset_ref for r in runs},
        same_test_set=len(hashes) == 1 and None not in hashes, higher_is_better=hib,
    )
    slice_names = _slice_names(runs, slice_by)
    if slice_by is not None:
        result.slices = {s: {} for s in slice_names}
        result.slice_deltas = {s: {} for s in slice_names}
    for r in runs:
        rid = r.run.run_id
        result.overall[rid] = r.value(metric)
        result.deltas[rid] = _delta(r.value(metric), base.value(metric))
        for s in slice_names:
            result.slices[s][rid] = r.value(metric, s)  # type: ignore[index]
            result.slice_deltas[s][rid] = _delta(r.value(metric, s), base.value(metric, s))
    if not result.same_test_set:
        result.warnings.append("WARNING: the runs were evaluated on DIFFERENT test sets; deltas compare "
                               "different data and carry no significance test")
    else:
        _add_intervals(result, runs, slice_names, confidence_level, resamples, seed)
    _add_data_changes(result, runs)
    result.interpretation = interpret(result)
    return result


def _slice_names(runs: Sequence[RunEval], slice_by: str | None) -> list[str]:
    if slice_by is None:
        return []
    prefix = f"{slice_by}="
    names = sorted({s for r in runs for s in r.results.get("slices", {}) if s.startswith(prefix) and "&" not in s})
    if not names:
        raise ConfigError(f"--slice-by {slice_by}: no such slices in the results; evaluate with "
                          f"`verifily eval --slice-by {slice_by}` first")
    return names


def _delta(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else value - base


def _add_intervals(result: CompareResult, runs: Sequence[RunEval], slice_names: list[str],
                   level: float, resamples: int, seed: int) -> None:
    from verifily_core.stats import paired_bootstrap_ci

    base = runs[0]
    base_values = base.per_example(result.metric)
    if base_values is None:
        result.warnings.append(f"no per-example values of {result.metric} in predictions.jsonl; "
                               "deltas are shown without confidence intervals")
        return
    base_rows = _rows_by_slice(base)
    for r in runs[1:]:
        values = r.per_example(result.metric)
        if values is None:
            continue
        ids = [k for k in base_values if k in values]
        intervals = {"overall": paired_bootstrap_ci(_flat(base_values, ids), _flat(values, ids), level, resamples, seed)}
        for s in slice_names:
            sid = [k for k in ids if k in base_rows.get(s, set())]
            if sid:
                intervals[s] = paired_bootstrap_ci(_flat(base_values, sid), _flat(values, sid), level, resamples, seed)
        result.intervals[r.run.run_id] = intervals


def _flat(values: dict[str, list[float]], ids: list[str]) -> list[float]:
    return [sum(values[k]) / len(values[k]) for k in ids]


def _rows_by_slice(r: RunEval) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    with open(r.path / "eval" / "predictions.jsonl", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            for k, v in (rec.get("tags") or {}).items():
                out.setdefault(f"{k}={v}", set()).add(rec["row_id"])
    return out


def _add_data_changes(result: CompareResult, runs: Sequence[RunEval]) -> None:
    base = runs[0]
    for r in runs[1:]:
        if r.dataset_ref == base.dataset_ref or "data_paths" in (r.dataset_ref, base.dataset_ref):
            continue
        try:
            from verifily_core.datasets import DatasetStore, diff_versions, store_path
            from verifily_core.plugins import load_registries

            from verifily_core.config import TrainConfig

            cfg = TrainConfig.from_yaml(r.path / "config.yaml")
            store = DatasetStore(store_path(None, cfg.dataset_store))
            a, b = store.get(base.dataset_ref), store.get(r.dataset_ref)
            fields = load_registries().tasks.get(base.run.task).input_fields()
            diff = diff_versions(a, b, fields)
            result.data_changes[r.run.run_id] = diff["by_tag"].get("train", {})
        except Exception as exc:  # the store may not hold the versions any more
            result.warnings.append(f"training-data changes {base.dataset_ref} -> {r.dataset_ref} unavailable ({exc})")


def _points(delta: float) -> str:
    return f"{delta * 100:+.2f} points"


def interpret(result: CompareResult) -> list[str]:
    """Plain-language lines computed from the numbers (never canned)."""
    lines: list[str] = []
    better = 1 if result.higher_is_better else -1
    for rid in result.runs[1:]:
        label = result.labels[rid]
        d = result.deltas[rid]
        if d is None:
            continue
        ci = result.intervals.get(rid, {}).get("overall")
        sig = "" if ci is None else (" (significant)" if ci["significant"] else " (within noise)")
        verb = "improved" if d * better > 0 else "decreased" if d != 0 else "did not change"
        lines.append(f"{label}: overall {result.metric} {verb} by {_points(d)}{sig}.")
        if result.slices:
            ranked = sorted(((s, v[rid]) for s, v in result.slice_deltas.items() if v.get(rid) is not None),
                            key=lambda x: x[1] * better, reverse=True)
            if ranked:
                s, v = ranked[0]
                if v * better > 0:
                    lines.append(f"  {s} slice improved most ({_points(v)}).")
                s, v = ranked[-1]
                if v * better < 0:
                    lines.append(f"  {s} slice decreased most ({_points(v)}).")
    lines.append(NOTE)
    return lines
