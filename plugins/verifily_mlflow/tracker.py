"""The MLflow side of a tracked run: the MLflow run, the Trainer callback, and what is logged when
the run is sealed and when it is evaluated. Imports MLflow; loaded only when tracking is on.

Every call to the tracking server goes through :meth:`Tracker.call`: a failure prints one warning
naming the tracking URI and stops tracking that run; the verifily run goes on and is sealed as usual.
"""

from __future__ import annotations

import atexit
import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from transformers import TrainerCallback

from verifily_core.config import redact
from verifily_core.files import read_json
from verifily_core.runs import FAILED_SUFFIX, PARTIAL_SUFFIX, RUN_META
from verifily_mlflow.lineage import config_params, file_hash_tags, git_tags, run_tags, version_tags
from verifily_mlflow.names import final_metrics, step_metrics, tracked_test_metrics
from verifily_mlflow.options import SECTION, default_artifact_location, options_of, resolved_uri, shown_uri

log = logging.getLogger("verifily.mlflow")
BATCH = 100
"""Parameters and tags per request (MLflow accepts at most 100 parameters in one batch)."""
ACTIVE: dict[str, "Tracker"] = {}
"""Trackers of runs being trained in this process, by verifily run id."""


def quiet() -> None:
    """Keep MLflow's and alembic's info lines (database migrations) off the terminal."""
    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


