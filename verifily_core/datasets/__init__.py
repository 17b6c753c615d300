"""Versioned datasets: manifests, the local store, streaming validation, leakage and diffs."""

from verifily_core.datasets.diff import diff_versions
from verifily_core.datasets.leakage import LeakageReport, check_leakage
from verifily_core.datasets.manifest import DataFile, DatasetVersion, read_manifest, verify
from verifily_core.datasets.resolve import resolve_dataset
from verifily_core.datasets.rows import row_id
from verifily_core.datasets.store import DatasetStore, parse_ref, store_path

__all__ = [
    "DataFile", "DatasetStore", "DatasetVersion", "LeakageReport", "check_leakage", "diff_versions",
    "parse_ref", "read_manifest", "resolve_dataset", "row_id", "store_path", "verify",
]
