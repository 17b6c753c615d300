"""The one way the project writes and reads its files.

Writers put the content into a temporary sibling (``.<name>.<random>.tmp``), flush it to disk
and rename it over the target: a reader sees the old file or the new one, never half of one.
A failed write (a full disk, a missing folder, a kill) removes its temporary file where it can
and re-raises the ``OSError`` with ``filename`` set to the target, so the caller can name the
path and say what to do (:func:`verifily_core.errors.describe_os_error`).

JSON lines are read by :func:`read_jsonl`, whose parser (:func:`parse_line`) bounds nesting and
integer size, refuses lone surrogates and accepts a UTF-8 byte-order mark, naming ``file:line``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

FILE_MODE = 0o644  # mkstemp's 0600 would hide shared files (manifests, runs) from other users

MAX_DEPTH = 64
"""Deepest nesting of objects and arrays a JSON line may have."""
BOM = "\ufeff"
_decode = json.JSONDecoder().raw_decode


def write_lines(path: str | Path, lines: Iterable[str], *, newline: str | None = None) -> Path:
    """Write ``lines`` (each written as given) to ``path`` atomically and durably; returns the path.

    Streams: the lines are written as they come, so memory does not grow with the file.
    :raises OSError: the folder is missing or not writable, or the disk is full (nothing is left
        behind); its ``filename`` is ``path``.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _naming(exc, path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as fh:
            for line in lines:
                fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _naming(exc, path)
        raise
    return path


def append_line(path: str | Path, line: str) -> None:
    """Append ``line`` to an append-only log, durably (not atomic: a crash can leave a torn last
    line, which :func:`read_jsonl` skips with ``skip_torn_tail``).

    :raises OSError: as :func:`write_lines`, naming ``path``.
    """
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise _naming(exc, Path(path))


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` with ``filename`` set to ``path`` (the temporary file's name means nothing to a user)."""
    if not isinstance(exc, BrokenPipeError):
        exc.filename = str(path)
    return exc


def write_text(path: str | Path, text: str, *, newline: str | None = None) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`write_lines`)."""
    return write_lines(path, (text,), newline=newline)


def write_json(path: str | Path, doc: Any, *, indent: int | None = 2, sort_keys: bool = False,
               **dumps: Any) -> Path:
    """Write ``doc`` as JSON (a final newline) atomically; extra keywords go to :func:`json.dumps`."""
    return write_text(path, json.dumps(doc, indent=indent, sort_keys=sort_keys, **dumps) + "\n")


def write_jsonl(path: str | Path, items: Iterable[Any], **dumps: Any) -> Path:
    """Write one compact JSON value per line atomically; keywords go to :func:`json.dumps`."""
    dumps.setdefault("ensure_ascii", False)
    return write_lines(path, (json.dumps(item, **dumps) + "\n" for item in items))


def read_json(path: str | Path) -> Any:
    """The JSON document of a UTF-8 file (a byte-order mark is skipped).

    :raises OSError: the file cannot be read. :raises ValueError: it is not JSON.
    """
    return json.loads(Path(path).read_text(encoding="utf-8-sig"))


def read_jsonl(path: str | Path, *, error: type[Exception] = ValueError,
               skip_torn_tail: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` of a JSONL file, skipping blank lines.

    :param error: the exception raised, with ``file:line`` and the problem, on a bad line.
    :param skip_torn_tail: an append-only log cut short by a crash ends in a partial line
        without its newline; skip that line instead of failing.
    """
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if skip_torn_tail and not raw.endswith(b"\n"):
                return
            try:
                text: str | None = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            row, problem = parse_line(text, path, lineno)
            if problem:
                raise error(problem)
            if row is not None:
                yield lineno, row


def _depth(text: str) -> int:
    """The deepest bracket nesting of a JSON text (brackets inside strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def parse_line(text: str | None, path: str | Path, lineno: int) -> tuple[dict[str, Any] | None, str | None]:
    """``(row, None)`` for a JSON object line, ``(None, None)`` for a blank one, else ``(None, problem)``.

    ``text`` is ``None`` for a line that is not UTF-8. A UTF-8 byte-order mark opening the file
    is skipped. Refused with the line named: nesting deeper than :data:`MAX_DEPTH`, integers
    longer than Python converts, and strings holding a lone surrogate (``"\\ud800"``), which no
    UTF-8 file can carry.
    """
    if text is None:
        return None, f"{path}:{lineno}: not valid UTF-8"
    text = (text[1:] if lineno == 1 and text.startswith(BOM) else text).strip()
    if not text:
        return None, None
    if text.count("{") + text.count("[") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
        return None, f"{path}:{lineno}: nested more than {MAX_DEPTH} levels deep; flatten the row"
    try:
        row, end = _decode(text)
    except json.JSONDecodeError as exc:
        return None, f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})"
    except ValueError as exc:  # an integer past Python's digit limit
        return None, f"{path}:{lineno}: invalid JSON ({str(exc).split(';')[0]}); write long numbers as strings"
    except RecursionError:
        return None, f"{path}:{lineno}: nested too deeply; flatten the row"
    if "\\u" in text and _has_lone_surrogate(row):
        return None, f"{path}:{lineno}: a string holds a lone surrogate escape (\\ud800-\\udfff); fix the text"
    if end != len(text):
        column = len(text) - len(text[end:].lstrip()) + 1
        return None, f"{path}:{lineno}: invalid JSON (extra data at column {column})"
    if not isinstance(row, dict):
        return None, f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}"
    return row, None
