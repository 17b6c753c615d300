"""The local dataset store: ``<store>/<dataset_id>/<version>/{manifest.json, train.jsonl, ...}``.

Location, highest first: an explicit path (``--store``), ``$VERIFILY_DATASETS_DIR``, the
config's ``dataset_store``, then ``~/.verifily/datasets``. Versions are immutable: created
once, made read-only, never overwritten.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import attrs

from verifily_core.datasets.manifest import (
    MANIFEST, SPLITS, DataFile, DatasetVersion, content_hash, read_manifest, verify,
)
from verifily_core.datasets.rows import infer_tag_schema, scan_file
from verifily_core.files import write_json
from verifily_core.errors import DataError

STORE_ENV = "VERIFILY_DATASETS_DIR"
DEFAULT_STORE = "~/.verifily/datasets"
_NAME_RE = re.compile(r"[A-Za-z0-9][\w.-]*")
NAME_MAX = 100
"""The longest dataset id or version name (a folder name on every file system)."""
PARTIAL_SUFFIX = ".partial"
INCOMPLETE = "incomplete (an interrupted or still-running `dataset create`); remove it once no create runs"


def valid_name(value: str) -> bool:
    """A dataset id or version name: letters, digits, ``.``, ``_``, ``-``; at most ``NAME_MAX`` characters."""
    return len(value) <= NAME_MAX and _NAME_RE.fullmatch(value) is not None


def store_path(explicit: str | Path | None = None, config_store: str | None = None) -> Path:
    """Where the store is: explicit > ``$VERIFILY_DATASETS_DIR`` > config ``dataset_store`` > default."""
    chosen = explicit or os.environ.get(STORE_ENV) or config_store or DEFAULT_STORE
    return Path(chosen).expanduser()


def parse_ref(ref: str) -> tuple[str, str]:
    """Split ``id@version`` into its parts."""
    dataset_id, sep, version = ref.partition("@")
    if not sep or not valid_name(dataset_id) or not valid_name(version):
        raise DataError(f"dataset ref {ref!r}: expected id@version, e.g. ds_demo@v2 or ds_demo@latest")
    return dataset_id, version


def _natural_key(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def scan_splits(
    paths: Mapping[str, str | Path],
    validate_row: Callable[[Mapping[str, Any]], str | None] | None,
    tag_schema: Mapping[str, Any] | None = None,
) -> tuple[list[DataFile], dict[str, Any]]:
    """Validate and hash each split's file; return the files and the inferred tag schema.

    :raises DataError: naming file, line and field of the first bad rows (nothing is written).
    """
    files, tag_values = [], {}
    for split, path in paths.items():
        p = Path(path)
        if not p.is_file():
            raise DataError(f"{p}: {split} file not found")
        scan = scan_file(p, validate_row, tag_schema, progress_label=f"{split} ({p.name})")
        scan.raise_if_invalid()
        if scan.num_rows == 0:
            raise DataError(f"{p}: the {split} split has no rows")
        files.append(DataFile(split=split, path=str(p), num_rows=scan.num_rows, sha256=scan.sha256))
        for key, values in scan.tag_values.items():
            tag_values.setdefault(key, set()).update(values)
    return files, dict(tag_schema) if tag_schema else infer_tag_schema(tag_values)


@attrs.frozen
class FolderSplits:
    """The splits found in a folder, and the task and tag schema of its manifest if it has one."""

    paths: dict[str, Path]
    task: str | None = None
    tag_schema: dict[str, Any] | None = None


def splits_in_dir(folder: str | Path) -> FolderSplits:
    """The split files of a folder: from its ``manifest.json`` (verified) or ``train/val/test.jsonl``.

    :raises DataError: no such folder, a manifest that fails verification, or no split files.
    """
    base = Path(folder)
    if not base.is_dir():
        raise DataError(f"{base}: not a directory")
    if (base / MANIFEST).is_file():
        dv = read_manifest(base / MANIFEST)
        verify(dv)
        return FolderSplits({f.split: Path(dv.split_path(f.split)) for f in dv.files}, dv.task, dv.tag_schema or None)
    paths = {s: base / f"{s}.jsonl" for s in SPLITS if (base / f"{s}.jsonl").is_file()}
    if "train" not in paths:
        raise DataError(f"{base}: no train.jsonl (and no manifest.json); expected train.jsonl, val.jsonl, test.jsonl")
    return FolderSplits(paths)


class DatasetStore:
    """A directory of immutable dataset versions.

    Only a folder ``<id>/<version>/`` with a readable manifest naming that same id and
    version is a version. Hidden folders (a create in progress, or one a kill interrupted)
    are never read as versions; they and broken folders are reported by :meth:`broken` and do
    not hide the other versions.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def versions(self, dataset_id: str) -> list[DatasetVersion]:
        """The versions of one dataset, oldest first (by creation time, then version name)."""
        return self._scan(dataset_id)[0]

    def list(self) -> list[DatasetVersion]:
        """Every version in the store."""
        return self.survey()[0]

    def broken(self) -> list[tuple[Path, str]]:
        """``(folder, one-line problem)`` for every folder that looks like a version but is not one:
        a create's leftover, an unreadable manifest, a manifest naming another id or version."""
        return self.survey()[1]

    def survey(self) -> tuple[list[DatasetVersion], list[tuple[Path, str]]]:
        """:meth:`list` and :meth:`broken` from one pass over the store."""
        versions: list[DatasetVersion] = []
        broken: list[tuple[Path, str]] = []
        for dataset_id in self._dataset_ids():
            found, bad = self._scan(dataset_id)
            versions += found
            broken += bad
        return versions, broken

    def _dataset_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and valid_name(p.name))

    def _scan(self, dataset_id: str) -> tuple[list[DatasetVersion], list[tuple[Path, str]]]:
        base = self.root / dataset_id
        found: list[DatasetVersion] = []
        broken: list[tuple[Path, str]] = []
        for folder in sorted(base.iterdir()) if base.is_dir() else []:
            if not folder.is_dir():
                continue
            if folder.name.startswith("."):
                if folder.name.endswith(PARTIAL_SUFFIX):
                    broken.append((folder, f"{folder}: {INCOMPLETE}"))
                continue
            try:
                dv = read_manifest(folder / MANIFEST)
            except DataError as exc:
                broken.append((folder, str(exc)))
                continue
            if (dv.dataset_id, dv.version) != (dataset_id, folder.name):
                named = dv.ref if dv.ref.isprintable() else repr(dv.ref)
                broken.append((folder, f"{folder / MANIFEST}: the manifest names {named} but sits in "
                                       f"{dataset_id}/{folder.name}; {folder} is not a version"))
                continue
            found.append(dv)
        return sorted(found, key=lambda v: (v.created_at, _natural_key(v.version))), broken

    def get(self, ref: str) -> DatasetVersion:
        """The version named by ``id@version`` (``id@latest``: the newest), unverified.

        :raises DataError: no such version, or its folder is broken (the problem is named).
        """
        dataset_id, version = parse_ref(ref)
        versions, broken = self._scan(dataset_id)
        if version == "latest" and versions:
            return versions[-1]
        problem = next((msg for folder, msg in broken if folder.name == version), None)
        if problem is not None:
            raise DataError(problem)
        match = next((v for v in versions if v.version == version), None)
        if match is None:
            available = ", ".join(v.version for v in versions) or "none"
            others = "" if versions else f"; datasets in the store: {', '.join(sorted({v.dataset_id for v in self.list()})) or 'none'}"
            raise DataError(f"dataset {ref} not found in {self.root}; available versions of {dataset_id}: "
                            f"{available}{others}")
        return match

    def create(
        self,
        dataset_id: str,
        version: str,
        task: str,
        paths: Mapping[str, str | Path],
        validate_row: Callable[[Mapping[str, Any]], str | None] | None = None,
        tag_schema: Mapping[str, Any] | None = None,
        created_at: str | None = None,
        *,
        registries: Any,
        split: Mapping[str, Any] | None = None,
        derived_from: Mapping[str, Any] | None = None,
    ) -> DatasetVersion:
        """Validate, copy and seal a new version. Refuses an existing version; writes nothing on error.

        Rows are validated by ``validate_row``, by default the ``task`` plugin's (from
        ``registries``, which also give the manifest's row schema). ``tag_schema`` is enforced
        when given, else inferred from the rows. ``split`` records in the manifest how the
        splits were made (see :mod:`verifily_core.datasets.splitting`), ``derived_from`` the
        version it was made from by removing rows (see :mod:`verifily_core.attribution.counterfactual`).
        """
        from verifily_core.jobs import utc_now

        for name, value in (("dataset id", dataset_id), ("version", version)):
            if not valid_name(value) or value == "latest":
                shown = value if len(value) <= 40 else value[:40] + "..."
                raise DataError(f"{name} {shown!r}: use letters, digits, '.', '_' or '-', at most {NAME_MAX} "
                                "characters ('latest' is reserved)")
        if "train" not in paths:
            raise DataError("a dataset version needs a train split (--train FILE)")
        unknown = set(paths) - set(SPLITS)
        if unknown:
            raise DataError(f"unknown split(s) {sorted(unknown)}; expected {', '.join(SPLITS)}")
        task_plugin = registries.tasks.get(task)
        if validate_row is None:
            validate_row = task_plugin.validate_row
        final = self.root / dataset_id / version
        if final.exists():
            raise _exists(dataset_id, version, self.root)
        scanned, schema = scan_splits(paths, validate_row, tag_schema)
        made_parent = not final.parent.exists()
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp: Path | None = None
        try:
            tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{version}.", suffix=PARTIAL_SUFFIX))
            tmp.chmod(0o755)  # mkdtemp's 0700 would hide the version from other users
            files = []
            for f in scanned:
                name = f"{f.split}.jsonl"
                shutil.copyfile(f.path, tmp / name)
                files.append(DataFile(split=f.split, path=name, num_rows=f.num_rows, sha256=f.sha256))
            dv = DatasetVersion(
                dataset_id=dataset_id, version=version, task=task, files=tuple(files),
                content_hash=content_hash(files), tag_keys=tuple(sorted(schema)), tag_schema=schema,
                created_at=created_at or utc_now(), root=str(final), ref=f"{dataset_id}@{version}",
                manifest_path=str(final / MANIFEST), row_schema=row_schema_of(task, task_plugin),
                split=dict(split or {}), derived_from=dict(derived_from or {}),
            )
            write_json(tmp / MANIFEST, dv.to_manifest())
            verify(_at(dv, tmp))  # the copies are what was validated
            try:
                os.rename(tmp, final)
            except OSError:
                if final.exists():  # created meanwhile by another process
                    raise _exists(dataset_id, version, self.root) from None
                raise
        except BaseException:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if made_parent:
                _remove_if_empty(final.parent)
            raise
        _make_read_only(final)
        return dv


def open_store(path: str | Path | None = None, config_store: str | None = None) -> DatasetStore:
    """The dataset store at :func:`store_path` ``(path, config_store)``."""
    return DatasetStore(store_path(path, config_store))


def _exists(dataset_id: str, version: str, root: Path) -> DataError:
    return DataError(f"dataset {dataset_id}@{version} already exists in {root}; versions are immutable, "
                     "create a new version instead")


def row_schema_of(task: str, plugin: Any) -> dict[str, list[str]]:
    """``{task: [fields]}`` of a task plugin, the reference field last (manifest ``row_schema``)."""
    fields = [*getattr(plugin, "required_fields", ()), *getattr(plugin, "optional_fields", ())]
    return {task: sorted(fields, key=lambda f: f == getattr(plugin, "reference_field", ""))}


def _at(dv: DatasetVersion, root: Path) -> DatasetVersion:
    return attrs.evolve(dv, root=str(root), manifest_path=str(root / MANIFEST))


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _make_read_only(path: Path) -> None:
    for p in [*path.rglob("*"), path]:
        mode = p.stat().st_mode
        p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
