"""``evaluate()``: rebuild a run's model from its directory, predict the test set, and write
tag-sliced metrics with confidence intervals and hard examples to ``eval/``.

The model is rebuilt from the run alone: base model reference and task options from
``config.yaml``, the adapter from ``adapter/``, the tokenizer from ``tokenizer/``.
"""

from __future__ import annotations

import inspect
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from verifily_core.config import TrainConfig
from verifily_core.errors import DataError, EvalError, VerifilyTrainError
from verifily_core.interfaces import PREDICTION
from verifily_core.jobs import utc_now
from verifily_core.runs import STATUS_COMPLETED, load_run

log = logging.getLogger("verifily.eval")


def evaluate(
    run_path: str | Path,
    test_data: str | Path | None = None,
    metrics: Sequence[str] | None = None,
    slice_by: Sequence[str] | None = None,
    hard_examples: int | None = None,
    output: str | Path | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    hf_token: str | None = None,
    *,
    registries: Any,
    verify: bool = True,
    hard_by: str | None = None,
    plot: bool | str | Path = False,
    shard: bool = True,
) -> Any:
    """Evaluate a completed run and write ``eval/`` files; returns the ``EvalResult``.

    In a process of a job of several (``WORLD_SIZE`` above 1: ``verifily eval --nproc N``, or
    started by ``torchrun``), each process predicts a share of the rows; rank 0 gathers them,
    computes and writes the results and returns them, the others return ``None``. ``shard=False``
    evaluates in this process alone (rank 0 after distributed training, the others waiting).

    :param test_data: a JSONL file instead of the run's dataset test split.
    :param metrics: metric names (default: ``eval.metrics`` of the run, else the task's defaults).
    :param slice_by: tag keys to slice by (default: ``eval.slice_by_tags`` of the run).
    :param hard_by: the per-example score that ranks hard examples (default: ``eval.hard_by``,
        else the task's first ``hard_example_scores`` the rows carry).
    :param output: directory for the files (default: ``<run>/eval``).
    :param verify: re-hash the run's files against its ``hashes.json`` before loading anything
        from it (``False`` skips the check: ``--no-verify``).
    :param plot: also draw PNGs of the slices and loss curves (see :mod:`verifily_core.report.plots`):
        ``True`` into the evaluation folder's ``plots/``, sealed with it; a path: into that folder.
    :raises EvalError: (exit 4) when the run does not verify, or prediction or metric computation fails.
    :raises ConfigError: ``plot`` without matplotlib installed (checked before anything is evaluated).
    """
    from contextlib import nullcontext

    from verifily_core.run_lock import lock_run

    if plot is not False:
        from verifily_core.report.plots import require_matplotlib

        require_matplotlib()
    from verifily_core.distributed import world

    run = completed_run(run_path, "evaluate it")
    # one writer of the run's eval/ at a time: rank 0 of a sharded evaluation
    with nullcontext() if output or (shard and not world().is_main) else lock_run(run.path):
        result = _evaluate(run, test_data, metrics, slice_by, hard_examples, output, device, batch_size, hf_token,
                           registries, verify, hard_by, shard)
        if result is not None and plot is not False:
            _plot(result, run, plot)
        return result


def _plot(result: Any, run: Any, plot: bool | str | Path) -> None:
    """Draw the evaluation's plots; into its own ``plots/``, then seal the folder again."""
    from verifily_core.evaluation.seal import seal_eval
    from verifily_core.evaluation.result import PLOTS_DIR
    from verifily_core.report.plots import write_eval_plots

    eval_dir = Path(result.output_dir)
    target = eval_dir / PLOTS_DIR if plot is True else Path(plot)
    if not target.resolve().is_relative_to(eval_dir.resolve()):
        result.plots = write_eval_plots(eval_dir, target, run.path)
        return
    try:
        result.plots = write_eval_plots(eval_dir, target, run.path)
        seal_eval(eval_dir, run.path, run.run_id)
    except OSError:  # the seal on disk is still the evaluation's, without plots: keep it true
        shutil.rmtree(target, ignore_errors=True)
        raise


