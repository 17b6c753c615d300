"""The public Python API, and the one path every ``verifily`` command takes.

Each CLI command parses its options and calls one function here; the function resolves the
plugins once (``registries``, loaded when not given) and passes them down, so nothing below
loads plugins again. Heavy libraries are imported only when a function trains or evaluates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from verifily_core.config import TrainConfig
from verifily_core.plugins import Registries

TRAIN_FLAGS: dict[str, str] = {
    "dataset": "dataset_version",
    "base_model": "base_model",
    "task": "task",
    "output_dir": "output.dir",
    "device": "compute.device",
    "mode": "compute.mode",
    "epochs": "training.num_epochs",
    "batch_size": "training.batch_size",
    "learning_rate": "training.learning_rate",
    "lora_r": "lora.r",
    "quantization": "lora.quantization",
    "seed": "seed",
    "name": "output.name",
    "report_to": "training.report_to",
    "nproc": "compute.num_processes",
    "nnodes": "compute.num_nodes",
}
"""The one flag table: each :func:`train` parameter (and ``verifily train`` option) that sets a
config field, with the field's dotted path. Flags beat overrides, which beat the file."""


def plugins_or_installed(registries: Registries | None) -> Registries:
    """``registries``, or every installed plugin's when ``None`` (the entry's one plugin load)."""
    if registries is not None:
        return registries
    from verifily_core.plugins import load_registries

    return load_registries()


def train(
    config: str | Path | Mapping[str, Any] | TrainConfig,
    dataset: str | None = None,
    base_model: str | None = None,
    output_dir: str | None = None,
    device: str | None = None,
    seed: int | None = None,
    dry_run: bool = False,
    resume_from: str | None = None,
    overrides: tuple[str, ...] | list[str] = (),
    name: str | None = None,
    hf_token: str | None = None,
    registries: Registries | None = None,
    task: str | None = None,
    mode: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    lora_r: int | None = None,
    quantization: str | None = None,
    report_to: list[str] | None = None,
    on_eval: Callable[[Any], None] | None = None,
    check_data: bool = True,
    on_push: Callable[[Any], None] | None = None,
    check_batch: bool = False,
    memory_limit: int | str | None = None,
    nproc: int | None = None,
    nnodes: int | None = None,
    launch: Any = None,
) -> Any:
    """Run a training job and return the finished :class:`~verifily_core.runs.Run`.

    The parameters from ``dataset`` on that set a config field are the flags of
    :data:`TRAIN_FLAGS`. With ``dry_run=True`` nothing is trained and the validated
    :class:`~verifily_core.training.TrainPlan` is returned instead, its dataset checked as
    training would check it (``plan.data_check``) unless ``check_data=False`` (config only).
    ``on_eval`` receives the :class:`~verifily_core.evaluation.result.EvalResult` of the
    evaluation that follows training. With ``output.push_to_hub`` the sealed run is then pushed to
    ``output.hub_repo`` and ``on_push`` receives the :class:`~verifily_core.pushing.PushResult`;
    that needs a token and no offline mode, checked before anything is trained (and by a dry run).
    Raises ConfigError, DataError or TrainingError on failure, and PushError when only the push
    failed (its ``run`` is the completed run). With ``dry_run`` and ``check_batch`` the model is
    loaded and the largest batch tried (``plan.batch_check``; ConfigError when it does not fit in
    ``memory_limit``, bytes or a size such as ``"8GiB"``, else the device's memory).

    With ``compute.num_processes`` (``nproc``) or ``compute.num_nodes`` (``nnodes``) above 1 in a
    process that no launcher started, the workers are started here and the sealed run is returned
    when they finish: on one machine a child ``verifily train`` on the resolved config starts them
    (its lines on stderr);
    ``launch`` (a :class:`~verifily_core.distributed.Launch`: the command each worker runs and the
    rendezvous) chooses otherwise, and several machines need it (a ConfigError without it).
    ``on_eval`` then receives the evaluation the workers wrote into the run; ``on_push`` is not
    called (rank 0 pushes and prints its line). In a worker (``WORLD_SIZE`` set, e.g. under
    ``torchrun``) rank 0 returns the run and the other ranks ``None``.
    """
    import attrs

    from verifily_core.errors import TrainingError, os_errors_as
    from verifily_core.training import check_plan_data, execute_plan, plan_training

    given = dict(dataset=dataset, base_model=base_model, output_dir=output_dir, device=device, seed=seed, name=name,
                 task=task, mode=mode, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                 lora_r=lora_r, quantization=quantization, report_to=report_to, nproc=nproc, nnodes=nnodes)
    flags = {TRAIN_FLAGS[key]: value for key, value in given.items()}
    plan = plan_training(config, overrides=overrides, flags=flags, registries=plugins_or_installed(registries))
    if plan.config.output.push_to_hub:  # refused now rather than after training
        from verifily_core.pushing import hub_token

        hub_token(hf_token, str(plan.config.output.hub_repo))
    if dry_run:
        if not check_data:
            return attrs.evolve(plan, data_check={"checked": False, "reason": "skipped (--no-data-check)"})
        plan = check_plan_data(plan)
        if check_batch:
            from verifily_core.memory import parse_size
            from verifily_core.training import check_plan_batch

            limit = parse_size(memory_limit) if isinstance(memory_limit, str) else memory_limit
            plan = check_plan_batch(plan, hf_token=hf_token, memory_limit=limit)
        return plan
    from verifily_core.distributed import world

    c = plan.config.compute
    if c.num_processes * c.num_nodes > 1 and not world().is_distributed:
        from verifily_core.training import launch_plan, train_plan

        run = (train_plan(plan, hf_token=hf_token, resume_from=resume_from) if launch is None
               else launch_plan(plan, launch, resume_from=resume_from))
        _deliver_from_run(run, on_eval)
        return run
    with os_errors_as(TrainingError, "set output.dir elsewhere"):
        return execute_plan(plan, resume_from=resume_from, hf_token=hf_token, on_eval=on_eval, on_push=on_push)


