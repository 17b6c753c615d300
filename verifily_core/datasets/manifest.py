"""``DatasetVersion`` and its ``manifest.json``: reading, writing, path safety, verification."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import attrs

from verifily_core.datasets.rows import iter_jsonl, scan_file, tag_schema_problem
from verifily_core.datasets.streaming import hash_file
from verifily_core.errors import DataError
from verifily_core.hashing import PREFIX, sha256_bytes

MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")
_HEX = frozenset("0123456789abcdef")


@attrs.frozen
class DataFile:
    """One data file of a version: its split, path (relative to the version root), rows, hash."""

    split: str
    path: str
    num_rows: int
    sha256: str


def content_hash(files: list[DataFile]) -> str:
    """``sha256:`` over the sorted ``split<TAB>sha256`` lines of the files.

    It changes exactly when a file's bytes, or the split it serves, change.
    """
    lines = "".join(f"{f.split}\t{f.sha256}\n" for f in sorted(files, key=lambda f: (f.split, f.path)))
    return sha256_bytes(lines.encode("utf-8"))


@attrs.frozen
class DatasetVersion:
    """An immutable, verified snapshot of a dataset: files per split, hashes, tag keys and schema.

    ``ref`` is ``id@version`` for versions from the store, ``None`` for explicit ``data_paths``.
    """

    dataset_id: str
    version: str
    task: str
    files: tuple[DataFile, ...]
    content_hash: str
    tag_keys: tuple[str, ...]
    tag_schema: dict[str, Any]
    created_at: str
    root: str
    ref: str | None = None
    format: str = "jsonl"
    manifest_path: str | None = None
    row_schema: dict[str, list[str]] = attrs.field(factory=dict)
    split: dict[str, Any] = attrs.field(factory=dict)
    """How splits were made from the train file (``dataset create --val-fraction``), else empty."""
    derived_from: dict[str, Any] = attrs.field(factory=dict)
    """For a version made from another by removing training rows (``verifily attribute
    --validate/--leave-out``): its ``ref``, ``content_hash``, the ``rule`` and the ``removed``
    row indices per split; else empty."""

    @property
    def tags(self) -> tuple[str, ...]:
        """The tag keys (the name core-spec.md 7.1 gives them)."""
        return self.tag_keys

    @property
    def data_path(self) -> str:
        """The directory holding the data files."""
        return self.root

    @property
    def num_rows(self) -> int:
        """Rows over all splits."""
        return sum(f.num_rows for f in self.files)

    def file(self, split: str) -> DataFile | None:
        """The file of a split, or ``None``."""
        return next((f for f in self.files if f.split == split), None)

    def has_split(self, split: str) -> bool:
        """Whether the version has a file for ``split``."""
        return self.file(split) is not None

    def split_path(self, split: str) -> Path | None:
        """Absolute path of a split's file, or ``None``: for a store version the same resolved
        path :func:`verify` hashes (``sub/../train.jsonl`` is ``train.jsonl``)."""
        f = self.file(split)
        if f is None:
            return None
        if self.manifest_path:
            return safe_member(Path(self.root), f.path, self.manifest_path)
        return Path(self.root) / f.path

    def iter_rows(self, split: str) -> Iterator[dict[str, Any]]:
        """Stream the rows of a split."""
        path = self.split_path(split)
        if path is None:
            raise DataError(f"dataset {self.ref or self.root} has no '{split}' split")
        for _, row in iter_jsonl(path):
            yield row

    def read_rows(self, split: str) -> list[dict[str, Any]]:
        """All rows of a split."""
        return list(self.iter_rows(split))

    def to_ref_dict(self) -> dict[str, Any]:
        """The ``dataset`` section of ``run_meta.json``."""
        return {
            "ref": self.ref,
            "dataset_id": self.dataset_id,
            "version": self.version,
            "content_hash": self.content_hash,
            "files": {f.split: str(self.split_path(f.split)) for f in self.files},
        }

    def data_files(self) -> dict[str, dict[str, str]]:
        """The ``data_files`` section of ``hashes.json``."""
        return {f.split: {"path": str(self.split_path(f.split)), "sha256": f.sha256} for f in self.files}

    def to_manifest(self) -> dict[str, Any]:
        """The ``manifest.json`` document (core-spec.md section 7.1)."""
        return {
            "dataset_id": self.dataset_id,
            "version": self.version,
            "format": self.format,
            "task": self.task,
            "num_rows": self.num_rows,
            "content_hash": self.content_hash,
            "created_at": self.created_at,
            "tag_keys": list(self.tag_keys),
            "files": [attrs.asdict(f) for f in self.files],
            "row_schema": self.row_schema,
            "tag_schema": self.tag_schema,
            **({"split": self.split} if self.split else {}),
            **({"derived_from": self.derived_from} if self.derived_from else {}),
        }


def safe_member(root: Path, rel: str, manifest: Path | str) -> Path:
    """Resolve a manifest file path inside ``root``; refuse absolute paths, ``..`` and symlinks out."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or Path(rel).drive:
        raise DataError(f"{manifest}: file path {rel!r:.80} must be relative to the version directory")
    if not rel.isprintable():
        raise DataError(f"{manifest}: file path {rel!r:.80} holds a control character")
    target = (root / rel).resolve()
    if not target.is_relative_to(root.resolve()):
        how = f"is a symlink that escapes the version directory (to {target})" if _is_symlink(root / rel) \
            else "escapes the version directory"
        raise DataError(f"{manifest}: file path {rel!r:.80} {how}; refusing to read it")
    return target


