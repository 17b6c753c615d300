"""``verifily reproduce``: verify a run's hash chain, or re-create it and compare metrics."""

from __future__ import annotations

import json

import click

from verifily_core.cli import GlobalState, verbose_option
from verifily_core.commands import format_option
from verifily_core.console import out, style
from verifily_core.reproduction.result import UNCHECKED

NOTES = {"PARTIAL MATCH": ("environment differs", "Metric differences may occur due to environment mismatch."),
         "MISMATCH": ("the run's files differ from its record", "The run cannot be trusted to be the one recorded.")}


@click.command()
@click.option("--run", "run_path", help="Run directory, or a run id in --runs-dir (required unless an option a "
              "plugin adds names the run another way).")
@click.option("--verify-only", is_flag=True, help="Recompute and check every hash without retraining.")
@click.option("--mode", type=click.Choice(["train", "eval"]), default="train", show_default=True,
              help="Full reproduction: retrain from the saved config, or re-evaluate the saved adapter (fast).")
@click.option("--output-dir", type=click.Path(file_okay=False),
              help="Where the reproduced run (train) or evaluation (eval) goes [default: beside the run].")
@click.option("--tolerance", type=click.FloatRange(0), default=0.005, show_default=True,
              help="Allowed absolute difference per metric (0.005 = 0.5 points).")
@click.option("--device", default="auto", show_default=True, help="Device for retraining / re-evaluation.")
@click.option("--runs-dir", default="runs", show_default=True, help="Where run ids are looked up.")
@format_option(help="table for people; json prints the report (reproduce.json).")
@verbose_option
@click.pass_context
def reproduce(ctx: click.Context, run_path: str | None, verify_only: bool, mode: str, output_dir: str | None,
              tolerance: float, device: str, runs_dir: str, fmt: str) -> None:
    """Verify a run's hashes (--verify-only) or re-create it and compare its metrics.

    \b
    Exit codes:
      0  MATCH (every hash) / REPRODUCIBLE (every metric within tolerance)
      6  PARTIAL MATCH: only the environment differs
      5  MISMATCH / NOT REPRODUCIBLE, or the run's inputs changed
    """
    from verifily_core.api import reproduce as do_reproduce

    if not run_path:
        raise click.UsageError("Missing option '--run'.")
    state = ctx.find_object(GlobalState)
    result = do_reproduce(run_path, verify_only=verify_only, output_dir=output_dir, device=device,
                          tolerance=tolerance, mode=mode, runs_dir=runs_dir, hf_token=state.hf_token,
                          registries=None if verify_only else state.registries)
    if fmt == "json":
        out(json.dumps(result.to_json_dict(), indent=2))
    elif verify_only:
        _print_checks(result)
    else:
        _print_metrics(result)
    ctx.exit(result.exit_code)


def _status(text: str) -> str:
    color = "green" if text in ("MATCH", "REPRODUCIBLE") else "yellow" if text == UNCHECKED else "red"
    return style(text, fg=color, bold=True)


def _print_checks(result) -> None:
    out(f"Reproducibility check: {result.run_id}\n")
    for c in result.checks:
        recorded = c.recorded[:11] + "..." if c.recorded.startswith("sha256:") else c.recorded
        tail = f" ({c.reason})" if c.reason else ""
        out(f"  {c.name + ':':<14} {recorded:<14} {_status(c.status)}{tail}")
    why, note = NOTES.get(result.verdict, ("", ""))
    out(f"\n  Verdict: {_status(result.verdict)}" + (f" ({why})" if why else ""))
    if note:
        out(f"  Note: {note}")


def _print_metrics(result) -> None:
    target = f" -> {result.reproduced_run}" if result.reproduced_run else ""
    out(f"Reproduction ({result.mode}) of {result.run_id}{target}: {result.output_dir}\n")
    width = max(24, *(len(r.metric) + 2 for r in result.metrics))
    out(f"    {'metric':<{width}}{'original':>12}{'reproduced':>12}{'delta':>12}   within ±{result.tolerance:g}")
    for r in result.metrics:
        cells = [_num(r.original), _num(r.reproduced), "-" if r.delta is None else f"{r.delta:+.6f}"]
        mark = style("✓", fg="green") if r.within_tolerance else style("✗", fg="red")
        out(f"  {mark} {r.metric:<{width}}" + "".join(f"{c:>12}" for c in cells) +
            f"   {'yes' if r.within_tolerance else 'NO'}")
    if result.notes:
        out("")
    for note in result.notes:
        out(f"  Note: {note}")
    bad = sum(not r.within_tolerance for r in result.metrics)
    detail = (f"all {len(result.metrics)} metrics within ±{result.tolerance:g}" if not bad
              else f"{bad} of {len(result.metrics)} metrics outside ±{result.tolerance:g}")
    out(f"\n  Verdict: {_status(result.verdict)} ({detail})")
    out(f"  Report: {result.report_path}")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"
