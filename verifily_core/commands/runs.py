"""``verifily runs``: the runs of an output directory (completed, ``.partial`` and ``.failed``)
with status, dataset version, start time and main metrics, newest first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from verifily_core.commands import format_option
from verifily_core.console import out
from verifily_core.errors import DataError

MAIN_TRAIN_METRICS = ("train_loss", "eval_loss")


def list_runs(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Every run directory under ``runs_dir`` with its ``run_meta.json`` summary, newest first.

    ``metrics`` holds the training metrics and, for evaluated runs, ``test_<metric>`` values.
    Unreadable run directories are listed with status ``unreadable``.
    :raises DataError: when ``runs_dir`` is not a directory.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise DataError(f"{runs_dir}: no such directory; pass --runs-dir (the output.dir of your configs)")
    rows = []
    for meta_path in sorted(root.glob("*/run_meta.json")):
        rows.append(_summary(meta_path))
    return sorted(rows, key=lambda r: r["started_at"] or "", reverse=True)


def _summary(meta_path: Path) -> dict[str, Any]:
    path = meta_path.parent
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"run_id": path.name, "name": None, "status": "unreadable", "path": str(path), "task": None,
                "dataset": None, "started_at": None, "metrics": {}, "error": "run_meta.json unreadable"}
    metrics = {k: v for k, v in (meta.get("metrics") or {}).items() if isinstance(v, (int, float))}
    evals = path / "eval" / "eval_results.json"
    if evals.is_file():
        try:
            doc = json.loads(evals.read_text(encoding="utf-8"))
            metrics.update({f"test_{k}": v.get("value") for k, v in (doc.get("overall") or {}).get("metrics", {}).items()})
        except (OSError, ValueError, AttributeError):
            pass
    dataset = meta.get("dataset") or {}
    return {"run_id": meta.get("run_id") or path.name, "name": meta.get("name"), "status": meta.get("status") or "unknown",
            "path": str(path), "task": meta.get("task"), "dataset": dataset.get("ref") or "data_paths",
            "started_at": meta.get("started_at"), "metrics": metrics, "error": meta.get("error")}


def _main_metrics(row: dict[str, Any], tasks: Any) -> str:
    """The training losses and the test values of the run's task's ``main_metrics``."""
    main = tasks.get(row["task"]).main_metrics if row["task"] in tasks else ()
    keys = [*MAIN_TRAIN_METRICS, *(f"test_{k}" for k in main)]
    return "  ".join(f"{k}={row['metrics'][k]:.4f}" for k in keys if isinstance(row["metrics"].get(k), (int, float)))


@click.command()
@click.option("--runs-dir", default="runs", show_default=True, help="Output directory holding run directories.")
@format_option()
def runs(runs_dir: str, fmt: str) -> None:
    """List runs (completed, .partial and .failed) with status, dataset version, start time and main metrics."""
    rows = list_runs(runs_dir)
    if fmt == "json":
        out(json.dumps(rows, indent=2))
        return
    if not rows:
        out(f"No runs in {runs_dir}.")
        return
    from verifily_core.plugins import load_registries

    tasks = load_registries().tasks
    name_w = max(len("run"), *(len(r["run_id"]) for r in rows))
    data_w = max(len("dataset"), *(len(r["dataset"] or "-") for r in rows))
    out(f"{'run':<{name_w}}  {'name':<16}  {'status':<10}  {'dataset':<{data_w}}  {'started':<20}  metrics")
    for r in rows:
        extra = f"  error: {r['error']}" if r["status"] == "failed" and r["error"] else ""
        out(f"{r['run_id']:<{name_w}}  {(r['name'] or '-')[:16]:<16}  {r['status']:<10}  {r['dataset'] or '-':<{data_w}}  "
            f"{r['started_at'] or '-':<20}  {_main_metrics(r, tasks)}{extra}".rstrip())
