"""Writing a run directory atomically (see ``docs/run-directory.md``).

A run is written under ``<output.dir>/<run_id>.partial/``; on success it is sealed (hashes
last) and renamed to ``<output.dir>/<run_id>/`` and made read-only; on failure it is marked
failed and renamed to ``<run_id>.failed/``. A completed-looking directory is never left
half-written: only the final rename makes a run complete, and the folder's suffix outranks its
``run_meta.json`` (a full disk can keep the failure from being written into it; see
:func:`verifily_core.runs.load_run`).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any, Callable

from verifily_core.files import read_json, write_json, write_text
from verifily_core.base_model import record_base_model
from verifily_core.environment import collect_environment, env_hash, plugin_packages
from verifily_core.hashing import hash_tree, reproducibility_hash
from verifily_core.jobs import TrainJob, utc_now
from verifily_core.run_lock import RunLock, lock_run
from verifily_core.runs import (
    FAILED_SUFFIX, PARTIAL_SUFFIX, RUN_FORMAT_VERSION, RUN_META, STATUS_COMPLETED, STATUS_FAILED, STATUS_RUNNING, Run,
)

PARTIAL, FAILED = PARTIAL_SUFFIX, FAILED_SUFFIX
CHECKPOINTS = "checkpoints"
REMOVING = f".{CHECKPOINTS}.removing"
"""Where the checkpoints go while they are removed at sealing (removed by a resume if a kill left it)."""
log = logging.getLogger("verifily.run")


def _unlocking(method: Callable[..., Run]) -> Callable[..., Run]:
    """``method`` lets the run's lock go when it returns or raises."""
    @functools.wraps(method)
    def wrapper(self: RunWriter, *args: Any, **kwargs: Any) -> Run:
        try:
            return method(self, *args, **kwargs)
        finally:
            self.release()
    return wrapper


