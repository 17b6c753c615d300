"""Trainer checkpoints of a run in progress: a manifest per checkpoint, and the one to resume from.

When the Trainer has saved ``checkpoint-N/``, :func:`write_checkpoint_manifest` records the size
and sha256 of each of its files in ``checkpoint-N/verifily_checkpoint.json``, written last (and
atomically). :func:`latest_checkpoint` resumes from the newest checkpoint whose files all match
their manifest, naming the first bad file of each newer one it skips; checkpoints without a
manifest (written by an older version) count as complete when their ``trainer_state.json``,
which the Trainer writes last, exists. Imports no heavy library.
"""

from __future__ import annotations

import logging
from pathlib import Path

from verifily_core.errors import TrainingError
from verifily_core.files import read_json, write_json
from verifily_core.hashing import sha256_file

MANIFEST = "verifily_checkpoint.json"
MANIFEST_VERSION = 1
TRAINER_STATE = "trainer_state.json"

log = logging.getLogger("verifily.local")


def write_checkpoint_manifest(folder: Path) -> Path:
    """Record the size and sha256 of every file of the checkpoint ``folder``; returns the manifest."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return write_json(folder / MANIFEST, {"format_version": MANIFEST_VERSION, "files": files}, sort_keys=True)


def check_checkpoint(folder: Path) -> str | None:
    """``None`` when the checkpoint ``folder`` is usable, else what is wrong with it (the file named).

    With a manifest, every file it lists must exist with its size and sha256 (sizes are checked
    first, so a truncated file costs no hashing); without one, ``trainer_state.json`` must exist.
    """
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return None if (folder / TRAINER_STATE).is_file() else f"{TRAINER_STATE} is missing (cut short)"
    try:
        files = read_json(manifest)["files"]
        entries = sorted((str(name), int(entry["size"]), str(entry["sha256"])) for name, entry in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"its manifest {MANIFEST} is unreadable"
    for name, size, _ in entries:
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        actual = path.stat().st_size
        if actual != size:
            return f"{name} is {actual} bytes, {size} when saved (truncated or damaged)"
    for name, _, digest in entries:
        if sha256_file(folder / name) != digest:
            return f"{name} differs from its sha256 when saved (damaged)"
    return None


def latest_checkpoint(folder: Path) -> str | None:
    """The newest usable checkpoint in ``folder`` (see :func:`check_checkpoint`), or ``None``
    when there is none at all.

    A skipped checkpoint with a manifest is named on stderr with its first bad file; one cut
    short before its ``trainer_state.json`` (a kill while saving) is skipped quietly.

    :raises TrainingError: checkpoints exist but none is usable (each is named with its fault).
    """
    if not folder.is_dir():
        return None
    found = sorted(((int(p.name.split("-", 1)[1]), p) for p in folder.glob("checkpoint-*")
                    if p.is_dir() and p.name.split("-", 1)[1].isdigit()), reverse=True)
    damaged: list[str] = []
    for _, path in found:
        problem = check_checkpoint(path)
        if problem is None:
            if damaged:
                log.warning("resuming from %s instead", path.name)
            return str(path)
        if (path / MANIFEST).is_file():
            log.warning("checkpoint %s is not usable: %s; trying an older one", path, problem)
            damaged.append(f"{path.name}: {problem}")
    if damaged:
        raise TrainingError(f"{folder}: no usable checkpoint to resume from ({'; '.join(damaged)}); "
                            "train afresh without --resume (the partial run can be deleted)")
    return None
