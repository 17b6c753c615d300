"""Hashing primitives: streamed file digests, canonical-JSON digests, the reproducibility hash.

Every hash is written ``sha256:<hex>``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

PREFIX = "sha256:"
CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """``sha256:<hex>`` of bytes."""
    return PREFIX + hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk_size: int = CHUNK) -> str:
    """``sha256:<hex>`` of a file, read in chunks (memory does not grow with file size)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            h.update(block)
    return PREFIX + h.hexdigest()


def canonical_json(data: Any) -> str:
    """Sorted-key, compact JSON: the canonical form every JSON hash is taken over."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_json(data: Any) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``data``."""
    return sha256_bytes(canonical_json(data).encode("utf-8"))


def reproducibility_hash(config_hash: str, data_hash: str, env_hash: str) -> str:
    """``sha256(config_hash + data_hash + env_hash)`` over the three prefixed strings."""
    return sha256_bytes((config_hash + data_hash + env_hash).encode("utf-8"))


def special_entries(root: str | Path, exclude_dirs: Iterable[str] = ("eval",)) -> list[str]:
    """POSIX relative paths of entries under ``root`` that are neither regular files nor
    directories: symbolic links (to files or directories) and devices, pipes, sockets.
    :func:`hash_tree` hashes none of them, so a verifier must report them."""
    root, skip_dirs = Path(root), set(exclude_dirs)
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.split("/", 1)[0] in skip_dirs:
            continue
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            out.append(rel)
    return out


def hash_tree(root: str | Path, exclude: Iterable[str] = ("hashes.json",), exclude_dirs: Iterable[str] = ("eval",)) -> dict[str, str]:
    """sha256 of every regular file under ``root`` by POSIX relative path, sorted.

    :param exclude: relative file paths left out.
    :param exclude_dirs: top-level directories left out.
    """
    root = Path(root)
    skip_files, skip_dirs = set(exclude), set(exclude_dirs)
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.is_symlink():
            continue
        rel = p.relative_to(root).as_posix()
        if rel in skip_files or rel.split("/", 1)[0] in skip_dirs:
            continue
        out[rel] = sha256_file(p)
    return out


def hash_differences(recorded: Mapping[str, str], actual: Mapping[str, str], prefix: str = "") -> list[str]:
    """``<prefix><path> changed|missing|added`` for every file whose sha256 in ``actual`` differs
    from ``recorded``, is absent from it, or is not in ``recorded`` (each group sorted)."""
    out = [f"{prefix}{k} changed" for k in sorted(recorded) if k in actual and actual[k] != recorded[k]]
    out += [f"{prefix}{k} missing" for k in sorted(recorded) if k not in actual]
    return out + [f"{prefix}{k} added" for k in sorted(actual) if k not in recorded]

