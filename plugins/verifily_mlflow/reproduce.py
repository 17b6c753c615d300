"""``verifily reproduce --mlflow-run ID``: replay a tracked run and check its tracked test metrics.

The run directory is found from the MLflow run (its ``verifily.run_dir`` tag, else its
``verifily.run_id`` in ``--runs-dir``), replayed by the core's reproduction (``--mode eval``
re-evaluates the saved adapter, ``--mode train`` retrains from the saved config), and every test
metric the MLflow run recorded (``test_<metric>``) is compared with the replayed value within
``--tolerance``. A reproducibility run is logged beside the original (tags ``original_run_id``,
``stage=reproducibility``, ``reproducibility_status``; metrics ``replayed_test_*``,
``original_test_*``, ``delta_test_*``). Exit 0 when every metric is within tolerance, 1 otherwise.
This module imports only click; MLflow loads when the option is used.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import click

RULE = "=" * 80


def extend(command: click.Command) -> None:
    """Add ``--mlflow-run`` and ``--tracking-uri`` to ``verifily reproduce``."""
    command.params.extend([
        click.Option(["--mlflow-run", "mlflow_run"], metavar="ID",
                     help="Reproduce the run tracked as this MLflow run id and compare the test metrics MLflow "
                          "recorded (--mode defaults to eval here; exit 0 within --tolerance, 1 otherwise; "
                          "mlflow plugin)."),
        click.Option(["--tracking-uri", "tracking_uri"], metavar="URI",
                     help="With --mlflow-run: the MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else "
                          "sqlite:///<--runs-dir>/mlflow.db]."),
    ])
    original = command.callback

    @functools.wraps(original)
    def callback(*args: Any, mlflow_run: str | None = None, tracking_uri: str | None = None, **kwargs: Any) -> Any:
        if mlflow_run is None:
            if tracking_uri is not None:
                raise click.UsageError("--tracking-uri applies only with --mlflow-run")
            return original(*args, **kwargs)
        if kwargs.get("run_path"):
            raise click.UsageError("give either --run or --mlflow-run, not both")
        if kwargs.get("verify_only"):
            raise click.UsageError("--verify-only checks a run's hashes; use --run with it")
        ctx = click.get_current_context()
        if ctx.get_parameter_source("mode") == click.core.ParameterSource.DEFAULT:
            kwargs["mode"] = "eval"  # the spec's default for a tracked run: re-evaluate the saved adapter
        code = reproduce_tracked(mlflow_run, tracking_uri, **kwargs)
        ctx.exit(code)

    command.callback = callback


def default_uri(runs_dir: str) -> str:
    import os

    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(runs_dir).resolve() / 'mlflow.db').as_posix()}"


def find_run_dir(tags: dict[str, str], runs_dir: str, run_id: str) -> Path:
    """The verifily run directory of a tracked run."""
    from verifily_core.errors import ReproduceError
    from verifily_core.runs import RUN_META

    for candidate in (tags.get("verifily.run_dir"), str(Path(runs_dir) / tags.get("verifily.run_id", "\0"))):
        if candidate and (Path(candidate) / RUN_META).is_file():
            return Path(candidate)
    raise ReproduceError(f"MLflow run {run_id}: its run directory {tags.get('verifily.run_dir') or '(not tagged)'} is "
                         f"not here and {tags.get('verifily.run_id', '(no verifily.run_id tag)')} is not in --runs-dir "
                         f"{runs_dir}; pass --runs-dir where the run is")


def reproduce_tracked(mlflow_run: str, tracking_uri: str | None, *, mode: str, output_dir: str | None, tolerance: float,
                      device: str, runs_dir: str, fmt: str, **_: Any) -> int:
    """Replay the tracked run, print the comparison, log the reproducibility run; return the exit code."""
    import json

    from verifily_core.api import reproduce
    from verifily_core.errors import ReproduceError
    from verifily_mlflow.options import shown_uri
    from verifily_mlflow.tracker import client_for, log_batch, warn

    uri = tracking_uri or default_uri(runs_dir)
    try:
        client = client_for(uri)
        tracked = client.get_run(mlflow_run)
    except Exception as exc:
        raise ReproduceError(f"MLflow run {mlflow_run} not found at {shown_uri(uri)} ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); pass --tracking-uri") from None
    original = {k: v for k, v in tracked.data.metrics.items() if _overall_test(k)}
    if not original:
        raise ReproduceError(f"MLflow run {mlflow_run} has no test metrics (test_<metric>) to compare; was the run "
                             "evaluated?")
    run_dir = find_run_dir(tracked.data.tags, runs_dir, mlflow_run)
    state = click.get_current_context().obj
    result = reproduce(str(run_dir), mode=mode, output_dir=output_dir, device=device, tolerance=tolerance,
                       runs_dir=runs_dir, hf_token=state.hf_token, registries=state.registries)
    replayed = {r.metric: r.reproduced for r in result.metrics if _overall_test(r.metric)}
    rows = []
    for name in sorted(original):
        new = replayed.get(name)
        delta = None if new is None else new - original[name]
        rows.append((name, original[name], new, delta, delta is not None and abs(delta) <= tolerance * (1 + 1e-9)))
    passed = all(ok for *_, ok in rows)
    status = "passed" if passed else "failed"
    repro_id = None
    try:
        run = client.create_run(tracked.info.experiment_id, run_name=f"reproduce-{tracked.info.run_name or mlflow_run}",
                                tags={"original_run_id": mlflow_run, "stage": "reproducibility",
                                      "reproducibility_status": status, "verifily.run_id": result.run_id,
                                      "verifily.run_dir": str(run_dir.resolve())})
        repro_id = run.info.run_id
        metrics: dict[str, float] = {}
        for name, before, after, delta, _ in rows:
            metrics[f"original_{name}"] = before
            if after is not None:
                metrics[f"replayed_{name}"] = after
                metrics[f"delta_{name}"] = delta  # type: ignore[assignment]
        log_batch(client, repro_id, metrics=metrics,
                  params={"original_run_id": mlflow_run, "mode": mode, "tolerance": tolerance})
        if result.report_path and Path(result.report_path).is_file():
            client.log_artifact(repro_id, result.report_path)
        client.set_terminated(repro_id, "FINISHED")
    except Exception as exc:
        warn(uri, "logging the reproducibility run", exc)
    if fmt == "json":
        click.echo(json.dumps({"original_run_id": mlflow_run, "reproducibility_run_id": repro_id, "status": status,
                               "mode": mode, "tolerance": tolerance, "run_dir": str(run_dir),
                               "metrics": [{"metric": n, "original": b, "replayed": a, "delta": d, "within_tolerance": ok}
                                           for n, b, a, d, ok in rows],
                               "report": result.to_json_dict()}, indent=2))
    else:
        _print(rows, tolerance, passed, mlflow_run, result)
    return 0 if passed else 1


def _overall_test(name: str) -> bool:
    """``test_<metric>`` overall (not ``test_n``, not a bound or a slice)."""
    return name.startswith("test_") and name != "test_n" and "." not in name and "[" not in name


def _print(rows: list[tuple[Any, ...]], tolerance: float, passed: bool, mlflow_run: str, result: Any) -> None:
    points = f"±{tolerance * 100:g} pp"
    width = max(len(r[0]) for r in rows)
    click.echo(f"Reproduction ({result.mode}) of MLflow run {mlflow_run} (verifily run {result.run_id})")
    click.echo(RULE)
    click.echo(f"Metric Comparison ({points} tolerance)")
    click.echo(RULE)
    for name, before, after, delta, ok in rows:
        mark = click.style("✓", fg="green") if ok else click.style("✗", fg="red")
        shown = "missing" if after is None else f"{after:.4f}"
        diff = "-" if delta is None else f"{abs(delta):.4f}"
        click.echo(f"{mark} {name:<{width}} : Original={before:.4f}, Replayed={shown}, Delta={diff}")
    click.echo("")
    click.echo(RULE)
    if passed:
        click.echo(click.style("✓ REPRODUCIBILITY CHECK PASSED", fg="green", bold=True))
        click.echo(f"All metrics within {points} tolerance")
    else:
        bad = sum(not r[4] for r in rows)
        click.echo(click.style("✗ REPRODUCIBILITY CHECK FAILED", fg="red", bold=True))
        click.echo(f"{bad} of {len(rows)} metrics outside {points} tolerance")
    click.echo(RULE)
