"""Which base model a run was trained on, recorded in ``hashes.json`` ``base_model``.

* A local model folder: the sha256 of every file in it (hidden folders such as ``.git`` and
  ``.cache`` left out) and their digest; ``reproduce --verify-only`` re-hashes the folder.
* A Hub model: the commit its name resolved to when it was loaded. The Hub serves a commit's
  files unchanged, so the commit names them; they are not re-hashed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from verifily_core.hashing import hash_differences, hash_tree, sha256_json

LOCAL, HUB = "folder", "hub"


def model_folder_files(path: str | Path) -> dict[str, str]:
    """sha256 of every file of a model folder by relative path, skipping hidden top-level entries."""
    return {k: v for k, v in hash_tree(path, exclude=(), exclude_dirs=()).items() if not k.startswith(".")}


def record_base_model(name: str, commit: str | None = None) -> dict[str, Any]:
    """The ``base_model`` record of a run trained from ``name`` (a folder or a Hub model id).

    :param commit: the Hub commit the model resolved to (``config._commit_hash``), if known.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        files = model_folder_files(path)
        return {"name": name, "source": LOCAL, "path": str(path.resolve()), "files": files,
                "hash": sha256_json(files)}
    return {"name": name, "source": HUB, "revision": commit}


def check_base_model(record: Any) -> tuple[bool | None, str]:
    """``(matches, why)`` for a recorded base model; ``matches`` is ``None`` when it cannot be checked here.

    A local folder is found at its name (relative to the working directory) or its recorded
    absolute path, then re-hashed file by file.
    """
    if not isinstance(record, dict) or record.get("source") not in (LOCAL, HUB):
        return None, "not recorded (a run made before base models were recorded)"
    if record["source"] == HUB:
        revision = record.get("revision")
        if not revision:
            return None, f"Hub model {record.get('name')}: its commit was not recorded"
        return None, f"Hub model {record.get('name')} at commit {revision} (served unchanged by the Hub; not re-hashed)"
    candidates = [Path(str(record.get("name", ""))).expanduser(), Path(str(record.get("path", "")))]
    folder = next((p for p in candidates if str(p) not in ("", ".") and p.is_dir()), None)
    if folder is None:
        return None, f"local model folder {record.get('path') or record.get('name')} is not on this machine"
    recorded, actual = record.get("files") or {}, model_folder_files(folder)
    problems = hash_differences(recorded, actual)
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        return False, f"{folder}: " + "; ".join(problems[:5]) + more
    return True, f"{len(recorded)} files in {folder}"
