"""Versioned datasets: manifests, the local store, streaming validation, leakage and diffs."""

from verifily_core.datasets.diff import diff_versions
from verifily_core.datasets.leakage import LeakageReport, check_leakage
from verifily_core.datasets.manifest import DataFile, DatasetVersion, content_hash, read_manifest, verify
from verifily_core.datasets.resolve import DataCheck, check_dataset, check_slice_keys, resolve_dataset
from verifily_core.datasets.rows import row_id
from verifily_core.datasets.store import (
    DEFAULT_STORE, STORE_ENV, DatasetStore, FolderSplits, open_store, parse_ref, splits_in_dir, store_path,
)
from verifily_core.datasets.streaming import hash_file

__all__ = [
    "DEFAULT_STORE", "STORE_ENV", "DataCheck", "DataFile", "DatasetStore", "DatasetVersion", "FolderSplits",
    "LeakageReport", "check_dataset", "check_leakage", "check_slice_keys", "content_hash", "diff_versions",
    "hash_file", "open_store", "parse_ref", "read_manifest", "resolve_dataset", "row_id", "splits_in_dir",
    "store_path", "verify",
]
