"""What ``verifily report`` shows, read from evaluated runs: the numbers of each run's
``eval/`` files and ``train_log.jsonl``, and for several runs the comparison of
:func:`verifily_core.comparison.compare_runs.compare` (deltas, paired intervals, training-data
changes), computed exactly as ``verifily compare`` computes it. Imports no torch or NumPy."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import attrs

from verifily_core import files
from verifily_core.comparison.evaluated import RunEval, load_run_eval, resolve_metric, select_slices
from verifily_core.comparison.result import OVERALL, CompareResult
from verifily_core.errors import ConfigError, EvalError
from verifily_core.evaluation.result import MetricValue

HARD_SHOWN = 10
"""Hard examples shown per run (the worst first)."""
ATTRIBUTION_SHOWN = 5
"""Most harmful and most helpful training rows shown per run."""
TRAIN_LOG = "train_log.jsonl"
TRAIN_LOSS, VAL_LOSS = "loss", "eval_loss"
"""The fields of ``train_log.jsonl`` lines that hold the training and the validation loss."""
OTHER = "<other>"


@attrs.define
class RunReport:
    """One run as the report shows it."""

    run_id: str
    label: str
    dataset: str
    task: str
    base_model: str
    metrics: dict[str, MetricValue]
    slices: dict[str, dict[str, Any]]
    train_loss: list[tuple[float, float]]
    val_loss: list[tuple[float, float]]
    confusion: dict[str, Any] | None
    hard_examples: list[dict[str, Any]]
    hard_score: str | None
    attribution: dict[str, Any] | None
    higher_is_better: dict[str, bool]

    def value(self, metric: str, slice_name: str = OVERALL) -> MetricValue | None:
        """A metric's value with its interval, overall or on a slice (``None`` when absent)."""
        if slice_name == OVERALL:
            return self.metrics.get(metric)
        block = self.slices.get(slice_name)
        return None if block is None else block["metrics"].get(metric)


@attrs.define
class ReportData:
    """Everything the report renders: the runs, the primary metric, the slices (in order) and,
    for two runs or more, the :class:`CompareResult` (``None`` for one run)."""

    runs: list[RunReport]
    metric: str
    slice_names: list[str]
    comparison: CompareResult | None
    warnings: list[str] = attrs.field(factory=list)


def gather(run_refs: Sequence[str | Path], *, registries: Any, metric: str = "main", slice_by: str | None = None,
           runs_dir: str | Path = "runs", verify: bool = True, resamples: int = 1000,
           confidence_level: float = 0.95) -> ReportData:
    """Read the runs (paths or ids under ``runs_dir``) for a report.

    :param metric: the primary metric, or an alias of the runs' task (``main``, ``f1``).
    :param slice_by: slice specs as in ``verifily compare`` (default: every spec the runs were sliced by).
    :param verify: check each run's ``run_meta.json``, ``config.yaml``, ``train_log.jsonl`` and sealed
        ``eval/`` against its hashes first (as ``verifily compare`` does).
    :raises ConfigError: no run, a run given twice, runs of different tasks, an unknown metric or slice.
    :raises EvalError: a run that is not completed, not evaluated, or does not verify.
    """
    refs = [str(r) for r in run_refs]
    if not refs:
        raise ConfigError("--runs: give at least one run")
    evals = [load_run_eval(r, runs_dir, verify=verify) for r in refs]
    ids = [r.run_id for r in evals]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"--runs: a run is given twice ({', '.join(ids)})")
    if verify:
        from verifily_core.reproduction.verify import require_intact

        for r in evals:
            if (r.path / TRAIN_LOG).is_file():
                require_intact(r.run, "report on it", files=(TRAIN_LOG,), eval_files=False, error=EvalError)
    task_name = evals[0].task
    task = registries.tasks.get(task_name) if task_name in registries.tasks else None
    name = resolve_metric(metric, evals, task)  # raises ConfigError for runs of different tasks
    specs = slice_by or ",".join(dict.fromkeys(s for r in evals for s in r.result.slice_by)) or None
    groups = select_slices(evals, specs) if specs else {}
    slice_names = list(dict.fromkeys(n for names in groups.values() for n in names))
    comparison = None
    if len(evals) > 1:
        from verifily_core.comparison.compare_runs import compare

        comparison = compare(refs, metric=metric, slice_by=specs, runs_dir=runs_dir, confidence_level=confidence_level,
                             resamples=resamples, registries=registries, verify=verify)
    labels_known = bool(task is not None and task.label_predictions)
    return ReportData(runs=[_run_report(r, labels_known) for r in evals], metric=name, slice_names=slice_names,
                      comparison=comparison)