def _evaluate(run: Any, test_data: str | Path | None, metrics: Sequence[str] | None, slice_by: Sequence[str] | None,
              hard_examples: int | None, output: str | Path | None, device: str, batch_size: int | None,
              hf_token: str | None, registries: Any, verify: bool, hard_by: str | None, shard: bool = True) -> Any:
    started = time.monotonic()
    cfg = verified_config(run, "evaluate it", verify)
    if cfg.model.trust_remote_code:
        log.warning("%s: its config.yaml sets model.trust_remote_code: true, so loading it runs Python code "
                    "shipped with its model and tokenizer files", run.path)
    task = registries.tasks.get(cfg.task)
    names = list(metrics or cfg.eval.metrics or task.eval_default_metrics(run.path))
    chosen = {name: registries.metrics.get(name) for name in names}
    keys = list(slice_by if slice_by is not None else cfg.eval.slice_by_tags)
    rows, test_info = read_test_rows(cfg, registries, task, test_data)
    n_test = len(rows)
    if cfg.eval.gold_set:
        rows = rows + _gold_rows(Path(cfg.eval.gold_set), task)
    needs = frozenset().union(*(m.reads for m in chosen.values()), {hard_by or cfg.eval.hard_by} - {None, *chosen})
    from verifily_core.distributed import shard_map
    from verifily_core.modeling import resolve_device

    predict = Predictor(run, cfg, registries, task, device, batch_size or cfg.eval.batch_size, hf_token)
    try:  # several processes (eval --nproc, torchrun) predict a share of the rows each; rank 0 goes on
        if shard:
            preds = shard_map(lambda share: predict(share, needs), rows, resolve_device(device))
        else:
            preds = predict(rows, needs)
    except VerifilyTrainError:
        raise
    except Exception as exc:
        from verifily_core import distributed

        w = distributed.world()
        if w.is_distributed and distributed.peer_lost(exc):
            raise distributed.QuietWorkerError(distributed.EXIT_STOPPED) from exc  # the failing rank says why
        where = f" on rank {w.rank}" if w.is_distributed else ""
        raise EvalError(f"prediction failed{where}: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if preds is None:
        return None  # another process of a sharded evaluation: rank 0 has the predictions
    records = _records(rows, preds)
    for record in records[n_test:]:
        record.update(split="gold", gold=True)
    try:
        from verifily_core.evaluation import build_eval_result, write_eval_files

        result = build_eval_result(
            records, task=task, metrics=chosen, slicers=registries.slicers, slice_by=keys,
            hard_examples=cfg.eval.hard_examples if hard_examples is None else hard_examples,
            hard_score=hard_by or cfg.eval.hard_by,
            confidence_level=cfg.eval.confidence_level, resamples=cfg.eval.bootstrap_resamples, seed=cfg.seed,
            min_slice_size=cfg.eval.min_slice_size, metric_kwargs=task.eval_metric_kwargs(run.path),
            metric_options=cfg.eval.metric_options,
            row_input=task.row_input, run_id=run.run_id, test_data=test_info,
        )
    except VerifilyTrainError:
        raise
    except Exception as exc:
        raise EvalError(f"metric computation failed: {type(exc).__name__}: {exc}") from exc
    result.test_data_path = test_info["path"]
    result.created_at = utc_now()
    result.eval_duration_seconds = round(time.monotonic() - started, 3)
    eval_dir = Path(output) if output else run.path / "eval"
    write_eval_files(result, eval_dir, run_path=run.path)
    registries.hook.verifily_eval_written(run=run, result=result, eval_dir=eval_dir)
    return result


def read_test_rows(cfg: TrainConfig, regs: Any, task: Any, test_data: str | Path | None) -> tuple[list[dict], dict]:
    """The rows evaluation scores (``test_data``, else the run dataset's test split), validated by
    the task, and what they are (``path``, ``sha256``, ``num_examples``, ``split``).

    :raises DataError: the file or split is missing, or a row is invalid (``file:line``).
    """
    from verifily_core.datasets import resolve_dataset
    from verifily_core.datasets.rows import iter_jsonl, scan_file

    if test_data is not None:
        path = Path(test_data)
        if not path.is_file():
            raise DataError(f"{path}: test data file not found")
        scan = scan_file(path, task.validate_row)
        scan.raise_if_invalid()
        rows = [row for _, row in iter_jsonl(path)]
        return rows, {"path": str(path), "sha256": scan.sha256, "num_examples": len(rows), "split": None}
    dataset = resolve_dataset(cfg, regs)
    if not dataset.has_split("test"):
        raise DataError(f"dataset {dataset.ref or 'data_paths'} has no test split; pass --test-data FILE")
    f = dataset.file("test")
    rows = dataset.read_rows("test")
    return rows, {"path": str(dataset.split_path("test")), "sha256": f.sha256, "num_examples": len(rows),
                  "split": "test", "dataset": dataset.ref}


def _gold_rows(path: Path, task: Any) -> list[dict]:
    """Rows of ``eval.gold_set``, validated like test rows (they count only for gold metrics)."""
    from verifily_core.datasets.rows import iter_jsonl, scan_file

    if not path.is_file():
        raise DataError(f"{path}: eval.gold_set file not found")
    scan_file(path, task.validate_row).raise_if_invalid()
    return [row for _, row in iter_jsonl(path)]


def load_run_model(run: Any, cfg: TrainConfig, regs: Any, device: str, hf_token: str | None,
                   options: Any = None) -> Any:
    """Rebuild a run's model from its directory alone, through the same assembly as training
    (the loader the run recorded, else the configured or selected one); returns the
    :class:`~verifily_core.modeling.AssembledModel`."""
    from verifily_core.modeling import ModelSource, assemble_model

    return assemble_model(ModelSource(cfg, regs, hf_token), device, options, trained_run=run.path,
                          loader=run.model.get("loader"))


class Predictor:
    """A run's model, loaded (through the assembly evaluation uses) at the first call and kept,
    predicting rows on each call."""

    def __init__(self, run: Any, cfg: TrainConfig, regs: Any, task: Any, device: str, batch_size: int,
                 hf_token: str | None) -> None:
        self.run, self.cfg, self.regs, self.task, self.batch_size = run, cfg, regs, task, batch_size
        self.device, self.hf_token, self.built, self.options = device, hf_token, None, None

    def __call__(self, rows: Sequence[Mapping[str, Any]], needs: frozenset[str] | None = None) -> list[dict[str, Any]]:
        """The task's predictions for ``rows`` (``needs``: what the caller reads, see :meth:`Task.predict`)."""
        if self.built is None:
            from verifily_core.modeling import quiet_libraries, resolve_device

            quiet_libraries()
            self.device = resolve_device(self.device)
            self.options = self.task.trained_options(self.task.parse_options(self.cfg.task_options), self.run.path)
            self.built = load_run_model(self.run, self.cfg, self.regs, self.device, self.hf_token, self.options)
        extra = {"needs": needs} if "needs" in inspect.signature(self.task.predict).parameters else {}
        preds = self.task.predict(self.built.model, self.built.tokenizer, rows, self.built.kind, self.cfg,
                                  self.options, self.batch_size, self.device, **extra)
        if len(preds) != len(rows):
            raise EvalError(f"task '{self.cfg.task}' returned {len(preds)} predictions for {len(rows)} rows")
        return preds


def _records(rows: list[dict], preds: list[dict]) -> list[dict[str, Any]]:
    from verifily_core.datasets import row_id

    return [{"index": i, "row_id": row_id(row), "prediction": p["prediction"], "reference": p["reference"],
             "scores": dict(p.get("scores") or {}), "tags": dict(row.get("tags") or {}), "row": row}
            for i, (row, p) in enumerate(zip(rows, preds))]


def completed_run(run_path: str | Path, what: str) -> Any:
    """The run at ``run_path`` (a path or run id), which must be completed.

    :param what: what the caller will do with it, for the message ("export it").
    :raises EvalError: the run is not completed.
    """
    run = load_run(run_path)
    if run.status != STATUS_COMPLETED:
        raise EvalError(f"{run.path}: run status is '{run.status}'; a run must be completed to {what}")
    return run


def verified_config(run: Any, what: str, verify: bool = True) -> TrainConfig:
    """The run's config, after (with ``verify``) its files were checked against its hashes.

    :raises EvalError: the run does not verify.
    """
    if verify:
        from verifily_core.reproduction.verify import require_intact

        require_intact(run, what, eval_files=False, error=EvalError)
    return TrainConfig.from_yaml(run.path / "config.yaml")


def load_verified_run(run_path: str | Path, what: str, verify: bool = True) -> tuple[Any, TrainConfig]:
    """A completed run and its config, its files checked against its hashes first
    (:func:`completed_run`, then :func:`verified_config`)."""
    run = completed_run(run_path, what)
    return run, verified_config(run, what, verify)


class RunPredictor:
    """A completed run's model for rows without references: call it with rows to get
    ``{"prediction", "scores"}`` per row, rendered and predicted exactly as evaluation does,
    nothing scored or written; ``scores`` holds the task's ``prediction_scores`` only (a
    reference may be a placeholder). The model loads at the first call and is kept."""

    def __init__(self, run: Any, cfg: TrainConfig, registries: Any, device: str, batch_size: int | None,
                 hf_token: str | None) -> None:
        self.run, self.task = run, registries.tasks.get(cfg.task)
        self._placeholder = self.task.reference_placeholder(run.path)
        self._predict = Predictor(run, cfg, registries, self.task, device, batch_size or cfg.eval.batch_size, hf_token)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Predictions for ``rows``. :raises DataError: a row the task refuses (named by its position)."""
        ready = []
        for i, row in enumerate(rows, 1):
            row = self.task.with_reference(row, self._placeholder)  # predicting needs no reference
            problem = self.task.validate_row(row)
            if problem:
                raise DataError(f"row {i}: {problem}")
            ready.append(row)
        keep = set(self.task.prediction_scores)
        preds = self._predict(ready, frozenset({PREDICTION})) if ready else []
        return [{"prediction": p["prediction"],
                 "scores": {k: v for k, v in (p.get("scores") or {}).items() if k in keep}} for p in preds]

    def text_row(self, text: str, context: str | None = None) -> dict[str, Any]:
        """The row for a free-text prompt, in the form the run was trained on (see :meth:`Task.text_row`)."""
        return self.task.text_row(text, context, self.run.path)


def load_predictor(run_path: str | Path, *, registries: Any, device: str = "auto", batch_size: int | None = None,
                   hf_token: str | None = None, verify: bool = True) -> RunPredictor:
    """A :class:`RunPredictor` for the completed run at ``run_path``.

    :raises EvalError: the run is not completed or does not verify (unless ``verify`` is false).
    """
    run, cfg = load_verified_run(run_path, "predict with it", verify)
    return RunPredictor(run, cfg, registries, device, batch_size, hf_token)


def predict_rows(run_path: str | Path, rows: Sequence[Mapping[str, Any]], *, registries: Any, device: str = "auto",
                 batch_size: int | None = None, hf_token: str | None = None, verify: bool = True) -> list[dict[str, Any]]:
    """:func:`load_predictor` applied to ``rows`` once."""
    return load_predictor(run_path, registries=registries, device=device, batch_size=batch_size,
                          hf_token=hf_token, verify=verify)(rows)