"""Sealing an evaluation folder: ``eval_hashes.json`` holds the sha256 of every file the
evaluation wrote (``eval_results.json`` included) and of the evaluated run's ``hashes.json``,
so an edited number, a swapped file or results moved to another run are detected.

Written last by every writer of the folder (``verifily eval``, ``verifily reproduce``), it is
re-written whenever the folder changes. Hidden temporary entries (``.eval-*`` staging folders,
``.*.tmp`` files) that a killed writer may leave are not part of the seal: nothing reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from verifily_core import files
from verifily_core.hashing import hash_differences, hash_tree, sha256_file, special_entries

SEAL_FILE = "eval_hashes.json"
SEAL_FORMAT = 1


def _is_temporary(rel: str) -> bool:
    first = rel.split("/", 1)[0]
    return first.startswith(".eval-") or (first.startswith(".") and first.endswith(".tmp"))


def sealed_files(eval_dir: str | Path) -> dict[str, str]:
    """sha256 of every regular file under ``eval_dir`` but the seal and temporary entries."""
    return {k: v for k, v in hash_tree(eval_dir, exclude=(SEAL_FILE,), exclude_dirs=()).items()
            if not _is_temporary(k)}


def run_hashes_digest(run_path: str | Path | None) -> str | None:
    """sha256 of a run's ``hashes.json`` (``None`` when there is no sealed run)."""
    if run_path is None or not (Path(run_path) / "hashes.json").is_file():
        return None
    return sha256_file(Path(run_path) / "hashes.json")


def seal_eval(eval_dir: str | Path, run_path: str | Path | None, run_id: str | None = None) -> Path:
    """Write ``eval_hashes.json`` for ``eval_dir``, linked to the run at ``run_path``; returns its path.

    :raises OSError: the folder cannot be written.
    """
    eval_dir = Path(eval_dir)
    doc: dict[str, Any] = {"format_version": SEAL_FORMAT, "run_id": run_id,
                           "run_hashes": run_hashes_digest(run_path), "files": sealed_files(eval_dir)}
    return files.write_json(eval_dir / SEAL_FILE, doc)


def check_eval(eval_dir: str | Path, run_path: str | Path | None) -> tuple[int, list[str]]:
    """``(files sealed, problems)`` of an evaluation folder; no problems means it verifies.

    An absent or empty folder verifies with 0 files (the run was not evaluated). A folder with
    files but no seal, a changed, missing or added file, a link, and a seal made for another
    state of the run (its ``hashes.json`` changed) are problems, each named.
    """
    eval_dir = Path(eval_dir)
    actual = sealed_files(eval_dir) if eval_dir.is_dir() else {}
    links = [f"eval/{k} is a link or special file" for k in special_entries(eval_dir, exclude_dirs=())
             if not _is_temporary(k)] if eval_dir.is_dir() else []
    seal_path = eval_dir / SEAL_FILE
    if not seal_path.is_file():
        if not actual and not links:
            return 0, []
        return len(actual), [f"{eval_dir}: no {SEAL_FILE}, so its files cannot be trusted; "
                             "re-run `verifily eval` to re-create and seal them", *links]
    try:
        doc = files.read_json(seal_path)
        recorded = doc["files"]
        if not isinstance(recorded, dict):
            raise TypeError("files is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return len(actual), [f"{seal_path}: unreadable ({type(exc).__name__}); re-run `verifily eval`"]
    problems = hash_differences(recorded, actual, "eval/") + links
    expected = run_hashes_digest(run_path)
    if expected is not None and doc.get("run_hashes") != expected:
        problems.append(f"{SEAL_FILE} was made for another run (or the run's hashes.json changed)")
    return len(recorded), problems