class RunWriter:
    """Owns one run directory from start to seal."""

    def __init__(self, job: TrainJob, device: str, resume_dir: Path | None = None) -> None:
        self.job = job
        self.device = device
        self.output_dir = resume_dir.parent if resume_dir else Path(job.config.output.dir)  # resumed: stay beside it
        self.path = resume_dir or self.output_dir / f"{job.job_id}{PARTIAL}"
        self.started_monotonic = time.monotonic()
        self.started_at = utc_now()
        self.environment = collect_environment(device, packages=plugin_packages(job.registries, job.config))
        self.env_hash = env_hash(self.environment)
        self.model: dict[str, str] = {}
        self.optimizations: dict[str, Any] = {}
        self.base_commit: str | None = None
        self.tracking: dict[str, Any] = {}
        self.distributed: dict[str, Any] = distributed_record(job.config)
        self._lock: RunLock | None = None

    def record_optimizations(self, description: dict[str, Any]) -> None:
        """The speed and memory settings training runs with (optimizer, precision, attention, ...),
        written into ``run_meta.json`` as ``optimizations``."""
        self.optimizations = dict(description)

    def record_model(self, description: dict[str, str], commit: str | None = None) -> None:
        """How the model was assembled (loader, kind, Auto class), written into ``run_meta.json``,
        and the Hub commit the base model resolved to (``hashes.json`` ``base_model``)."""
        self.model = dict(description)
        self.base_commit = commit

    @property
    def checkpoints(self) -> Path:
        """Where Trainer checkpoints go while the run is in progress."""
        return self.path / CHECKPOINTS

    def start(self, plugins: list[dict[str, Any]]) -> None:
        """Create and lock the directory (until :meth:`complete` or :meth:`fail`; see
        :mod:`verifily_core.run_lock`) and write the config, environment and a ``running`` run_meta
        (when resuming, temporary files a killed process left are removed first).

        :raises RunLocked: another process is training this run.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = lock_run(self.path)
        try:
            if (self.path / RUN_META).is_file():  # resuming: keep the original start time
                self.started_at = read_json(self.path / RUN_META).get("started_at", self.started_at)
                for stale in self.path.rglob(".*.tmp"):  # a killed process's half-written files
                    if stale.is_file():
                        stale.unlink()
                shutil.rmtree(self.path / REMOVING, ignore_errors=True)
            write_text(self.path / "config.yaml", self.job.config.to_yaml())
            env = dict(self.environment)
            env["info"] = {**env["info"], "device": self.device, "plugins": plugins}
            write_json(self.path / "environment.json", env)
            self._write_meta(STATUS_RUNNING, {}, None)
        except BaseException:
            self.release()
            raise

    def _run(self, status: str, metrics: dict[str, Any], error: str | None, path: Path) -> Run:
        job = self.job
        return Run(
            run_id=job.job_id, name=job.config.output.name, status=status, task=job.task,
            base_model=job.base_model, model=self.model, optimizations=self.optimizations, dataset=job.dataset.to_ref_dict(), started_at=self.started_at,
            completed_at=None if status == STATUS_RUNNING else utc_now(),
            duration_seconds=round(time.monotonic() - self.started_monotonic, 3),
            metrics=metrics, artifact_path=str(path), config_hash=job.config_hash, data_hash=job.data_hash,
            env_hash=self.env_hash,
            reproducibility_hash=reproducibility_hash(job.config_hash, job.data_hash, self.env_hash), error=error,
            tracking=self.tracking, distributed=self.distributed,
        )

    def _write_meta(self, status: str, metrics: dict[str, Any], error: str | None, final: Path | None = None) -> Run:
        run = self._run(status, metrics, error, final or self.path)
        write_json(self.path / RUN_META, run.to_meta(), default=str)
        return run

    def complete(self, metrics: dict[str, Any]) -> Run:
        """Seal the run: drop checkpoints, write run_meta and hashes.json, rename, make read-only,
        unlock. When sealing fails the lock stays held for :meth:`fail`, which the caller must call
        (no other process may take the run over before it is marked failed)."""
        self._drop_checkpoints()
        final = self.output_dir / self.job.job_id
        self.tracking = self._tracking_records()
        run = self._write_meta(STATUS_COMPLETED, metrics, None, final)
        self._write_cards(run)
        write_json(self.path / "hashes.json", {
            "format_version": RUN_FORMAT_VERSION,
            "config_hash": run.config_hash,
            "data_hash": run.data_hash,
            "data_files": self.job.dataset.data_files(),
            "env_hash": run.env_hash,
            "reproducibility_hash": run.reproducibility_hash,
            "base_model": record_base_model(str(self.job.base_model), self.base_commit),
            "artifacts": hash_tree(self.path),
        })
        (self.path / "eval").mkdir(exist_ok=True)
        os.rename(self.path, final)
        self.path = final
        try:
            _read_only(final)
        except OSError as exc:  # sealed already; read-only is a guard, not part of the contract
            log.warning("%s: could not make the run read-only (%s)", final, exc.strerror or exc)
        self.release()
        return run

    def _tracking_records(self) -> dict[str, Any]:
        """What trackers recorded of this run (``verifily_tracking_records``); a failing plugin is
        named in a warning and leaves the run untouched."""
        records: dict[str, Any] = {}
        try:
            for answer in self.job.registries.hook.verifily_tracking_records(run_dir=self.path, config=self.job.config):
                records.update(answer or {})
        except Exception as exc:  # a tracker never fails the run it observes
            log.warning("tracking records of %s not written: %s: %s", self.path.name, type(exc).__name__, exc)
        return records

    def _drop_checkpoints(self) -> None:
        """Remove ``checkpoints/``, renamed out of the way first: a kill in the middle must not leave
        a checkpoint that looks complete (its ``trainer_state.json``) with files missing."""
        if not self.checkpoints.is_dir():
            return
        shutil.rmtree(self.path / REMOVING, ignore_errors=True)
        os.rename(self.checkpoints, self.path / REMOVING)
        shutil.rmtree(self.path / REMOVING, ignore_errors=True)

    def _write_cards(self, run: Run) -> None:
        """``README.md`` model cards in ``adapter/`` and ``model/`` (where the backend saved them),
        replacing the blank ones libraries write (see :mod:`verifily_core.model_card`)."""
        from verifily_core.model_card import render_card
        from verifily_core.slices import tag_counts

        folders = [(d, lib) for d, lib in (("adapter", "peft" if self.job.config.lora.enabled else "transformers"),
                                            ("model", "transformers")) if (self.path / d).is_dir()]
        if not folders:
            return
        dataset = {**self.job.dataset.to_ref_dict(), "files": [
            {"split": f.split, "num_rows": f.num_rows} for f in self.job.dataset.files]}
        tags = tag_counts(self.job.dataset.iter_rows("train"))
        hashes = {k: getattr(run, k) for k in ("reproducibility_hash", "config_hash", "data_hash", "env_hash")}
        for folder, library in folders:
            write_text(self.path / folder / "README.md", render_card(
                name=run.name, config=self.job.config, dataset=dataset, metrics=run.metrics,
                hashes=hashes, tags=tags, library=library))

    @_unlocking
    def fail(self, error: str, metrics: dict[str, Any] | None = None) -> Run:
        """Mark the run failed with its error and rename it to ``<run_id>.failed``.

        Never raises for the file system: when ``run_meta.json`` cannot be rewritten (a full disk)
        the rename, which needs no space, still marks the run failed; when the directory was never
        created there is nothing to mark.
        """
        final = self.output_dir / f"{self.job.job_id}{FAILED}"
        run = self._run(STATUS_FAILED, metrics or {}, error, final)
        if not self.path.is_dir():
            return run
        try:
            write_json(self.path / RUN_META, run.to_meta(), default=str)
        except OSError as exc:
            log.debug("%s: failure not recorded in run_meta.json (%s)", self.path, exc)
        if self.path != final:  # a resumed failed run fails in place
            try:
                if final.exists():
                    shutil.rmtree(final)
                os.rename(self.path, final)
                self.path = final
            except OSError as exc:
                log.warning("%s: could not rename the failed run to %s (%s)", self.path, final.name,
                            exc.strerror or exc)
        return run

    def release(self) -> None:
        """Unlock the run directory (done by :meth:`complete` and :meth:`fail`; safe to repeat)."""
        if self._lock is not None:
            self._lock.release()


def distributed_record(config: Any) -> dict[str, Any]:
    """``run_meta.json``'s ``distributed``: the world size, the collective backend of this process
    group (``None`` for one process) and the effective global batch."""
    from verifily_core.distributed import world

    w, t = world(), config.training
    backend = None
    if w.is_distributed:
        import torch.distributed as dist

        backend = str(dist.get_backend()) if dist.is_initialized() else None
    return {"world_size": w.world_size, "num_nodes": w.num_nodes, "backend": backend,
            "per_device_batch_size": t.batch_size, "gradient_accumulation_steps": t.gradient_accumulation_steps,
            "global_batch_size": t.batch_size * t.gradient_accumulation_steps * w.world_size}


def _read_only(path: Path) -> None:
    """Remove write permission everywhere except ``eval/`` (evaluation may be re-run)."""
    for p in [*path.rglob("*"), path]:
        if not p.is_symlink() and not p.relative_to(path).parts[:1] == ("eval",):
            p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def unsealed_folder(path: Path) -> Path | None:
    """The folder of the unsealed run ``path`` names (its ``.partial`` or ``.failed`` form, whichever
    exists), or ``None`` when there is none (never created, or sealed)."""
    run_id = path.name.removesuffix(PARTIAL).removesuffix(FAILED)
    for folder in (path, path.with_name(run_id + PARTIAL), path.with_name(run_id + FAILED)):
        if folder.is_dir() and folder.name.endswith((PARTIAL, FAILED)):
            return folder
    return None


def mark_failed(path: Path, error: str) -> Path | None:
    """Mark the unsealed run at ``path`` failed with ``error`` when its own writer could not (a
    distributed run's rank 0 that died): ``run_meta.json`` gets the status, error and end time, the
    folder is renamed to ``<run_id>.failed``. Returns the folder, ``None`` when there is no unsealed run."""
    folder = unsealed_folder(path)
    if folder is None:
        return None
    meta_path = folder / RUN_META
    try:
        meta = read_json(meta_path) if meta_path.is_file() else None
        if meta is not None:
            meta.update(status=STATUS_FAILED, error=error, completed_at=meta.get("completed_at") or utc_now())
            write_json(meta_path, meta, default=str)
    except (OSError, ValueError) as exc:
        log.debug("%s: failure not recorded in run_meta.json (%s)", folder, exc)
    if folder.name.endswith(PARTIAL):
        final = folder.with_name(folder.name.removesuffix(PARTIAL) + FAILED)
        if final.exists():
            shutil.rmtree(final)
        os.rename(folder, final)
        folder = final
    return folder
