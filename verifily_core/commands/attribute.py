"""``verifily attribute``: which training rows of a run helped or hurt a test slice."""

from __future__ import annotations

import json
from typing import Any

import click

from verifily_core.cli import GlobalState, verbose_option
from verifily_core.commands import format_option
from verifily_core.console import out


@click.command()
@click.option("--run", "run_path", required=True, help="Run directory (or run id under runs/).")
@click.option("--slice", "test_slice", metavar="TAG=VALUE",
              help="The test rows to explain, by tag (default: the whole test split).")
@click.option("--test-data", type=click.Path(dir_okay=False), help="A JSONL file instead of the dataset's test split.")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="Most harmful and most helpful rows to show.")
@click.option("--projection", type=click.IntRange(min=1), default=32, show_default=True,
              help="Random projection per side of each trained layer's gradient (more: finer, slower).")
@click.option("--damping", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Damping of the curvature, relative to its mean eigenvalue.")
@click.option("--method", type=click.Choice(["auto", "final", "ensemble", "tracin"]), default="auto", show_default=True,
              help="final: influence at the final model; ensemble: influence averaged over the snapshots the run "
                   "kept (training.attribution_checkpoints); tracin: TracIn over them; auto: ensemble when the run "
                   "kept snapshots, else final.")
@click.option("--objective", type=click.Choice(["margin", "loss"]), default="margin", show_default=True,
              help="What is explained of each test row: its negative log-odds of the reference, or its loss.")
@click.option("--validate", type=click.IntRange(min=1), metavar="K",
              help="Then retrain without the K most harmful rows (same config and seed, a derived dataset "
                   "version) and compare on the slice.")
@click.option("--leave-out", "leave_out_key", metavar="TAG",
              help="Instead of scoring rows: retrain once per value of TAG without its rows and compare each "
                   "with the run per slice.")
@click.option("--values", metavar="A,B", help="With --leave-out: only these values [default: all].")
@click.option("--max-steps", type=click.IntRange(min=1), help="With --leave-out: train each variant this many steps.")
@click.option("--fraction", type=click.FloatRange(min=0, max=1, min_open=True),
              help="With --leave-out: train each variant this fraction of the run's steps.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --leave-out: variants trained at once, each in its own `verifily train` process.")
@click.option("--store", type=click.Path(file_okay=False),
              help="Dataset store for derived versions [default: the run's].")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Rows per gradient pass [default: as many as a training batch's padded tokens "
                   "(training.batch_size x training.max_seq_length) hold, rows batched by length].")
@click.option("--device", default="auto", show_default=True, help="auto, cuda, cuda:0, mps or cpu.")
@click.option("--no-verify", is_flag=True, help="Skip checking the run's files against hashes.json.")
@format_option()
@verbose_option
@click.pass_obj
def attribute(state: GlobalState, run_path: str, test_slice: str | None, test_data: str | None, top: int,
              projection: int, damping: float, method: str, objective: str, validate: int | None,
              leave_out_key: str | None, values: str | None, max_steps: int | None, fraction: float | None,
              jobs: int, store: str | None, batch_size: int | None, device: str, no_verify: bool, fmt: str) -> None:
    """Score every training row by its influence on a test slice, and check claims by retraining.

    Writes eval/attribution/ in the run (row_scores.jsonl, by_tag.json, attribution.json, and
    validate.json or leave_out.json, sealed with the run's evaluation) and prints the per-tag
    summary and the most harmful and helpful rows. A negative score: training on the row made the
    slice worse. --validate and --leave-out train new runs beside the run (finished ones are reused).
    """
    from verifily_core import api

    if leave_out_key is not None:
        _leave_out(state, run_path, leave_out_key, values, test_slice, max_steps, fraction, jobs, store, fmt)
        return
    if values or max_steps or fraction or jobs > 1:
        raise click.UsageError("--values, --max-steps, --fraction and --jobs go with --leave-out")
    result = api.attribute(run_path, test_slice=test_slice, test_data=test_data, projection=projection,
                           damping=damping, batch_size=batch_size, device=device, hf_token=state.hf_token,
                           registries=state.registries, verify=not no_verify, method=method, objective=objective,
                           validate=validate, store=store)
    if fmt == "json":
        out(json.dumps({**result.settings, "summary": result.summary, "by_tag": result.by_tag,
                        "most_harmful": result.ranked(top), "most_helpful": result.ranked(top, harmful=False),
                        "validation": result.validation, "folder": str(result.folder)}, indent=2, ensure_ascii=False))
        return
    s = result.settings
    out(f"Influence of {s['train_rows']} training rows on {result.target} ({s['test_rows']} test rows), "
        f"{s['features']} gradient features, {s['seconds']:.1f}s")
    for line in result.summary:
        out(f"  {line}")
    for title, harmful in (("Most harmful", True), ("Most helpful", False)):
        out(f"{title} rows:")
        for r in result.ranked(top, harmful):
            out(f"  {r['score']:+.4g}  row {r['index']:<6} {_tags(r['tags']):<40} {r['reference']}")
    if result.validation:
        v = result.validation
        out(f"Retrained {v['label']} ({v['run_id']}{', reused' if v['reused'] else ''}):")
        for o in (v["target"], v["overall"]) if v["target"]["slice"] != "overall" else (v["overall"],):
            out(f"  {_outcome(v['metric'], o)}")
    out(f"Scores: {result.folder}")


def _leave_out(state: GlobalState, run_path: str, key: str, values: str | None, test_slice: str | None,
               max_steps: int | None, fraction: float | None, jobs: int, store: str | None, fmt: str) -> None:
    from verifily_core import api
    from verifily_core.console import note

    doc = api.leave_out(run_path, key, [v.strip() for v in values.split(",") if v.strip()] if values else None,
                        test_slice=test_slice, max_steps=max_steps, fraction=fraction, store=store,
                        hf_token=state.hf_token, registries=state.registries, jobs=jobs, progress=note)
    if fmt == "json":
        out(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    budget = f", {doc['max_steps']} steps each" if doc["max_steps"] else ""
    out(f"Leave-out by {key} against {doc['baseline']} ({doc['metric']}{budget}); * = 95% interval excludes 0")
    shown = {"overall", doc["target"]}
    for v in doc["variants"]:
        out(f"  {v['label']} ({v['removed_rows']} rows; {v['run_id']}{', reused' if v['reused'] else ''}):")
        for o in v["slices"]:  # the target and the left-out key's slices; every slice is in leave_out.json
            if o["slice"] in shown or o["slice"].startswith(f"{key}="):
                out(f"    {_outcome(doc['metric'], o)}")
    for w in doc["warnings"]:
        note(f"warning: {w}")


def _outcome(metric: str, o: dict[str, Any]) -> str:
    if o["delta"] is None:
        return f"{o['slice']:<28} not evaluated"
    ci = f" [{o['ci_low']:+.4f}, {o['ci_high']:+.4f}]" if o["ci_low"] is not None else ""
    return f"{o['slice']:<28} {metric} {o['value']:.4f}  delta {o['delta']:+.4f}{'*' if o['significant'] else ''}{ci}"


def _tags(tags: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(tags.items())) or "-"
