"""From a config to a verified :class:`DatasetVersion`: resolution, checks and leakage policy."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from verifily_core.datasets.leakage import check_leakage
from verifily_core.datasets.manifest import DatasetVersion, content_hash, verify
from verifily_core.datasets.store import open_store, row_schema_of, scan_splits
from verifily_core.errors import ConfigError, DataError

log = logging.getLogger("verifily.datasets")


def resolve_dataset(config: Any, registries: Any, store: str | Path | None = None) -> DatasetVersion:
    """Resolve, verify and check the dataset of a config.

    Order: ``data_paths`` (files validated and hashed; ``ref`` is ``None``), then
    ``dataset_version`` (``id@version`` or ``id@latest``) in the store chosen by ``store`` >
    ``$VERIFILY_DATASETS_DIR`` > ``config.dataset_store`` > ``~/.verifily/datasets``; every
    file's sha256 is checked against the manifest and every row re-validated in the same
    pass. Then rule 6 (``eval.slice_by_tags`` keys exist) and the leakage check of
    ``data_checks``.

    :raises DataError: missing version, hash mismatch, bad row, leakage with ``leakage: error``.
    :raises ConfigError: task mismatch, unknown slice tag keys, unknown group key.
    """
    task = registries.tasks.get(config.task)
    if config.data_paths is not None:
        dv = _from_paths(config, task)
    elif config.dataset_version:
        dv = open_store(store, config.dataset_store).get(config.dataset_version)
        if dv.task != config.task:
            raise ConfigError(f"$.task: '{config.task}' does not match dataset {dv.ref}, which is for '{dv.task}'")
        verify(dv, task.validate_row)
    else:
        raise ConfigError("$.dataset_version: set dataset_version (id@version) or data_paths.train")
    check_slice_keys(dv, config.eval.slice_by_tags, registries.slicers)
    _apply_leakage_policy(dv, task, config.data_checks)
    return dv


def check_slice_keys(dv: DatasetVersion, slice_by_tags: Any, slicers: Any = None) -> None:
    """Rule 6: every tag key that ``eval.slice_by_tags`` reads must be a tag key of the dataset.

    Specs may cross keys (``source&difficulty``) or name a derived slicer (``length:reference``,
    which reads no tag); ``slicers`` (the registry) says which keys each slicer reads.
    """
    from verifily_core.evaluation.slicing import tag_keys

    missing = [k for k in tag_keys(list(slice_by_tags or ()), slicers) if k not in dv.tag_keys]
    if missing:
        have = ", ".join(dv.tag_keys) or "none"
        raise ConfigError(f"$.eval.slice_by_tags: tag key(s) {', '.join(missing)} not in dataset "
                          f"{dv.ref or 'data_paths'} (its tag keys: {have}); remove them or tag the rows")


def _from_paths(config: Any, task: Any) -> DatasetVersion:
    paths = {s: Path(p).expanduser().resolve() for s, p in (("train", config.data_paths.train),
             ("val", config.data_paths.val), ("test", config.data_paths.test)) if p}
    if "train" not in paths:
        raise ConfigError("$.data_paths.train: a training file is required")
    files, schema = scan_splits(paths, task.validate_row)
    return DatasetVersion(
        dataset_id="local", version="files", task=config.task, files=tuple(files), content_hash=content_hash(files),
        tag_keys=tuple(sorted(schema)), tag_schema=schema, created_at="", root="/", ref=None,
        row_schema=row_schema_of(config.task, task),
    )


def _apply_leakage_policy(dv: DatasetVersion, task: Any, checks: Any) -> None:
    if checks.leakage == "off":
        return
    report = check_leakage(dv, task.input_fields(), checks.group_key)
    if checks.group_key and not report.group_rows:
        raise ConfigError(f"$.data_checks.group_key: no row of {dv.ref or 'data_paths'} has '{checks.group_key}' "
                          f"(tag keys: {', '.join(dv.tag_keys) or 'none'}); use tags.<key>")
    if not report.found:
        return
    line = f"leakage in {dv.ref or 'data_paths'}: {report.summary()}"
    if checks.leakage == "error":
        raise DataError(line + " (data_checks.leakage=error)")
    log.warning("%s; set data_checks.leakage=error to refuse such data", line)