def _deliver_from_run(run: Any, on_eval: Any) -> None:
    """``on_eval`` for a run the workers trained and evaluated in their own processes: the
    EvalResult is read back from the sealed run (nothing when it was not evaluated)."""
    if on_eval is None or run is None or not (run.path / "eval" / "eval_results.json").is_file():
        return
    from verifily_core.evaluation.result import load_eval_result

    on_eval(load_eval_result(run.path))


def evaluate(run_path: str | Path, test_data: str | None = None, metrics: list[str] | None = None,
             slice_by: list[str] | None = None, hard_examples: int | None = None, output: str | None = None,
             device: str = "auto", batch_size: int | None = None, hf_token: str | None = None,
             registries: Registries | None = None, verify: bool = True, hard_by: str | None = None,
             plot: bool | str | Path = False) -> Any:
    """Evaluate a run's model on its test split (or ``test_data``), write ``eval/`` (or
    ``output``) and return the :class:`~verifily_core.evaluation.result.EvalResult`.

    ``metrics``, ``slice_by``, ``hard_examples``, ``hard_by`` and ``batch_size`` default to the run's
    ``eval`` config. The run's files are first checked against its ``hashes.json``
    (``verify=False`` skips that). ``plot`` also draws PNGs of the slices and loss curves
    (matplotlib, the ``plots`` extra): ``True`` into the evaluation folder's ``plots/`` (sealed
    with it), a path into that folder; their paths are in ``result.plots``. Raises ConfigError,
    DataError or EvalError on failure (ConfigError at once for ``plot`` without matplotlib).
    """
    from verifily_core.errors import EvalError, os_errors_as
    from verifily_core.evaluation.writer import ELSEWHERE
    from verifily_core.evaluator import evaluate as _evaluate

    with os_errors_as(EvalError, ELSEWHERE):
        return _evaluate(run_path, test_data=test_data, metrics=metrics, slice_by=slice_by,
                         hard_examples=hard_examples, hard_by=hard_by, output=output, device=device,
                         batch_size=batch_size, hf_token=hf_token, registries=plugins_or_installed(registries),
                         verify=verify, plot=plot)


