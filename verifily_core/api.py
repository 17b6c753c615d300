"""The public Python API: ``train``, ``evaluate``, ``compare``, ``reproduce``.

The CLI is a thin wrapper over these functions. Heavy libraries are imported only
when a function actually trains or evaluates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from verifily_core.config import TrainConfig
from verifily_core.plugins import Registries


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
) -> Any:
    """Run a training job and return the finished :class:`~verifily_core.runs.Run`.

    With ``dry_run=True`` nothing is trained and the validated
    :class:`~verifily_core.training.TrainPlan` is returned instead.
    Raises ConfigError, DataError or TrainingError on failure.
    """
    from verifily_core.training import execute_plan, plan_training

    flags = {
        "dataset_version": dataset,
        "base_model": base_model,
        "output.dir": output_dir,
        "compute.device": device,
        "seed": seed,
        "output.name": name,
    }
    plan = plan_training(config, overrides=overrides, flags=flags, registries=registries)
    if dry_run:
        return plan
    return execute_plan(plan, resume_from=resume_from, hf_token=hf_token)


def evaluate(run_path: str | Path, test_data: str | None = None, metrics: list[str] | None = None,
             slice_by: list[str] | None = None, hard_examples: int | None = None, output: str | None = None,
             device: str = "auto", batch_size: int | None = None, hf_token: str | None = None,
             registries: Registries | None = None) -> Any:
    """Evaluate a run's model on its test split (or ``test_data``), write ``eval/`` (or
    ``output``) and return the :class:`~verifily_core.evaluation.result.EvalResult`.

    ``metrics``, ``slice_by``, ``hard_examples`` and ``batch_size`` default to the run's
    ``eval`` config. Raises ConfigError, DataError or EvalError on failure.
    """
    from verifily_core.evaluator import evaluate as _evaluate

    return _evaluate(run_path, test_data=test_data, metrics=metrics, slice_by=slice_by, hard_examples=hard_examples,
                     output=output, device=device, batch_size=batch_size, hf_token=hf_token, registries=registries)


def compare(run_paths: list[str] | tuple[str, ...], metric: str = "f1", slice_by: str | None = None,
            runs_dir: str | Path = "runs", confidence_level: float = 0.95, resamples: int = 1000, seed: int = 42,
            data_changes: bool = True, registries: Registries | None = None) -> Any:
    """Compare ``metric`` across evaluated runs (the first is the baseline), overall and per
    slice, with paired-bootstrap intervals of each delta and, with ``data_changes``, the
    training rows that changed between their dataset versions. Reads ``eval_results.json``
    files only. Returns a :class:`~verifily_core.comparison.result.CompareResult`."""
    from verifily_core.comparison.compare_runs import compare as _compare

    return _compare(run_paths, metric=metric, slice_by=slice_by, runs_dir=runs_dir,
                    confidence_level=confidence_level, resamples=resamples, seed=seed, data_changes=data_changes,
                    registries=registries)


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
                         runs_dir=runs_dir, hf_token=hf_token, registries=registries)