def _run_report(r: RunEval, labels_known: bool) -> RunReport:
    res = r.result
    train, val = loss_curves(r.path / TRAIN_LOG)
    return RunReport(
        run_id=r.run_id, label=r.label, dataset=r.dataset_ref, task=r.task, base_model=str(r.run.base_model),
        metrics=dict(res.metric_values),
        slices={name: {"n": s.n, "small": s.small, "spec": s.spec, "metrics": dict(s.metrics)}
                for name, s in res.slice_results.items()},
        train_loss=train, val_loss=val, confusion=confusion_matrix(res.details, r.records() if labels_known else None),
        hard_examples=res.hard_examples[:HARD_SHOWN], hard_score=res.hard_score,
        attribution=read_attribution(r.path / "eval" / "attribution"), higher_is_better=dict(res.higher_is_better),
    )


def loss_curves(path: Path) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """``(train, val)``: ``(step, loss)`` of every logging line and ``(step, eval_loss)`` of every
    validation line of a ``train_log.jsonl`` (both empty when the file is absent)."""
    if not path.is_file():
        return [], []
    train: list[tuple[float, float]] = []
    val: list[tuple[float, float]] = []
    for _, row in files.read_jsonl(path, error=EvalError):
        step = row.get("step")
        if not _number(step):
            continue
        for key, points in ((TRAIN_LOSS, train), (VAL_LOSS, val)):
            if _number(row.get(key)):
                points.append((float(step), float(row[key])))
    return train, val


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
        and value not in (float("inf"), float("-inf"))


def confusion_matrix(details: dict[str, Any], records: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The evaluation's confusion matrix (a ``details`` entry of the documented shape: ``labels``,
    ``columns``, ``matrix``), else one counted from the saved predictions when ``records`` are
    given (runs of a task whose predictions are labels), else ``None``. Rows are true labels,
    columns predicted ones; ``source`` says where it came from."""
    for value in details.values():
        if isinstance(value, dict) and isinstance(value.get("matrix"), list) and isinstance(value.get("labels"), list):
            return {"labels": [str(x) for x in value["labels"]],
                    "columns": [str(x) for x in value.get("columns") or value["labels"]],
                    "matrix": value["matrix"], "source": "eval_results.json"}
    if not records:
        return None
    pairs = [(str(r.get("reference")), str(r.get("prediction"))) for r in records
             if not r.get("gold") and r.get("reference") is not None]
    if not pairs:
        return None
    labels = sorted({ref for ref, _ in pairs})
    columns = labels + ([OTHER] if any(p not in labels for _, p in pairs) else [])
    matrix = [[0] * len(columns) for _ in labels]
    for ref, pred in pairs:
        matrix[labels.index(ref)][columns.index(pred if pred in labels else OTHER)] += 1
    return {"labels": labels, "columns": columns, "matrix": matrix, "source": "predictions.jsonl"}


def read_attribution(folder: Path) -> dict[str, Any] | None:
    """``eval/attribution/`` of ``verifily attribute``: ``settings`` and ``summary`` lines
    (``attribution.json``), ``by_tag`` (``by_tag.json``), the most ``harmful`` and ``helpful``
    rows of ``row_scores.jsonl``, and the retraining checks ``validate`` and ``leave_out``
    (``None`` when not run); ``None`` when the run has none of these."""
    summary_path = folder / "attribution.json"
    checks = {name: folder / f"{name}.json" for name in ("validate", "leave_out")}
    if not summary_path.is_file() and not any(p.is_file() for p in checks.values()):
        return None
    try:
        settings = files.read_json(summary_path) if summary_path.is_file() else {}
        by_tag = files.read_json(folder / "by_tag.json") if (folder / "by_tag.json").is_file() else {}
        found = {name: files.read_json(p) if p.is_file() else None for name, p in checks.items()}
    except (OSError, ValueError) as exc:
        raise EvalError(f"{folder}: unreadable attribution files ({exc}); re-run `verifily attribute`") from None
    rows_path = folder / "row_scores.jsonl"
    rows = [row for _, row in files.read_jsonl(rows_path, error=EvalError)] if rows_path.is_file() else []
    rows = [r for r in rows if _number(r.get("score"))]
    summary = settings.pop("summary", []) if isinstance(settings, dict) else []
    return {"settings": settings if isinstance(settings, dict) else {}, "summary": list(summary or []),
            "by_tag": by_tag if isinstance(by_tag, dict) else {},
            "harmful": sorted(rows, key=lambda r: r["score"])[:ATTRIBUTION_SHOWN],
            "helpful": sorted(rows, key=lambda r: -r["score"])[:ATTRIBUTION_SHOWN],
            **{name: doc if isinstance(doc, dict) else None for name, doc in found.items()}}
