"""Lineage of a run for its tracker: git state of the working directory, library versions, the
dataset and the run's hashes, and the resolved config flattened into parameters (no MLflow import)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Mapping

PARAM_VALUE_LIMIT = 6000
"""MLflow's longest parameter value; longer values are cut and end in ``...``."""


def git_tags(cwd: str | Path = ".") -> dict[str, str]:
    """``git.commit``, ``git.branch`` and ``git.dirty`` of the repository holding ``cwd``; empty
    outside a repository or without git (never an error). ``git.dirty`` is ``true`` when tracked
    or untracked files differ from the commit; a detached HEAD has branch ``HEAD``."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=str(cwd), capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    status = git("status", "--porcelain")
    tags = {"git.commit": commit, "git.branch": git("rev-parse", "--abbrev-ref", "HEAD") or "HEAD"}
    if status is not None:
        tags["git.dirty"] = "true" if status else "false"
    return tags


def version_tags(environment: Mapping[str, Any]) -> dict[str, str]:
    """``version.python`` and ``version.<distribution>`` (torch, transformers, peft, ...,
    ``version.verifily``) from a run's ``environment.json``."""
    hashed = environment.get("hashed") or {}
    tags = {"version.python": str(hashed.get("python"))}
    for name, version in (hashed.get("packages") or {}).items():
        if version is not None:
            tags[f"version.{'verifily' if name == 'verifily-train' else name}"] = str(version)
    return tags


def run_tags(meta: Mapping[str, Any]) -> dict[str, str]:
    """The dataset ref and content hash, the run id and its hashes, from ``run_meta.json``."""
    dataset = meta.get("dataset") or {}
    hashes = meta.get("hashes") or {}
    tags = {"verifily.run_id": str(meta.get("run_id")), "stage": "train",
            "data.ref": str(dataset.get("ref") or "data_paths"), "data.hash": str(dataset.get("content_hash") or "")}
    for key in ("config_hash", "data_hash", "env_hash", "reproducibility_hash"):
        if hashes.get(key):
            tags[f"verifily.{key}"] = str(hashes[key])
    if meta.get("task"):
        tags["verifily.task"] = str(meta["task"])
    if meta.get("base_model"):
        tags["verifily.base_model"] = str(meta["base_model"])
    return tags


def file_hash_tags(hashes: Mapping[str, Any]) -> dict[str, str]:
    """``data.hash.<split>``: the sha256 of each dataset file, from ``hashes.json``."""
    return {f"data.hash.{split}": str(entry.get("sha256")) for split, entry in (hashes.get("data_files") or {}).items()}


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested config data as ``{"training.learning_rate": "0.0002", ...}``; a list or an empty
    mapping is one JSON value (``task_options.head.hidden_dims`` -> ``[64, 32]``)."""
    out: dict[str, str] = {}
    if isinstance(data, Mapping) and data:
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    value = data if isinstance(data, str) else json.dumps(data, sort_keys=True)
    if len(value) > PARAM_VALUE_LIMIT:
        value = value[:PARAM_VALUE_LIMIT - 3] + "..."
    out[prefix.rstrip(".")] = value
    return out


def config_params(config_data: Mapping[str, Any]) -> dict[str, str]:
    """The resolved config (secrets already redacted) as parameters, without the ``tracking``
    section (where the run is sent, not how it was made)."""
    return flatten({k: v for k, v in config_data.items() if k != "tracking"})
