"""From a config to a verified :class:`DatasetVersion`: resolution, checks and leakage policy."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import attrs

from verifily_core.datasets.leakage import check_leakage
from verifily_core.datasets.manifest import DatasetVersion, content_hash, verify
from verifily_core.datasets.store import open_store, row_schema_of, scan_splits
from verifily_core.errors import ConfigError, DataError

log = logging.getLogger("verifily.datasets")

PATHS_DATASET_ID = "local"
"""The dataset id of a version made of explicit ``data_paths`` files (and of versions derived from it)."""


EVALUATED_SPLIT = "test"
"""The split that evaluation reads (after training, and ``verifily eval`` without ``--test-data``)."""


@attrs.frozen
class DataCheck:
    """What resolving a config's dataset checked: the verified version, the slice keys that
    ``eval.slice_by_tags`` reads and the split they were found in. What ``verifily train
    --dry-run`` reports (:meth:`describe`)."""

    dataset: DatasetVersion
    slice_keys: tuple[str, ...] = ()
    slice_split: str | None = None
    leakage: str = "off"

    def describe(self) -> dict[str, Any]:
        """As plain data: ``checked``, ``dataset`` (the ref, or ``data_paths``), ``content_hash``,
        ``rows`` per split, ``tag_keys``, ``slice_keys``, ``slice_split`` (``test``, or ``null``:
        the keys were checked against every split) and ``leakage`` (the policy applied)."""
        dv = self.dataset
        return {
            "checked": True,
            "dataset": dv.ref or "data_paths",
            "content_hash": dv.content_hash,
            "rows": {f.split: f.num_rows for f in dv.files},
            "tag_keys": list(dv.tag_keys),
            "slice_keys": list(self.slice_keys),
            "slice_split": self.slice_split,
            "leakage": self.leakage,
        }


def resolve_dataset(config: Any, registries: Any, store: str | Path | None = None) -> DatasetVersion:
    """Resolve, verify and check the dataset of a config (:func:`check_dataset`); return the version.

    :raises DataError: missing version or file, hash mismatch, bad row, leakage with ``leakage: error``.
    :raises ConfigError: task mismatch, unknown slice tag keys, unknown group key.
    """
    return check_dataset(config, registries, store).dataset


def check_dataset(config: Any, registries: Any, store: str | Path | None = None) -> DataCheck:
    """Resolve, verify and check the dataset of a config, streaming its files (no split is
    loaded whole): the one path of training, evaluation and ``verifily train --dry-run``.

    Order: ``data_paths`` (files validated and hashed; ``ref`` is ``None``), then
    ``dataset_version`` (``id@version`` or ``id@latest``) in the store chosen by ``store`` >
    ``$VERIFILY_DATASETS_DIR`` > ``config.dataset_store`` > ``~/.verifily/datasets``; every
    file's sha256 is checked against the manifest and every row re-validated by the task's
    ``validate_row`` in the same pass. Then the task's ``validate_dataset`` (what no single row
    shows, e.g. a classifier's label set), rule 6 (:func:`check_slice_keys`: the tag keys of
    ``eval.slice_by_tags`` exist in the evaluated split) and the leakage check of ``data_checks``.

    :raises DataError: missing version or file, hash mismatch, bad row (``file:line: problem``),
        leakage with ``leakage: error``.
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
    task.validate_dataset(dv, task.parse_options(config.task_options))
    keys, split = check_slice_keys(dv, config.eval.slice_by_tags, registries.slicers)
    _apply_leakage_policy(dv, task, config.data_checks)
    return DataCheck(dv, tuple(keys), split, config.data_checks.leakage)


def check_slice_keys(dv: DatasetVersion, slice_by_tags: Any, slicers: Any = None) -> tuple[list[str], str | None]:
    """Rule 6: every tag key that ``eval.slice_by_tags`` reads must be a tag key of the dataset
    and be carried (with a value) by some row of the evaluated split (``test``) when the
    dataset has one, since evaluation slices that split; returns the keys and that split
    (``None`` when there is no test split and the keys were checked against the dataset's).

    Specs may cross keys (``source&difficulty``) or name a derived slicer (``length:reference``,
    which reads no tag); ``slicers`` (the registry) says which keys each slicer reads.
    """
    from verifily_core.evaluation.slicing import tag_keys

    keys = tag_keys(list(slice_by_tags or ()), slicers)
    name = dv.ref or "data_paths"
    missing = [k for k in keys if k not in dv.tag_keys]
    if missing:
        have = ", ".join(dv.tag_keys) or "none"
        raise ConfigError(f"$.eval.slice_by_tags: tag key(s) {', '.join(missing)} not in dataset "
                          f"{name} (its tag keys: {have}); remove them or tag the rows")
    split = EVALUATED_SPLIT if dv.has_split(EVALUATED_SPLIT) else None
    if not keys or split is None:
        return keys, split
    carried = _carried_tag_keys(dv, EVALUATED_SPLIT, set(keys))
    absent = [k for k in keys if k not in carried]
    if absent:
        have = ", ".join(sorted(carried)) or "none"
        raise ConfigError(f"$.eval.slice_by_tags: no row of the {EVALUATED_SPLIT} split of {name} "
                          f"({dv.split_path(EVALUATED_SPLIT)}) carries tag key(s) {', '.join(absent)}, so "
                          f"evaluation could not slice by them (tag keys in that split: {have}); "
                          "remove them or tag the rows")
    return keys, EVALUATED_SPLIT


def _carried_tag_keys(dv: DatasetVersion, split: str, wanted: set[str]) -> set[str]:
    """The tag keys with a non-null value in some row of ``split``: streamed, and stopped as soon
    as every ``wanted`` key was seen (usually within the first rows)."""
    carried: set[str] = set()
    for row in dv.iter_rows(split):
        tags = row.get("tags")
        if isinstance(tags, dict):
            carried.update(k for k, v in tags.items() if v is not None)
        if wanted <= carried:
            break
    return carried


def _from_paths(config: Any, task: Any) -> DatasetVersion:
    paths = {s: Path(p).expanduser().resolve() for s, p in (("train", config.data_paths.train),
             ("val", config.data_paths.val), ("test", config.data_paths.test)) if p}
    if "train" not in paths:
        raise ConfigError("$.data_paths.train: a training file is required")
    files, schema = scan_splits(paths, task.validate_row)
    return DatasetVersion(
        dataset_id=PATHS_DATASET_ID, version="files", task=config.task, files=tuple(files), content_hash=content_hash(files),
        tag_keys=tuple(sorted(schema)), tag_schema=schema, created_at="", root="/", ref=None,
        row_schema=row_schema_of(config.task, task),
    )


def _apply_leakage_policy(dv: DatasetVersion, task: Any, checks: Any) -> None:
    if checks.leakage == "off":
        return
    report = check_leakage(dv, task.row_input, checks.group_key)
    if checks.group_key and not report.group_rows:
        raise ConfigError(f"$.data_checks.group_key: no row of {dv.ref or 'data_paths'} has '{checks.group_key}' "
                          f"(tag keys: {', '.join(dv.tag_keys) or 'none'}); use tags.<key>")
    if not report.found:
        return
    line = f"leakage in {dv.ref or 'data_paths'}: {report.summary()}"
    if checks.leakage == "error":
        raise DataError(line + " (data_checks.leakage=error)")
    log.warning("%s; set data_checks.leakage=error to refuse such data", line)
