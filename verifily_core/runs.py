"""``Run``: the record of a training run and its directory (the contract other tools read).

Layout (``docs/run-directory.md``)::

    <output.dir>/<run_id>/
      run_meta.json  config.yaml  hashes.json  environment.json  train_log.jsonl
      adapter/  tokenizer/  eval/

``run_meta.json`` carries ``format_version``; readers refuse versions they do not know.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from verifily_core.errors import DataError

RUN_FORMAT_VERSION = 1
RUN_META = "run_meta.json"
STATUS_COMPLETED = "completed"
STATUS_FAILED = "failed"
STATUS_RUNNING = "running"
PARTIAL_SUFFIX, FAILED_SUFFIX = ".partial", ".failed"
"""Suffixes of a run folder in progress (or killed) and of a failed run; a completed run has none."""


@attrs.frozen
class Run:
    """An immutable record of a training run, read from or written to its directory."""

    run_id: str
    name: str | None
    status: str
    task: str
    base_model: str
    dataset: dict[str, Any]
    started_at: str
    completed_at: str | None
    duration_seconds: float | None
    metrics: dict[str, Any]
    artifact_path: str
    config_hash: str
    data_hash: str
    env_hash: str
    reproducibility_hash: str
    error: str | None = None
    model: dict[str, Any] = attrs.field(factory=dict)
    """How the model was assembled: ``loader``, ``kind``, ``auto_class`` (empty in older runs)."""
    tracking: dict[str, Any] = attrs.field(factory=dict)
    """The records external trackers keep of the run, by tracker (e.g. a tracking server's run
    id; see the ``verifily_tracking_records`` hook); empty when the run was not tracked."""
    optimizations: dict[str, Any] = attrs.field(factory=dict)
    """What training ran with: ``optimizer_type``, ``precision``, ``tf32``, ``attention_implementation``,
    ``gradient_checkpointing``, ``compile`` (empty in older runs)."""
    distributed: dict[str, Any] = attrs.field(factory=dict)
    """How many processes trained the run: ``world_size``, ``num_nodes``, ``backend`` (``gloo``,
    ``nccl`` or ``null`` for one process), ``per_device_batch_size``, ``gradient_accumulation_steps``
    and ``global_batch_size`` (their product with the world size; empty in older runs)."""

    @property
    def path(self) -> Path:
        """The run directory."""
        return Path(self.artifact_path)

    def to_meta(self) -> dict[str, Any]:
        """The ``run_meta.json`` document."""
        meta = {"format_version": RUN_FORMAT_VERSION}
        meta.update(attrs.asdict(self))
        meta["hashes"] = {
            k: meta.pop(k) for k in ("config_hash", "data_hash", "env_hash", "reproducibility_hash")
        }
        return meta


def find_run_dir(ref: str | Path, search_dirs: tuple[str | Path, ...] = ("runs",)) -> Path:
    """Resolve a run path or run id (looked up in ``search_dirs``) to its directory."""
    p = Path(ref)
    if (p / RUN_META).is_file():
        return p
    for base in search_dirs:
        candidate = Path(base) / str(ref)
        if (candidate / RUN_META).is_file():
            return candidate
    raise DataError(f"{ref}: not a run directory (no {RUN_META}); pass a run path or an id found in "
                    f"{', '.join(map(str, search_dirs))}")


def load_run(ref: str | Path, search_dirs: tuple[str | Path, ...] = ("runs",)) -> Run:
    """Read a run directory's ``run_meta.json`` into a :class:`Run`.

    The folder's suffix outranks the file: a ``<run_id>.failed`` folder is ``failed`` even when a
    full disk kept its ``run_meta.json`` from being rewritten, and a ``<run_id>.partial`` folder
    is never ``completed`` (a kill between writing the final ``run_meta.json`` and the rename
    leaves one; it is ``running`` until resumed).
    """
    path = find_run_dir(ref, search_dirs)
    try:
        meta = json.loads((path / RUN_META).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path / RUN_META}: unreadable ({exc})") from None
    version = meta.get("format_version")
    if version != RUN_FORMAT_VERSION:
        raise DataError(f"{path / RUN_META}: format_version {version!r} is not supported "
                        f"(this verifily reads {RUN_FORMAT_VERSION})")
    hashes = meta.get("hashes", {})
    fields = {a.name for a in attrs.fields(Run)}
    values = {k: v for k, v in meta.items() if k in fields}
    values.update({k: hashes.get(k, "") for k in ("config_hash", "data_hash", "env_hash", "reproducibility_hash")})
    values["artifact_path"] = str(path)
    if path.name.endswith(FAILED_SUFFIX) and values.get("status") != STATUS_FAILED:
        values["status"] = STATUS_FAILED
        values["error"] = values.get("error") or (f"the run failed ({path.name}); its {RUN_META} still says "
                                                  f"'{meta.get('status')}' (it could not be rewritten)")
    elif path.name.endswith(PARTIAL_SUFFIX) and values.get("status") == STATUS_COMPLETED:
        values["status"] = STATUS_RUNNING
    try:
        return Run(**values)
    except TypeError as exc:
        raise DataError(f"{path / RUN_META}: missing fields ({exc})") from None


def list_runs(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Every run directory under ``runs_dir`` (completed, ``.partial``, ``.failed``) summarised,
    newest first: ``run_id``, ``name``, ``status``, ``path``, ``task``, ``dataset``,
    ``started_at``, ``metrics`` (the training metrics and, for evaluated runs,
    ``test_<metric>``) and ``error``. A directory whose ``run_meta.json`` cannot be read is
    listed with status ``unreadable``; a ``.partial``/``.failed`` one that has none yet (stopped
    right after it was created) as ``running``/``failed`` with that error. Statuses follow the
    folder suffix (see :func:`load_run`).

    :raises DataError: when ``runs_dir`` is not a directory.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise DataError(f"{runs_dir}: no such directory; pass --runs-dir (the output.dir of your configs)")
    rows = [_summary(meta.parent) for meta in sorted(root.glob(f"*/{RUN_META}"))]
    rows += [_without_meta(p) for p in sorted(root.iterdir())
             if p.name.endswith((PARTIAL_SUFFIX, FAILED_SUFFIX)) and p.is_dir() and not (p / RUN_META).is_file()]
    return sorted(rows, key=lambda r: r["started_at"] or "", reverse=True)


def _without_meta(path: Path) -> dict[str, Any]:
    """A run folder stopped (killed, or out of space) before its first ``run_meta.json``."""
    failed = path.name.endswith(FAILED_SUFFIX)
    return {"run_id": path.name.rsplit(".", 1)[0], "name": None, "status": STATUS_FAILED if failed else STATUS_RUNNING,
            "path": str(path), "task": None, "dataset": None, "started_at": None, "metrics": {},
            "error": f"stopped before {RUN_META} was written; nothing to resume, remove the folder"}


def _summary(path: Path) -> dict[str, Any]:
    from verifily_core.errors import EvalError
    from verifily_core.evaluation.result import load_eval_result

    try:
        run = load_run(path)
    except DataError:
        return {"run_id": path.name, "name": None, "status": "unreadable", "path": str(path), "task": None,
                "dataset": None, "started_at": None, "metrics": {}, "error": f"{RUN_META} unreadable"}
    metrics = {k: v for k, v in run.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if (path / "eval").is_dir():
        try:
            metrics.update({f"test_{k}": v for k, v in load_eval_result(path / "eval").overall.items()})
        except EvalError:
            pass  # an unreadable evaluation adds no test metrics
    return {"run_id": run.run_id or path.name, "name": run.name, "status": run.status or "unknown", "path": str(path),
            "task": run.task, "dataset": run.dataset.get("ref") or "data_paths", "started_at": run.started_at,
            "metrics": metrics, "error": run.error}
