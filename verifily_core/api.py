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