def compare(run_paths: list[str] | tuple[str, ...], metric: str = "f1", slice_by: str | None = None,
            runs_dir: str | Path = "runs", confidence_level: float = 0.95, resamples: int = 1000, seed: int = 42,
            data_changes: bool = True, registries: Registries | None = None, verify: bool = True) -> Any:
    """Compare ``metric`` across evaluated runs (the first is the baseline), overall and per
    slice, with paired-bootstrap intervals of each delta and, with ``data_changes``, the
    training rows that changed between their dataset versions. Reads ``eval_results.json``
    files only, after checking them against the runs' hashes (``verify=False`` skips that).
    Returns a :class:`~verifily_core.comparison.result.CompareResult`."""
    from verifily_core.comparison.compare_runs import compare as _compare

    return _compare(run_paths, metric=metric, slice_by=slice_by, runs_dir=runs_dir,
                    confidence_level=confidence_level, resamples=resamples, seed=seed, data_changes=data_changes,
                    registries=plugins_or_installed(registries), verify=verify)


def report(run_paths: list[str] | tuple[str, ...], out: str | Path = "report.html", metric: str = "main",
           slice_by: str | None = None, runs_dir: str | Path = "runs", confidence_level: float = 0.95,
           resamples: int = 1000, registries: Registries | None = None, verify: bool = True) -> Path:
    """Write one self-contained HTML page about evaluated runs to ``out`` (atomically) and return
    its path: per run the summary, ``metric`` per slice with intervals, loss curves, confusion
    matrix, hard examples and attribution; for two runs or more the deltas against the first,
    their paired intervals and the training-data changes, as :func:`compare` computes them.
    Reads run files only, after checking them against the runs' hashes (``verify=False`` skips
    that). Raises ConfigError (bad options, ``out`` not writable) or EvalError (a run not
    evaluated or not verifying)."""
    from verifily_core.report import write_report

    return write_report(run_paths, out, registries=plugins_or_installed(registries), metric=metric,
                        slice_by=slice_by, runs_dir=runs_dir, verify=verify, resamples=resamples,
                        confidence_level=confidence_level)


def predict(run_path: str | Path, rows: list[dict[str, Any]], device: str = "auto", batch_size: int | None = None,
            hf_token: str | None = None, registries: Registries | None = None, verify: bool = True) -> list[dict[str, Any]]:
    """The run's model on ``rows`` (no reference needed): ``{"prediction", "scores"}`` per row,
    with evaluation's prompt rendering and prediction code; nothing is scored or written. The
    run's files are checked against its hashes first (``verify=False`` skips that)."""
    from verifily_core.evaluator import predict_rows

    return predict_rows(run_path, rows, registries=plugins_or_installed(registries), device=device,
                        batch_size=batch_size, hf_token=hf_token, verify=verify)


def predictor(run_path: str | Path, device: str = "auto", batch_size: int | None = None, hf_token: str | None = None,
              registries: Registries | None = None, verify: bool = True) -> Any:
    """The run's model, loaded once, as a callable on rows (what :func:`predict` returns, for
    any number of calls); its ``text_row(text)`` writes a free-text prompt as a row in the form
    the run trained on. The run's files are checked against its hashes first (``verify=False``
    skips that); the model loads at the first call."""
    from verifily_core.evaluator import load_predictor

    return load_predictor(run_path, registries=plugins_or_installed(registries), device=device,
                          batch_size=batch_size, hf_token=hf_token, verify=verify)


