"""``verifily reproduce``: verify a run's hash chain, or re-create it and compare metrics."""

from __future__ import annotations

import json

import click

from verifily_core.cli import verbose_option
from verifily_core.console import out, style


@click.command()
@click.option("--run", "run_path", required=True, help="Run directory (or id under runs/).")
@click.option("--verify-only", is_flag=True, help="Check hashes without retraining.")
@click.option("--mode", type=click.Choice(["train", "eval"]), default="train", show_default=True,
              help="Full reproduction: retrain from the saved config, or re-evaluate the saved adapter.")
@click.option("--output-dir", type=click.Path(file_okay=False), help="Where the reproduced run goes.")
@click.option("--tolerance", type=float, default=0.005, show_default=True, help="Allowed absolute metric difference.")
@click.option("--device", default="auto", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@verbose_option
@click.pass_context
def reproduce(ctx: click.Context, run_path: str, verify_only: bool, mode: str, output_dir: str | None,
              tolerance: float, device: str, fmt: str) -> None:
    """Verify a run's hashes (--verify-only) or reproduce it and compare metrics.

    Exit codes: 0 MATCH / REPRODUCIBLE, 5 MISMATCH / NOT REPRODUCIBLE, 6 PARTIAL MATCH
    (only the environment differs).
    """
    from verifily_core.reproduce import reproduce_run, verify_run

    result = verify_run(run_path) if verify_only else reproduce_run(run_path, mode, output_dir, tolerance, device)
    if fmt == "json":
        out(json.dumps(result.to_json_dict(), indent=2))
    elif verify_only:
        out(f"Reproducibility check: {result.run_id}\n")
        for c in result.checks:
            tail = f" ({c.reason})" if c.reason else ""
            out(f"  {c.name + ':':<14} {c.recorded[:16] + '...' if c.recorded.startswith('sha256:') else c.recorded} "
                f"{style(c.status, fg='green' if c.status == 'MATCH' else 'red')}{tail}")
        note = {"PARTIAL MATCH": " (environment differs)\n  Note: Metric differences may occur due to environment mismatch."}
        out(f"\n  Verdict: {result.verdict}{note.get(result.verdict, '')}")
    else:
        out(f"Reproduction ({result.mode}) of {result.run_id}" +
            (f" -> {result.reproduced_run}" if result.reproduced_run else ""))
        out(f"  {'metric':<24}{'original':>12}{'reproduced':>12}{'delta':>12}  within ±{tolerance:g}")
        for r in result.metrics:
            rep = "-" if r["reproduced"] is None else f"{r['reproduced']:.6f}"
            delta = "-" if r["delta"] is None else f"{r['delta']:+.6f}"
            out(f"  {r['metric']:<24}{r['original']:>12.6f}{rep:>12}{delta:>12}  {'yes' if r['within_tolerance'] else 'NO'}")
        out(f"\n  Verdict: {result.verdict}")
    ctx.exit(result.exit_code)