def client_for(uri: str) -> Any:
    quiet()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def warn(uri: str, what: str, exc: BaseException) -> None:
    """The one line a tracker failure prints."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    log.warning("MLflow tracking at %s failed while %s (%s: %s); the run continues untracked",
                shown_uri(uri), what, type(exc).__name__, first[:300])


def experiment_id(client: Any, name: str, uri: str, artifact_location: str | None) -> str:
    """The id of experiment ``name``, created (with ``artifact_location``) when missing."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location or default_artifact_location(uri))
    except Exception:  # created meanwhile by another process (parallel trials)
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def log_batch(client: Any, run_id: str, metrics: Mapping[str, float] = {}, params: Mapping[str, str] = {},
              tags: Mapping[str, str] = {}, step: int = 0) -> None:
    """Metrics (at ``step``), parameters and tags in batches MLflow accepts."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    for i in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[i:i + 1000])
    plist = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, len(plist), BATCH):
        client.log_batch(run_id, params=plist[i:i + BATCH])
    tlist = [RunTag(k, str(v)) for k, v in tags.items()]
    for i in range(0, len(tlist), BATCH):
        client.log_batch(run_id, tags=tlist[i:i + BATCH])


class Tracker:
    """One verifily run's MLflow run."""

    def __init__(self, uri: str, client: Any, run_id: str, experiment_id: str, experiment_name: str) -> None:
        self.uri, self.client, self.run_id = uri, client, run_id
        self.experiment_id, self.experiment_name = experiment_id, experiment_name
        self.broken = False

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` unless tracking failed before; a failure warns once and stops tracking."""
        if self.broken:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            self.broken = True
            warn(self.uri, what, exc)
            return None

    def record(self) -> dict[str, Any]:
        """What ``run_meta.json`` ``tracking.mlflow`` holds."""
        return {"run_id": self.run_id, "experiment_id": self.experiment_id,
                "experiment_name": self.experiment_name, "tracking_uri": shown_uri(self.uri)}


def run_id_of(run_dir: Path) -> str:
    """The verifily run id of a run folder (``<run_id>``, ``<run_id>.partial`` or ``.failed``)."""
    name = run_dir.name
    for suffix in (PARTIAL_SUFFIX, FAILED_SUFFIX):
        name = name.removesuffix(suffix)
    return name


def start(config: Any, run_dir: Path) -> Tracker | None:
    """Create the MLflow run of the verifily run being written at ``run_dir``: parameters (the
    resolved config), lineage tags and the dataset input. ``None`` when that fails (warned)."""
    opts = options_of(config)
    uri = resolved_uri(opts, config.output.dir)
    try:
        client = client_for(uri)
        exp = experiment_id(client, opts.experiment_name, uri, opts.artifact_location)
        meta = read_json(run_dir / RUN_META)
        env = read_json(run_dir / "environment.json")
        verifily_id = run_id_of(run_dir)
        tags = {**git_tags(), **version_tags(env), **run_tags(meta),
                "verifily.run_dir": str((run_dir.parent / verifily_id).resolve())}
        tags.update({str(k): str(v) for k, v in opts.tags.items()})
        if opts.parent_run_id:
            tags["mlflow.parentRunId"] = opts.parent_run_id
        name = opts.run_name or config.output.name or verifily_id
        run = client.create_run(exp, run_name=name, tags={"mlflow.source.name": "verifily train"})
        tracker = Tracker(uri, client, run.info.run_id, exp, opts.experiment_name)
        log_batch(client, tracker.run_id, params=config_params(redact(config.to_dict())), tags=tags)
        _log_dataset(client, tracker.run_id, meta)
    except Exception as exc:
        warn(uri, "starting the run", exc)
        return None
    ACTIVE[verifily_id] = tracker
    return tracker


def _log_dataset(client: Any, run_id: str, meta: Mapping[str, Any]) -> None:
    """The dataset version as the run's input, its content hash as the digest."""
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = meta.get("dataset") or {}
    digest = str(dataset.get("content_hash") or "").removeprefix("sha256:")
    if not digest:
        return
    source = json.dumps({"ref": dataset.get("ref"), "files": dataset.get("files")}, sort_keys=True)
    entity = Dataset(name=str(dataset.get("ref") or "data_paths"), digest=digest[:36], source_type="verifily",
                     source=source, profile=json.dumps({"content_hash": dataset.get("content_hash")}))
    client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", "train")])])


class MlflowCallback(TrainerCallback):
    """Sends each logging step (``train_loss``, ``lr``, ``grad_norm``) and each evaluation of the val
    split (``val_loss``, ``val_<metric>``) to the MLflow run, at the Trainer's global step."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if not logs or not state.is_world_process_zero:
            return
        metrics = step_metrics(logs)
        if metrics:
            self.tracker.call("logging metrics", log_batch, self.tracker.client, self.tracker.run_id, metrics,
                              step=state.global_step)


def run_written(run: Any) -> None:
    """The sealed run: per-file dataset hashes, ``final_*`` metrics, the config, adapter and the run's
    records as artifacts; the MLflow run is then finished (an evaluation may still add to it)."""
    tracker = ACTIVE.pop(run.run_id, None)
    if tracker is None:
        return
    path, client = run.path, tracker.client
    hashes = read_json(path / "hashes.json") if (path / "hashes.json").is_file() else {}
    tracker.call("logging the run", log_batch, client, tracker.run_id, final_metrics(run.metrics),
                 tags={**file_hash_tags(hashes), "verifily.status": run.status}, step=int(run.metrics.get("train_steps") or 0))
    tracker.call("logging config.yaml", client.log_artifact, tracker.run_id, str(path / "config.yaml"), "config")
    for name in ("run_meta.json", "hashes.json", "environment.json", "train_log.jsonl"):
        if (path / name).is_file():
            tracker.call(f"logging {name}", client.log_artifact, tracker.run_id, str(path / name), "verifily")
    if options_of(_config(path)).log_model:
        for name in ("adapter", "model"):
            if (path / name).is_dir():
                tracker.call(f"logging {name}/", client.log_artifacts, tracker.run_id, str(path / name), f"model/{name}")
        for extra in sorted(p for p in path.glob("*.json") if p.name not in (RUN_META, "hashes.json", "environment.json")):
            tracker.call(f"logging {extra.name}", client.log_artifact, tracker.run_id, str(extra), "model")
    tracker.call("finishing the run", client.set_terminated, tracker.run_id, "FINISHED")


def _config(path: Path) -> Any:
    from verifily_core.config import TrainConfig

    return TrainConfig.from_yaml(path / "config.yaml")


def eval_written(run: Any, result: Any, eval_dir: Path) -> None:
    """The evaluation of a tracked run (``run_meta.json`` ``tracking.mlflow``) written to its own
    ``eval/``: test metrics overall and per slice with their bounds, and the evaluation's files under
    ``eval/`` (an evaluation written elsewhere, e.g. by ``reproduce --mode eval``, is not logged)."""
    record = (getattr(run, "tracking", None) or {}).get(SECTION)
    if not record or Path(eval_dir).resolve() != (run.path / "eval").resolve():
        return
    uri = str(record.get("tracking_uri"))
    try:
        client = client_for(uri)
        tracker = Tracker(uri, client, str(record["run_id"]), str(record.get("experiment_id")),
                          str(record.get("experiment_name")))
    except Exception as exc:
        warn(uri, "logging the evaluation", exc)
        return
    tracker.call("logging test metrics", log_batch, client, tracker.run_id, tracked_test_metrics(result),
                 step=int(run.metrics.get("train_steps") or 0))
    for item in sorted(Path(eval_dir).iterdir()):
        if item.is_file() and not item.name.startswith("."):
            tracker.call(f"logging eval/{item.name}", client.log_artifact, tracker.run_id, str(item), "eval")


@atexit.register
def _unfinished() -> None:
    """Runs that never completed in this process (training failed or was interrupted) end FAILED."""
    for tracker in list(ACTIVE.values()):
        tracker.call("marking the run failed", tracker.client.set_terminated, tracker.run_id, "FAILED")
    ACTIVE.clear()