def export_run(run_path: str | Path, output: str | Path, merge: bool = False, dtype: str = "float32",
               hf_token: str | None = None, registries: Registries | None = None, verify: bool = True,
               merge_into: str = "dequantized") -> Path:
    """Write a completed LoRA run to the new folder ``output``: its adapter and tokenizer, or with
    ``merge`` a standalone model (LoRA merged into the base, in ``dtype``; a QLoRA run into its
    ``dequantized`` weights or its ``original`` ones, ``merge_into``) and tokenizer; returns the
    folder. The run is verified first (``verify=False`` skips that)."""
    from verifily_core.exporting import export_run as _export

    return _export(run_path, output, registries=plugins_or_installed(registries), merge=merge, dtype=dtype,
                   hf_token=hf_token, verify=verify, merge_into=merge_into)


def push_run(run_path: str | Path, repo_id: str, merge: bool = False, dtype: str = "float32", public: bool = False,
             revision: str | None = None, hf_token: str | None = None, registries: Registries | None = None,
             verify: bool = True, merge_into: str = "dequantized") -> Any:
    """Export a completed LoRA run as :func:`export_run` does (into a temporary directory, removed
    afterwards) and upload it to the Hub model repo ``repo_id``, created when missing (private
    unless ``public``), on branch ``revision`` (default ``main``). The token is ``hf_token``, else
    huggingface_hub's (``$HF_TOKEN``, the saved login). Returns the
    :class:`~verifily_core.pushing.PushResult` (``repo_url``, ``commit_oid``, ``files``, ...).
    Raises PushError (no token, offline, network or HTTP errors), ConfigError or EvalError."""
    from verifily_core.pushing import push_run as _push

    return _push(run_path, repo_id, registries=plugins_or_installed(registries), merge=merge, dtype=dtype,
                 public=public, revision=revision, hf_token=hf_token, verify=verify, merge_into=merge_into)


def attribute(run_path: str | Path, test_slice: str | None = None, test_data: str | Path | None = None,
              projection: int = 32, damping: float = 10.0, batch_size: int | None = None, device: str = "auto",
              hf_token: str | None = None, registries: Registries | None = None, verify: bool = True,
              method: str = "auto", objective: str = "margin", validate: int | None = None,
              store: str | None = None) -> Any:
    """Score every training row of a completed run by its influence on the test rows
    (``test_slice`` ``"KEY=VALUE"``, or all), write the run's ``eval/attribution/`` and return the
    :class:`~verifily_core.attribution.AttributionResult` (``rows``, ``by_tag``, ``summary``,
    ``ranked(n)``); ``method`` ``final`` (at the final model), ``ensemble`` (averaged over the
    snapshots of ``training.attribution_checkpoints``) or ``tracin`` (TracIn over them); ``auto``
    is ``ensemble`` for a run that kept snapshots, else ``final``;
    ``objective`` ``margin`` or ``loss`` of the test rows.
    With ``validate=K`` the run is then retrained without its K most harmful rows (a derived dataset
    version in ``store``) and compared on the slice (``result.validation``). The run is verified
    first (``verify=False`` skips that)."""
    from verifily_core.attribution import attribute_run, parse_slice

    if validate is not None and test_data is not None:
        from verifily_core.errors import ConfigError

        raise ConfigError("--validate compares runs on their test split; it cannot be used with --test-data")
    regs = plugins_or_installed(registries)
    result = attribute_run(run_path, registries=regs, test_slice=test_slice, test_data=test_data,
                           projection=projection, damping=damping, batch_size=batch_size, device=device,
                           hf_token=hf_token, verify=verify, method=method, objective=objective)
    if validate is not None:
        from verifily_core.attribution.checks import validate_top

        result.validation = validate_top(run_path, validate, result.rows, parse_slice(test_slice), registries=regs,
                                         store=store, hf_token=hf_token)
    return result


