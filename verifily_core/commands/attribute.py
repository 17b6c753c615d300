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
@click.option("--projection", type=click.IntRange(min=1), default=16, show_default=True,
              help="Random projection per side of each trained layer's gradient (more: finer, slower).")
@click.option("--damping", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              help="Damping of the curvature, relative to its mean eigenvalue.")
@click.option("--method", type=click.Choice(["final", "tracin"]), default="final", show_default=True,
              help="final: influence at the final model; tracin: over the snapshots the run kept "
                   "(training.attribution_checkpoints).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Rows per gradient pass [default: eval.batch_size].")
@click.option("--device", default="auto", show_default=True, help="auto, cuda, cuda:0, mps or cpu.")
@click.option("--no-verify", is_flag=True, help="Skip checking the run's files against hashes.json.")
@format_option()
@verbose_option
@click.pass_obj
def attribute(state: GlobalState, run_path: str, test_slice: str | None, test_data: str | None, top: int,
              projection: int, damping: float, method: str, batch_size: int | None, device: str,
              no_verify: bool, fmt: str) -> None:
    """Score every training row by its influence on the loss of a test slice.

    Writes eval/attribution/ in the run (row_scores.jsonl, by_tag.json, attribution.json, sealed
    with the run's evaluation) and prints the per-tag summary and the most harmful and helpful
    rows. A negative score: training on the row raised the slice's loss.
    """
    from verifily_core.api import attribute as do_attribute

    result = do_attribute(run_path, test_slice=test_slice, test_data=test_data, projection=projection,
                          damping=damping, batch_size=batch_size, device=device, hf_token=state.hf_token,
                          registries=state.registries, verify=not no_verify, method=method)
    if fmt == "json":
        out(json.dumps({**result.settings, "summary": result.summary, "by_tag": result.by_tag,
                        "most_harmful": result.ranked(top), "most_helpful": result.ranked(top, harmful=False),
                        "folder": str(result.folder)}, indent=2, ensure_ascii=False))
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
    out(f"Scores: {result.folder}")


def _tags(tags: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(tags.items())) or "-"
