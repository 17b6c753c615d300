"""``verifily runs``: the runs of an output directory (completed, ``.partial`` and ``.failed``)
with status, dataset version, start time and main metrics, newest first."""

from __future__ import annotations

import json
from typing import Any

import click

from verifily_core.cli import GlobalState
from verifily_core.commands import format_option
from verifily_core.console import out

MAIN_TRAIN_METRICS = ("train_loss", "eval_loss")


def _main_metrics(row: dict[str, Any]) -> str:
    """The training losses and the test values of the run's task's main metrics."""
    keys = [*MAIN_TRAIN_METRICS, *row["main_metrics"]]
    return "  ".join(f"{k}={row['metrics'][k]:.4f}" for k in keys if isinstance(row["metrics"].get(k), (int, float)))


@click.command()
@click.option("--runs-dir", default="runs", show_default=True, help="Output directory holding run directories.")
@format_option()
@click.pass_obj
def runs(state: GlobalState, runs_dir: str, fmt: str) -> None:
    """List runs (completed, .partial and .failed) with status, dataset version, start time and main metrics."""
    from verifily_core.api import list_runs

    rows = list_runs(runs_dir, registries=state.registries)
    if fmt == "json":
        out(json.dumps(rows, indent=2))
        return
    if not rows:
        out(f"No runs in {runs_dir}.")
        return
    name_w = max(len("run"), *(len(r["run_id"]) for r in rows))
    data_w = max(len("dataset"), *(len(r["dataset"] or "-") for r in rows))
    out(f"{'run':<{name_w}}  {'name':<16}  {'status':<10}  {'dataset':<{data_w}}  {'started':<20}  metrics")
    for r in rows:
        extra = f"  error: {r['error']}" if r["status"] == "failed" and r["error"] else ""
        out(f"{r['run_id']:<{name_w}}  {(r['name'] or '-')[:16]:<16}  {r['status']:<10}  {r['dataset'] or '-':<{data_w}}  "
            f"{r['started_at'] or '-':<20}  {_main_metrics(r)}{extra}".rstrip())