def leave_out(run_path: str | Path, key: str, values: list[str] | None = None, test_slice: str | None = None,
              max_steps: int | None = None, fraction: float | None = None, store: str | None = None,
              hf_token: str | None = None, registries: Registries | None = None, jobs: int = 1,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Retrain a completed run once per value of the tag ``key`` (``values``, or all), each time
    without the training rows of that value (a derived dataset version in ``store``), and compare
    each with the run per slice of ``key`` (and of ``test_slice``'s key); with ``max_steps`` or
    ``fraction`` (of the run's steps) every variant and a full-data baseline train on that budget.
    Finished variants are reused; ``jobs`` above 1 trains that many at once, each in its own
    ``verifily train`` process; ``progress`` receives a line before each training. Returns what
    ``eval/attribution/leave_out.json`` holds."""
    from verifily_core.attribution import parse_slice
    from verifily_core.attribution.checks import leave_out as _leave_out

    return _leave_out(run_path, key, values, target=parse_slice(test_slice), max_steps=max_steps, fraction=fraction,
                      registries=plugins_or_installed(registries), store=store, hf_token=hf_token,
                      jobs=jobs, progress=progress)


def reproduce(run_path: str | Path, verify_only: bool = False, output_dir: str | None = None, device: str = "auto",
              tolerance: float = 0.005, mode: str = "train", runs_dir: str | Path = "runs",
              hf_token: str | None = None, registries: Registries | None = None) -> Any:
    """Verify a run's hashes (``verify_only``) or re-create it (``mode`` ``train`` or ``eval``) and
    compare its metrics within ``tolerance``; returns a
    :class:`~verifily_core.reproduction.result.ReproduceResult` (its ``verdict`` and ``exit_code``)."""
    from verifily_core.reproduction.rerun import reproduce_run
    from verifily_core.reproduction.verify import verify_run

    if verify_only:
        return verify_run(run_path, runs_dir)
    return reproduce_run(run_path, mode=mode, output_dir=output_dir, tolerance=tolerance, device=device,
                         runs_dir=runs_dir, hf_token=hf_token, registries=plugins_or_installed(registries))


def list_runs(runs_dir: str | Path = "runs", registries: Registries | None = None) -> list[dict[str, Any]]:
    """Every run directory under ``runs_dir`` (completed, ``.partial``, ``.failed``), newest first:
    ``run_id``, ``name``, ``status``, ``path``, ``task``, ``dataset``, ``started_at``, ``metrics``
    (training metrics and ``test_<metric>`` of evaluated runs), ``main_metrics`` (the task's, as
    ``test_<metric>``) and ``error``. Raises DataError when ``runs_dir`` is not a directory."""
    from verifily_core.runs import list_runs as _list_runs

    tasks = plugins_or_installed(registries).tasks
    rows = _list_runs(runs_dir)
    for row in rows:
        main = tasks.get(row["task"]).main_metrics if row["task"] in tasks else ()
        row["main_metrics"] = [f"test_{m}" for m in main]
    return rows


def create_dataset(dataset_id: str, version: str, task: str | None = None, paths: Mapping[str, str] | None = None,
                   from_dir: str | None = None, tag_schema: Mapping[str, Any] | None = None, store: str | None = None,
                   registries: Registries | None = None, auto_split: Any = None,
                   column_map: Mapping[str, str] | None = None, ignored_columns: set[str] | None = None) -> Any:
    """Validate rows against the task's schema, copy the files into the store and seal the
    version ``dataset_id@version``; returns the :class:`~verifily_core.datasets.DatasetVersion`.

    ``paths`` maps splits (``train``, ``val``, ``test``) to JSONL, CSV, TSV, Parquet or
    JSON-array files (stored as JSONL; ``column_map`` maps fields to columns, see
    :mod:`verifily_core.datasets.tabular`); ``from_dir`` takes the splits (and, from its
    manifest, the task and tag schema) from a folder. ``auto_split`` (a
    :class:`~verifily_core.datasets.splitting.SplitPlan`) carves val/test out of the train file,
    seeded and stratified, and records how in the manifest. ``ignored_columns`` collects the
    input columns that fill no field or tag.
    Raises ConfigError (no task, a bad plan, a split given twice) or DataError (bad rows, an
    existing version).
    """
    from verifily_core.datasets import open_store, splits_in_dir
    from verifily_core.errors import ConfigError, DataError, os_errors_as

    paths = dict(paths or {})
    if from_dir:
        found = splits_in_dir(from_dir)
        for split, path in found.paths.items():
            paths.setdefault(split, str(path))
        if found.task and task and found.task != task:
            raise DataError(f"{from_dir}: its manifest is for task '{found.task}', not '{task}'")
        task = task or found.task
        tag_schema = tag_schema or found.tag_schema
    regs = plugins_or_installed(registries)
    if not task:
        raise ConfigError(f"--task: name the task ({', '.join(regs.tasks.names())})")
    if not paths:
        raise DataError("no data files: pass --train FILE (and --val/--test) or --from-dir DIR")
    import tempfile

    from verifily_core.datasets.tabular import prepare_inputs

    with os_errors_as(DataError, "pass --store elsewhere"), tempfile.TemporaryDirectory(prefix="verifily-") as work:
        files, record = prepare_inputs(paths, dict(column_map or {}), auto_split, work, regs.tasks.get(task),
                                       ignored_columns)
        return open_store(store).create(dataset_id, version, task, files, tag_schema=tag_schema, registries=regs,
                                        split=record)


def list_datasets(store: str | None = None) -> tuple[list[Any], list[str]]:
    """Every dataset version in the store (``store``, else ``$VERIFILY_DATASETS_DIR``, else the
    default), and one line per folder that looks like a version but is not one (a create's
    leftover, an unreadable manifest, a manifest naming another version), from one pass."""
    from verifily_core.datasets import open_store

    versions, broken = open_store(store).survey()
    return versions, [problem for _, problem in broken]


def show_dataset(ref: str, store: str | None = None) -> tuple[Any, dict[str, dict[str, int]]]:
    """The version ``ref`` and its rows per tag value, per split: ``{split: {"source=human": n}}``."""
    from verifily_core.datasets import open_store
    from verifily_core.slices import tag_counts

    dv = open_store(store).get(ref)
    return dv, {f.split: dict(sorted(tag_counts(dv.iter_rows(f.split)).items())) for f in dv.files}


def verify_dataset(ref: str, rows: bool = False, store: str | None = None,
                   registries: Registries | None = None) -> Any:
    """Recompute every file hash of ``ref`` (and, with ``rows``, re-validate every row against
    its task and tag schema); returns the version. Raises DataError on any mismatch."""
    from verifily_core.datasets import open_store, verify

    dv = open_store(store).get(ref)
    verify(dv, plugins_or_installed(registries).tasks.get(dv.task).validate_row if rows else None)
    return dv


def diff_datasets(ref_a: str, ref_b: str, store: str | None = None,
                  registries: Registries | None = None) -> dict[str, Any]:
    """Both versions verified, then the rows added, removed, changed and retagged from
    ``ref_a`` to ``ref_b`` per split and tag value (see :func:`verifily_core.datasets.diff_versions`)."""
    from verifily_core.datasets import diff_versions, open_store, verify

    s = open_store(store)
    a, b = s.get(ref_a), s.get(ref_b)
    verify(a)
    verify(b)
    return diff_versions(a, b, plugins_or_installed(registries).tasks.get(b.task).row_input)


def list_plugins(registries: Registries | None = None) -> list[dict[str, Any]]:
    """One record per loaded plugin: name, distribution, version, what it registers, its hooks."""
    from verifily_core.plugins import describe_plugins

    return describe_plugins(plugins_or_installed(registries))
