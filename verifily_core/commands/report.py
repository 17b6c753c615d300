"""``verifily report``: one self-contained HTML page about evaluated runs."""

from __future__ import annotations

import click

from verifily_core.cli import GlobalState, verbose_option
from verifily_core.console import out


@click.command()
@click.option("--runs", "runs", required=True,
              help="Comma-separated run paths or run ids; with several, the first is the baseline of the deltas.")
@click.option("--metric", default="main", show_default=True,
              help="The primary metric, or an alias of the runs' task: 'main' is its main metric, 'f1' its main F1.")
@click.option("--slice-by", help="Comma-separated slice specs of the evaluation, as in `verifily compare` "
                                "[default: every spec the runs were sliced by].")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="report.html", show_default=True,
              help="The HTML file to write (replaced atomically).")
@click.option("--runs-dir", default="runs", show_default=True, help="Where run ids are looked up.")
@click.option("--confidence-level", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
              show_default=True, help="Level of the paired bootstrap interval of each delta.")
@click.option("--resamples", type=click.IntRange(0), default=1000, show_default=True,
              help="Paired bootstrap resamples of the deltas (0: no intervals).")
@click.option("--no-verify", is_flag=True,
              help="Skip checking each run's files against its hashes (edited numbers then go unnoticed).")
@verbose_option
@click.pass_obj
def report(state: GlobalState, runs: str, metric: str, slice_by: str | None, out_path: str, runs_dir: str,
           confidence_level: float, resamples: int, no_verify: bool) -> None:
    """Write one HTML file about evaluated runs: summary, metric per slice with intervals,
    deltas with significance, training-data changes per tag, loss curves, confusion matrix,
    hard examples and attribution.

    The file is self-contained (no script, no network): open it in any browser. Exit codes:
    1 bad options or an unwritable --out, 2 a path that is not a run, 4 a run that is not
    evaluated or does not verify.
    """
    from verifily_core.api import report as do_report

    path = do_report([r.strip() for r in runs.split(",") if r.strip()], out=out_path, metric=metric,
                     slice_by=slice_by, runs_dir=runs_dir, confidence_level=confidence_level, resamples=resamples,
                     registries=state.registries, verify=not no_verify)
    out(f"Report written to {path}")
