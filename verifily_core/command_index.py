"""The names and one-line help of the commands plugins add, remembered between runs so that
``verifily --help`` lists them without importing every plugin.

The index is keyed by a fingerprint of what could change the answer and costs a few
milliseconds to compute: the interpreter and ``sys.path``, every installed distribution's
``entry_points.txt`` (path, size, modification time), the files of the packages that the
``verifily`` entry points name, and ``VERIFILY_BLOCK_PLUGINS``. Any difference rebuilds the
index by loading the plugins. It lives in ``$VERIFILY_CACHE_DIR`` (default
``~/.cache/verifily``); when that cannot be written the plugins are simply loaded each time.
Running a command never uses the index: a name that is not built in always loads the plugins.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

CACHE_ENV = "VERIFILY_CACHE_DIR"
INDEX_FILE = "plugin-commands.json"
GROUP_HEADER = b"[verifily]"


def cache_dir() -> Path:
    """``$VERIFILY_CACHE_DIR``, else ``$XDG_CACHE_HOME/verifily``, else ``~/.cache/verifily``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "verifily"


def fingerprint() -> str:
    """Everything that decides which plugin commands exist, as one string (see the module docstring)."""
    parts = [repr((sys.executable, sys.path, os.environ.get("VERIFILY_BLOCK_PLUGINS", "")))]
    for entry in sys.path:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:
            continue
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                _add_distribution(parts, os.path.join(entry, name, "entry_points.txt"))
    return "\n".join(parts)


def _add_distribution(parts: list[str], entry_points: str) -> None:
    try:
        with open(entry_points, "rb") as fh:
            data = fh.read()
        st = os.stat(entry_points)
    except OSError:
        return
    parts.append(f"{entry_points}:{st.st_size}:{st.st_mtime_ns}")
    if GROUP_HEADER in data:
        for module in _group_modules(data.decode("utf-8", "replace")):
            _add_package_files(parts, module)


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


def _add_package_files(parts: list[str], module: str) -> None:
    """Size and modification time of the module's files (all of a package's ``.py`` files)."""
    from importlib.util import find_spec

    try:
        spec = find_spec(module.split(".")[0])
    except (ImportError, ValueError):
        return
    if spec is None or not spec.origin:
        return
    if os.path.basename(spec.origin) == "__init__.py":
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.dirname(spec.origin))
                       for f in fs if f.endswith(".py"))
    else:
        files = [spec.origin]
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            continue
        parts.append(f"{f}:{st.st_size}:{st.st_mtime_ns}")


def cached_command_help(build: Callable[[], dict[str, str]]) -> dict[str, str]:
    """``{command: one-line help}`` of plugin commands: from the index when its fingerprint
    matches, else ``build()`` (which loads the plugins), then stored for the next run."""
    key = fingerprint()
    path = cache_dir() / INDEX_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("fingerprint") == key and isinstance(doc.get("commands"), dict):
            return {str(k): str(v) for k, v in doc["commands"].items()}
    except (OSError, ValueError):
        pass
    commands = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"fingerprint": key, "commands": commands}), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: load the plugins every time instead
    return commands
