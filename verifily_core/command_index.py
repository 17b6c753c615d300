"""The names and one-line help of the commands plugins add, remembered between runs so that
``verifily --help`` lists them without importing every plugin.

The index is rebuilt (by loading the plugins) when anything that could change the answer
changed since it was written; checking that costs a few ``stat`` calls:

- the interpreter, ``sys.path`` and ``VERIFILY_BLOCK_PLUGINS``;
- the modification time of every ``sys.path`` directory (installing, upgrading or removing a
  distribution adds or removes a ``*.dist-info`` folder there);
- the size and modification time of the files recorded when the index was built: each
  ``entry_points.txt`` that declares ``verifily`` plugins and every file of the packages those
  entry points name (so editing an editable plugin's code counts).

It lives in ``$VERIFILY_CACHE_DIR`` (default ``~/.cache/verifily``); when that cannot be
written the plugins are simply loaded each time. Running a command never uses the index: a name
that is not built in always loads the plugins.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

from verifily_core.files import write_json

CACHE_ENV = "VERIFILY_CACHE_DIR"
INDEX_FILE = "plugin-commands.json"
GROUP_HEADER = b"[verifily]"


def cache_dir() -> Path:
    """``$VERIFILY_CACHE_DIR``, else ``$XDG_CACHE_HOME/verifily``, else ``~/.cache/verifily``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "verifily"


def environment_key() -> str:
    """The interpreter, ``sys.path`` with each directory's modification time, and the blocked plugins."""
    dirs = []
    for entry in sys.path:
        try:
            dirs.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            dirs.append((entry, None))
    return repr((sys.executable, dirs, os.environ.get("VERIFILY_BLOCK_PLUGINS", "")))


def plugin_files() -> list[str]:
    """Every ``entry_points.txt`` declaring ``verifily`` plugins on ``sys.path`` and the files of
    the packages it names (reads every distribution's entry points: done only on a rebuild)."""
    files: list[str] = []
    for entry in sys.path:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:
            continue
        for name in names:
            if not name.endswith((".dist-info", ".egg-info")):
                continue
            entry_points = os.path.join(entry, name, "entry_points.txt")
            try:
                with open(entry_points, "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            if GROUP_HEADER in data:
                files.append(entry_points)
                for module in _group_modules(data.decode("utf-8", "replace")):
                    files += _package_files(module)
    return files


def _group_modules(text: str) -> list[str]:
    """The modules named in the ``[verifily]`` section of an ``entry_points.txt``."""
    modules, inside = [], False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            inside = line == GROUP_HEADER.decode()
        elif inside and "=" in line:
            modules.append(line.split("=", 1)[1].split(":")[0].strip())
    return modules


def _package_files(module: str) -> list[str]:
    """The module's file, or every ``.py`` file of its package."""
    from importlib.util import find_spec

    try:
        spec = find_spec(module.split(".")[0])
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.origin:
        return []
    if os.path.basename(spec.origin) != "__init__.py":
        return [spec.origin]
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.dirname(spec.origin)) for f in fs
                  if f.endswith(".py"))


def _stats(files: list[str]) -> list[list[object]]:
    out: list[list[object]] = []
    for f in files:
        try:
            st = os.stat(f)
            out.append([f, st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([f, None, None])
    return out


def cached_command_help(build: Callable[[], dict[str, str]]) -> dict[str, str]:
    """``{command: one-line help}`` of plugin commands: from the index while nothing it depends
    on changed, else ``build()`` (which loads the plugins), then stored for the next run."""
    key = environment_key()
    path = cache_dir() / INDEX_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        recorded = doc.get("files")
        if doc.get("key") == key and isinstance(recorded, list) and isinstance(doc.get("commands"), dict) \
                and _stats([str(f[0]) for f in recorded]) == recorded:
            return {str(k): str(v) for k, v in doc["commands"].items()}
    except (OSError, ValueError, TypeError, IndexError):
        pass
    commands = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"key": key, "files": _stats(plugin_files()), "commands": commands}, indent=None)
    except OSError:
        pass  # a read-only home: load the plugins every time instead
    return commands