def _is_symlink(path: Path) -> bool:
    try:
        return path.is_symlink()
    except OSError:  # e.g. a name too long for the file system
        return False


def normalize_sha256(value: Any) -> str:
    """``sha256:<hex>`` from a prefixed or bare 64-digit hex digest (hand-written manifests)."""
    text = str(value).strip().lower()
    if len(text) == 64 and set(text) <= _HEX:
        return PREFIX + text
    return text


def read_manifest(path: str | Path) -> DatasetVersion:
    """Read and check a ``manifest.json`` (paths, structure and field types; hashes are checked
    by :func:`verify`). Every problem is one DataError line naming the file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: manifest not found") from None
    except RecursionError:
        raise DataError(f"{path}: unreadable manifest (nested too deeply)") from None
    except (OSError, ValueError) as exc:  # ValueError: not JSON, not UTF-8, an integer over 4300 digits
        raise DataError(f"{path}: unreadable manifest ({str(exc).split(';')[0]})") from None
    problem = _doc_problem(doc)
    if problem:
        raise DataError(f"{path}: malformed manifest ({problem})")
    root = path.parent
    files = tuple(DataFile(split=f["split"], path=f["path"], num_rows=_count(f["num_rows"]),
                           sha256=normalize_sha256(f["sha256"])) for f in doc["files"])
    _check_files(files, root, path)
    return DatasetVersion(
        dataset_id=doc["dataset_id"], version=doc["version"], task=doc["task"], files=files,
        content_hash=normalize_sha256(doc["content_hash"]), tag_keys=tuple(doc.get("tag_keys") or ()),
        tag_schema=doc.get("tag_schema") or {}, created_at=doc.get("created_at") or "", root=str(root),
        ref=f"{doc['dataset_id']}@{doc['version']}", format=doc.get("format") or "jsonl", manifest_path=str(path),
        row_schema=doc.get("row_schema") or {}, split=doc.get("split") or {},
        derived_from=doc.get("derived_from") or {},
    )


_FIELDS: dict[str, tuple[type, bool]] = {
    "dataset_id": (str, True), "version": (str, True), "task": (str, True), "content_hash": (str, True),
    "files": (list, True), "created_at": (str, False), "format": (str, False), "tag_keys": (list, False),
    "tag_schema": (dict, False), "row_schema": (dict, False), "split": (dict, False),
    "derived_from": (dict, False),
}
_FILE_FIELDS = {"split": str, "path": str, "num_rows": object, "sha256": str}
_KINDS = {str: "a string", list: "a list", dict: "an object", object: "a count"}


def _doc_problem(doc: Any) -> str | None:
    """The first field of a manifest document that is missing or of the wrong type, or ``None``
    (optional fields may be absent or null)."""
    if not isinstance(doc, dict):
        return f"expected a JSON object, got {type(doc).__name__}"
    for key, (kind, required) in _FIELDS.items():
        if doc.get(key) is None and not required:
            continue
        if key not in doc:
            return f"missing field '{key}'"
        if not isinstance(doc[key], kind):
            return f"field '{key}' must be {_KINDS[kind]}, got {type(doc[key]).__name__}"
    for i, f in enumerate(doc["files"]):
        if not isinstance(f, dict):
            return f"files[{i}] must be an object, got {type(f).__name__}"
        for key, kind in _FILE_FIELDS.items():
            if key not in f:
                return f"missing field 'files[{i}].{key}'"
            if not isinstance(f[key], kind) or (key == "num_rows" and _count(f[key]) < 0):
                return f"field 'files[{i}].{key}' must be {_KINDS[kind]}, got {f[key]!r:.40}"
    if not all(isinstance(k, str) for k in doc.get("tag_keys") or ()):
        return "field 'tag_keys' must be a list of strings"
    return tag_schema_problem(doc.get("tag_schema") or {})


def _count(value: Any) -> int:
    """A row count as written (``12``; hand-written manifests may say ``12.0`` or ``"12"``), or -1."""
    if isinstance(value, bool):
        return -1
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
        return int(value)
    return -1


def _check_files(files: tuple[DataFile, ...], root: Path, path: Path) -> None:
    seen: set[str] = set()
    for f in files:
        if f.split not in SPLITS:
            raise DataError(f"{path}: file {f.path!r} has split {f.split!r}; expected one of {', '.join(SPLITS)}")
        if f.split in seen:
            raise DataError(f"{path}: split {f.split!r} is listed twice; a version has one file per split")
        seen.add(f.split)
        safe_member(root, f.path, path)
    if "train" not in seen:
        raise DataError(f"{path}: no train file; every dataset version needs a train split")


def verify(version: DatasetVersion, validate_row: Callable[[Mapping[str, Any]], str | None] | None = None) -> None:
    """Recompute every file's sha256 (and the content hash); raise DataError on any difference.

    With ``validate_row`` the same streaming pass also re-validates every row (task schema
    and ``tag_schema``) and checks the row counts.
    """
    root = Path(version.root)
    manifest = version.manifest_path or "data_paths"
    for f in version.files:
        target = safe_member(root, f.path, manifest) if version.manifest_path else root / f.path
        label = f"Verifying {f.split} ({target.name})"
        try:
            if not target.is_file():
                raise DataError(f"{target}: listed in {manifest} but missing")
            scan = scan_file(target, validate_row, version.tag_schema or None, label) if validate_row else None
            actual = scan.sha256 if scan else hash_file(target, label)
        except OSError as exc:
            raise DataError(f"{target}: cannot read it ({exc.strerror or exc}); listed in {manifest}") from None
        if actual != f.sha256:
            raise DataError(f"{target}: sha256 mismatch: manifest says {f.sha256}, file has {actual}; "
                            "the dataset was modified after it was created")
        if scan:
            scan.raise_if_invalid()
            if scan.num_rows != f.num_rows:
                raise DataError(f"{target}: {scan.num_rows} valid rows, {manifest} says {f.num_rows}")
    if content_hash(list(version.files)) != version.content_hash:
        raise DataError(f"{manifest}: content_hash does not match its files; the manifest was edited")
