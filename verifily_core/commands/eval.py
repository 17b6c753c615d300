"""``verifily eval``: tag-sliced metrics with confidence intervals and hard examples for a run."""

from __future__ import annotations

import json

import click

from verifily_core.cli import GlobalState, verbose_option
from verifily_core.commands import format_option
from verifily_core.console import note, out


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@click.command()
@click.option("--run", "run_path", required=True, help="Run directory (or run id under runs/).")
@click.option("--test-data", type=click.Path(dir_okay=False), help="Test JSONL instead of the run's test split.")
@click.option("--metrics", help="Comma-separated metric names [default: the run's eval.metrics or the task's].")
@click.option("--slice-by", help="Comma-separated tag keys; `a&b` crosses two keys [default: eval.slice_by_tags].")
@click.option("--hard-examples", type=int, help="Number of worst rows to write [default: eval.hard_examples, 50].")
@click.option("--hard-by", metavar="SCORE",
              help="Per-example score that ranks hard examples, e.g. loss [default: eval.hard_by, else the task's].")
@click.option("--output", type=click.Path(file_okay=False), help="Directory for the results [default: <run>/eval].")
@click.option("--device", default="auto", show_default=True, help="auto, cuda, cuda:0, mps or cpu.")
@click.option("--batch-size", type=int, help="Inference batch size [default: eval.batch_size, 16].")
@click.option("--no-verify", is_flag=True,
              help="Load the run without first checking its files against hashes.json (a changed adapter, "
                   "tokenizer or config then goes unnoticed).")
@click.option("--plot", is_flag=False, flag_value="", default=None, metavar="[DIR]",
              type=click.Path(file_okay=False),
              help="Also draw PNGs of the slice metrics with intervals and the loss curves: into the evaluation "
                   "folder's plots/ (sealed with it), or into DIR. Needs matplotlib: pip install "
                   "'verifily-train[plots]'.")
@click.option("--nproc", type=click.IntRange(min=1),
              help="Processes on this machine that share the prediction (one GPU each on CUDA); rank 0 gathers "
                   "the predictions and computes and writes the results, the same as one process's.")
@format_option(help="table for people; json prints eval_results.json.")
@verbose_option
@click.pass_obj
def eval_cmd(state: GlobalState, run_path: str, test_data: str | None, metrics: str | None, slice_by: str | None,
             hard_examples: int | None, hard_by: str | None, output: str | None, device: str, batch_size: int | None, no_verify: bool,
             plot: str | None, nproc: int | None, fmt: str) -> None:
    """Evaluate a trained run: overall and per-tag-slice metrics, hard examples."""
    from verifily_core.api import evaluate
    from verifily_core.distributed import world
    from verifily_core.evaluation import render_eval

    if (nproc or 1) > 1 and not world().is_distributed:
        import sys

        from verifily_core.distributed import Launch, QuietWorkerError, launch
        from verifily_core.evaluator import completed_run, read_test_rows, verified_config

        # what every worker would refuse alike (the run, its files, the test rows) is refused once, here
        cfg = verified_config(completed_run(run_path, "evaluate it"), "evaluate it", not no_verify)
        read_test_rows(cfg, state.registries, state.registries.tasks.get(cfg.task), test_data)

        code = launch(Launch(command=tuple(sys.argv[1:])), nproc or 1, 1, None, "", what="evaluation")
        if code:  # the failing rank said why, or the launcher did
            raise QuietWorkerError(code)
        return  # rank 0 printed the results
    result = evaluate(run_path, test_data=test_data, metrics=_csv(metrics), slice_by=_csv(slice_by),
                      hard_examples=hard_examples, hard_by=hard_by, output=output, device=device, batch_size=batch_size,
                      hf_token=state.hf_token, registries=state.registries, verify=not no_verify,
                      plot=False if plot is None else (plot or True))
    if result is None:  # another process of `eval --nproc`: rank 0 prints; leave without the
        from verifily_core.distributed import exit_joined  # interpreter's shutdown (see exit_joined)

        exit_joined(0)
        return
    if no_verify:
        note(f"--no-verify: {run_path} was loaded without checking its files against its hashes")
    if fmt == "json":
        out(json.dumps(result.to_json_dict(), indent=2))
    else:
        out(render_eval(result))
    for path in result.plots:
        note(f"Plot written to {path}")
