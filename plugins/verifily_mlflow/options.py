"""``tracking.mlflow`` of ``train.yaml``: the settings of MLflow tracking (imports no MLflow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from attrs import define, field

from verifily_core.structuring import structure

SECTION = "mlflow"
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"


@define
class MlflowOptions:
    """What ``tracking.mlflow`` may hold (see ``docs/tracking.md``)."""

    enabled: bool = False
    tracking_uri: str | None = None
    """Where runs are recorded; default ``sqlite:///<output.dir>/mlflow.db`` (no server needed)."""
    experiment_name: str = "verifily"
    run_name: str | None = None
    """The MLflow run's name; default ``output.name``, else the verifily run id."""
    artifact_location: str | None = None
    """Where a new experiment keeps its artifacts; default ``<folder of the SQLite file>/mlartifacts``
    for a ``sqlite:`` URI, the server's choice otherwise."""
    log_model: bool = True
    """Log the trained adapter (``adapter/``) as artifacts under ``model/``."""
    parent_run_id: str | None = None
    """Nest the run under this MLflow run (set by ``verifily hpo`` for its trials)."""
    tags: dict[str, Any] = field(factory=dict)
    """Extra tags of the MLflow run (strings, numbers or booleans)."""


def parse_options(section: Mapping[str, Any] | None) -> MlflowOptions:
    """Structure ``tracking.mlflow``; errors name ``$.tracking.mlflow.<field>``."""
    opts = structure(dict(section or {}), MlflowOptions, root=f"$.tracking.{SECTION}")
    for key, value in opts.tags.items():
        if isinstance(value, (dict, list)) or value is None:
            from verifily_core.errors import ConfigError

            raise ConfigError(f"$.tracking.{SECTION}.tags.{key}: expected a string, number or boolean")
    return opts


def options_of(config: Any) -> MlflowOptions:
    """The parsed ``tracking.mlflow`` of a resolved config (defaults when absent)."""
    return parse_options(config.tracking.get(SECTION))


def resolved_uri(opts: MlflowOptions, output_dir: str) -> str:
    """``tracking_uri``, or the default SQLite file beside the runs (an absolute path)."""
    if opts.tracking_uri:
        return opts.tracking_uri
    return f"sqlite:///{(Path(output_dir).expanduser().resolve() / DB_FILE).as_posix()}"


def default_artifact_location(uri: str) -> str | None:
    """``<folder of the SQLite file>/mlartifacts`` for a ``sqlite:`` URI, else ``None`` (the server decides)."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])  # sqlite:////abs/x.db or sqlite:///relative.db
    return (db.parent.resolve() / ARTIFACTS_DIR).as_uri()


def shown_uri(uri: str) -> str:
    """``uri`` without credentials (``https://user:pass@host`` -> ``https://host``), to print or record."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = host + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return uri
