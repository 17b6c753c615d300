"""``verifily compare``: what changed between runs, overall and per tag slice."""

from __future__ import annotations

from pathlib import Path

import click

from verifily_core.cli import GlobalState, verbose_option
from verifily_core.commands import format_option
from verifily_core.console import out
from verifily_core.files import write_text


@click.command()
@click.option("--runs", "runs", required=True, help="Comma-separated run paths or run ids; the first is the baseline.")
@click.option("--metric", default="f1", show_default=True,
              help="Metric to compare, or an alias of the runs' task: 'main' is its main metric, 'f1' its main F1.")
@click.option("--slice-by", help="Comma-separated slice specs of the evaluation to break the comparison down by, "
                                "as in `verifily eval` (e.g. source,difficulty or source&difficulty); a table each.")
@format_option("table", "json", "csv", help="table for people; json or csv for programs and spreadsheets.")
@click.option("--output", type=click.Path(dir_okay=False), help="Write to this file instead of stdout.")
@click.option("--runs-dir", default="runs", show_default=True, help="Where run ids are looked up.")
@click.option("--confidence-level", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
              show_default=True, help="Level of the paired bootstrap interval of each delta.")
@click.option("--resamples", type=click.IntRange(0), default=1000, show_default=True,
              help="Paired bootstrap resamples (0: no intervals).")
@click.option("--no-data-changes", is_flag=True, help="Skip the training-data diff between dataset versions.")
@click.option("--no-verify", is_flag=True,
              help="Skip checking each run's run_meta.json, config.yaml and eval/ files against its hashes "
                   "(edited numbers then go unnoticed).")
@verbose_option
@click.pass_obj
def compare(state: GlobalState, runs: str, metric: str, slice_by: str | None, fmt: str, output: str | None, runs_dir: str,
            confidence_level: float, resamples: int, no_data_changes: bool, no_verify: bool) -> None:
    """Compare a metric across runs (e.g. trained on different dataset versions).

    Deltas are against the first run. When the runs were evaluated on the same test file,
    each delta gets a paired bootstrap interval; '*' marks deltas whose interval excludes 0.
    """
    from verifily_core.api import compare as do_compare
    from verifily_core.comparison.render import to_csv, to_json, to_table

    result = do_compare([r.strip() for r in runs.split(",") if r.strip()], metric, slice_by, runs_dir,
                        confidence_level=confidence_level, resamples=resamples, data_changes=not no_data_changes,
                        registries=state.registries, verify=not no_verify)
    text = {"json": to_json, "csv": to_csv, "table": to_table}[fmt](result)
    if output:
        write_text(Path(output), text if text.endswith("\n") else text + "\n", newline="")
        out(f"Comparison written to {output}")
    else:
        out(text.rstrip("\n"))

