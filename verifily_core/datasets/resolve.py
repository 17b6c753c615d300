"""From a config to a verified :class:`DatasetVersion`: resolution, checks and leakage policy."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from verifily_core.datasets.leakage import check_leakage
from verifily_core.datasets.manifest import DatasetVersion, content_hash, verify
from verifily_core.datasets.store import DatasetStore, store_path
from verifily_core.datasets.store import scan_splits
from verifily_core.errors import ConfigError, DataError

log = logging.getLogger("verifily.datasets")


def resolve_dataset(config: Any, registries: Any, store: str | Path | None = None) -> DatasetVersion:
    """Resolve, verify and check the dataset of a config.

    Order: ``data_paths`` (files validated and hashed), then ``dataset_version`` in the store
    (every file's sha256 verified against the manifest). Then rule 6 (``eval.slice_by_tags``
    keys exist) and the leakage check of ``data_checks``.
    """
    task = registries.tasks.get(config.task)
    if config.data_paths is not None:
        dv = _from_paths(config, task)
    else:
        dv = DatasetStore(store_path(store, config.dataset_store)).get(config.dataset_version)
        verify(dv)
        if dv.task != config.task:
            raise ConfigError(f"$.task: '{config.task}' does not match dataset {dv.ref}, which is for '{dv.task}'")
    missing = [k for k in config.eval.slice_by_tags if k not in dv.tag_keys]
    if missing:
        have = ", ".join(dv.tag_keys) or "none"
        raise ConfigError(f"$.eval.slice_by_tags: tag key(s) {', '.join(missing)} not in dataset "
                          f"{dv.ref or 'data_paths'} (its tag keys: {have})")
    _apply_leakage_policy(dv, task, config.data_checks)
    return dv


def _from_paths(config: Any, task: Any) -> DatasetVersion:
    paths = {s: Path(p).expanduser().resolve() for s, p in (("train", config.data_paths.train),
             ("val", config.data_paths.val), ("test", config.data_paths.test)) if p}
    files, schema = scan_splits(paths, task.validate_row)
    return DatasetVersion(
        dataset_id="local", version="files", task=config.task, files=tuple(files), content_hash=content_hash(files),
        tag_keys=tuple(sorted(schema)), tag_schema=schema, created_at="", root="/", ref=None,
    )


def _apply_leakage_policy(dv: DatasetVersion, task: Any, checks: Any) -> None:
    if checks.leakage == "off" and not checks.group_key:
        return
    report = check_leakage(dv, task.input_fields(), checks.group_key)
    if not report.found:
        return
    line = f"leakage in {dv.ref or 'data_paths'}: {report.summary()}"
    if checks.leakage == "error":
        raise DataError(line + " (data_checks.leakage=error)")
    if checks.leakage == "warn":
        log.warning("%s; set data_checks.leakage=error to refuse such data", line)
