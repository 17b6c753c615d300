"""Built-in plugin ``mlflow``: experiment tracking with MLflow (extra ``mlflow``).

Off unless ``tracking.mlflow.enabled`` is true. A tracked run gets an MLflow run with the resolved
config as parameters, the training and validation metrics of every logging step and evaluation,
the test metrics overall and per slice, its files as artifacts and its lineage as tags (git state,
library versions, dataset ref and hashes, run id and reproducibility hash); its MLflow run id is
recorded in ``run_meta.json`` ``tracking.mlflow``. See ``docs/tracking.md``.

This module imports neither MLflow nor transformers: they load when a tracked run starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from verifily_core import hookimpl
from verifily_core.errors import ConfigError


def _enabled(config: Any) -> bool:
    from verifily_mlflow.options import SECTION, options_of

    if SECTION not in config.tracking:
        return False
    try:
        return options_of(config).enabled
    except ConfigError:
        return False


@hookimpl
def verifily_tracking_sections() -> list[str]:
    """``tracking.mlflow``."""
    from verifily_mlflow.options import SECTION

    return [SECTION]


@hookimpl
def verifily_validate_config(config: Any) -> list[str]:
    """``tracking.mlflow`` fields and types, and MLflow installed when it is enabled."""
    from verifily_mlflow.options import SECTION, options_of

    if not isinstance(config.tracking.get(SECTION, {}), dict):
        return []  # reported by the core
    try:
        opts = options_of(config)
    except ConfigError as exc:
        return [str(exc)]
    if opts.enabled:
        from importlib.util import find_spec

        if find_spec("mlflow") is None:
            return ["$.tracking.mlflow.enabled: MLflow is not installed; pip install 'verifily-train[mlflow]' "
                    "or set tracking.mlflow.enabled=false"]
    return []


@hookimpl
def verifily_trainer_callbacks(config: Any, run_dir: Path) -> list[Any]:
    """Start the MLflow run of a tracked run and return the callback that logs its metrics."""
    if not _enabled(config):
        return []
    from verifily_mlflow.tracker import MlflowCallback, start

    tracker = start(config, Path(run_dir))
    return [MlflowCallback(tracker)] if tracker is not None else []


@hookimpl
def verifily_tracking_records(run_dir: Path) -> dict[str, Any] | None:
    """``{"mlflow": {"run_id", "experiment_id", "experiment_name", "tracking_uri"}}`` of a tracked run."""
    import sys

    tracker_module = sys.modules.get("verifily_mlflow.tracker")
    if tracker_module is None:
        return None
    tracker = tracker_module.ACTIVE.get(tracker_module.run_id_of(Path(run_dir)))
    if tracker is None or tracker.broken:
        return None
    from verifily_mlflow.options import SECTION

    return {SECTION: tracker.record()}


@hookimpl
def verifily_run_written(run: Any) -> None:
    """Log the sealed run's files and final metrics, and finish its MLflow run."""
    import sys

    if "verifily_mlflow.tracker" in sys.modules:
        sys.modules["verifily_mlflow.tracker"].run_written(run)


@hookimpl
def verifily_eval_written(run: Any, result: Any, eval_dir: Path) -> None:
    """Log the test metrics and evaluation files of a tracked run."""
    from verifily_mlflow.options import SECTION

    if SECTION not in (getattr(run, "tracking", None) or {}):
        return
    from verifily_mlflow.tracker import eval_written

    eval_written(run, result, Path(eval_dir))


@hookimpl
def verifily_extend_command(name: str, command: Any) -> None:
    """``verifily reproduce --mlflow-run ID [--tracking-uri URI]``."""
    if name == "reproduce":
        from verifily_mlflow.reproduce import extend

        extend(command)
