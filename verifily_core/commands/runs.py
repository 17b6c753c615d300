"""``verifily runs``: the runs in an output directory, with status, dataset and main metrics."""

from __future__ import annotations

import json
from pathlib import Path

import click

from verifily_core.console import out


def list_runs(runs_dir: str | Path) -> list[dict]:
    """Every run directory (completed, .partial, .failed) with its run_meta summary, newest first."""
    rows = []
    for meta_path in Path(runs_dir).glob("*/run_meta.json"):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        evals = meta_path.parent / "eval" / "eval_results.json"
        overall = {}
        if evals.is_file():
            doc = json.loads(evals.read_text(encoding="utf-8"))
            overall = {k: v["value"] for k, v in doc.get("overall", {}).get("metrics", {}).items()}
        rows.append({"run_id": meta.get("run_id"), "name": meta.get("name"), "status": meta.get("status"),
                     "path": str(meta_path.parent), "dataset": (meta.get("dataset") or {}).get("ref") or "data_paths",
                     "started_at": meta.get("started_at"), "metrics": {**meta.get("metrics", {}), **overall}})
    return sorted(rows, key=lambda r: r["started_at"] or "", reverse=True)


@click.command()
@click.option("--runs-dir", default="runs", show_default=True, help="Output directory holding run directories.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def runs(runs_dir: str, fmt: str) -> None:
    """List runs with status, dataset version and main metrics."""
    rows = list_runs(runs_dir)
    if fmt == "json":
        out(json.dumps(rows, indent=2))
        return
    if not rows:
        out(f"No runs in {runs_dir}.")
        return
    out(f"{'run':<30} {'status':<10} {'dataset':<16} {'started':<21} metrics")
    for r in rows:
        keys = [k for k in ("train_loss", "eval_loss", "token_f1", "exact_match", "accuracy", "macro_f1") if k in r["metrics"]]
        metrics = "  ".join(f"{k}={r['metrics'][k]:.4f}" for k in keys if isinstance(r["metrics"][k], (int, float)))
        out(f"{(r['name'] or r['run_id']):<30} {r['status']:<10} {r['dataset']:<16} {r['started_at'] or '':<21} {metrics}")
