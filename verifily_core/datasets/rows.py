"""Reading and validating JSONL rows as a stream, and stable per-row ids.

Files are read line by line (memory does not grow with file size) and hashed in the
same pass. Errors name the file, the line number and the field.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import attrs

from verifily_core.errors import DataError
from verifily_core.hashing import PREFIX, canonical_json

MAX_REPORTED = 5
PROGRESS_BYTES = 8 << 20  # files larger than this get a progress bar
MAX_CATEGORICAL = 50  # a tag with more distinct string values is recorded as free text


def row_id(row: Mapping[str, Any]) -> str:
    """Stable id of a row: ``sha256:`` of the canonical JSON of the row without ``tags`` and ``id``."""
    content = {k: v for k, v in row.items() if k not in ("tags", "id")}
    return PREFIX + hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()


def normalize_text(text: Any) -> str:
    """Lowercase, collapse whitespace: the form in which leakage is detected."""
    return re.sub(r"\s+", " ", str(text)).strip().lower()


def input_key(row: Mapping[str, Any], fields: tuple[str, ...]) -> str:
    """The normalized input of a row (its fields besides the reference), as one string."""
    return "\x1f".join(normalize_text(row.get(f) or "") for f in fields)


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, row)`` of a JSONL file, skipping blank lines.

    :raises DataError: on the first line that is not a JSON object.
    """
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            row = _parse(raw, path, lineno)
            if isinstance(row, str):
                raise DataError(row)
            yield lineno, row


def _parse(raw: bytes, path: str | Path, lineno: int) -> dict[str, Any] | str:
    try:
        row = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return f"{path}:{lineno}: invalid JSON ({exc.msg if hasattr(exc, 'msg') else exc})"
    if not isinstance(row, dict):
        return f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}"
    return row


@attrs.define
class FileScan:
    """What one pass over a JSONL file found: hash, rows, tag values, problems."""

    path: Path
    sha256: str = ""
    num_rows: int = 0
    tag_values: dict[str, set[Any]] = attrs.field(factory=dict)
    problems: list[str] = attrs.field(factory=list)
    problem_count: int = 0

    def raise_if_invalid(self) -> None:
        """Raise one DataError listing the first problems and how many there are in all."""
        if self.problem_count:
            more = f" ({self.problem_count} bad line(s) in all)" if self.problem_count > 1 else ""
            raise DataError("; ".join(self.problems) + more)


def check_tags(row: Mapping[str, Any], tag_schema: Mapping[str, Any] | None) -> str | None:
    """The first problem with a row's ``tags``, or ``None``."""
    tags = row.get("tags")
    if tags is None:
        return None
    if not isinstance(tags, dict):
        return "field 'tags' must be an object"
    for key, value in tags.items():
        if isinstance(value, (dict, list)):
            return f"tag 'tags.{key}' must be a scalar (string, number, boolean or null)"
        spec = (tag_schema or {}).get(key)
        if spec and spec.get("type") == "categorical" and value not in spec.get("values", []):
            return f"tag 'tags.{key}' has value {value!r}, not one of {spec['values']} (tag_schema)"
    return None


def scan_file(
    path: str | Path,
    validate_row: Callable[[Mapping[str, Any]], str | None] | None = None,
    tag_schema: Mapping[str, Any] | None = None,
    progress_label: str | None = None,
) -> FileScan:
    """Hash, count and validate a JSONL file in one streaming pass."""
    p = Path(path)
    scan = FileScan(path=p)
    h = hashlib.sha256()
    size = p.stat().st_size
    bar = _progress(size, progress_label or p.name) if size > PROGRESS_BYTES else None
    with open(p, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            h.update(raw)
            if bar is not None:
                bar.update(len(raw))
            if not raw.strip():
                continue
            problem = _check_line(raw, p, lineno, validate_row, tag_schema, scan)
            if problem:
                scan.problem_count += 1
                if len(scan.problems) < MAX_REPORTED:
                    scan.problems.append(problem)
    if bar is not None:
        bar.render_finish()
    scan.sha256 = PREFIX + h.hexdigest()
    return scan


def _check_line(raw, path, lineno, validate_row, tag_schema, scan: FileScan) -> str | None:
    row = _parse(raw, path, lineno)
    if isinstance(row, str):
        return row
    problem = (validate_row(row) if validate_row else None) or check_tags(row, tag_schema)
    if problem:
        return f"{path}:{lineno}: {problem}"
    scan.num_rows += 1
    for key, value in (row.get("tags") or {}).items():
        values = scan.tag_values.setdefault(key, set())
        if len(values) <= MAX_CATEGORICAL:
            values.add(value)
    return None


def _progress(total: int, label: str) -> Any:
    import click

    bar = click.progressbar(length=total, label=f"Reading {label}", file=click.get_text_stream("stderr"))
    bar.__enter__()
    return bar


def infer_tag_schema(tag_values: Mapping[str, set[Any]]) -> dict[str, Any]:
    """Categorical schema for tags with few string values; ``string``/``number`` otherwise."""
    schema: dict[str, Any] = {}
    for key, values in sorted(tag_values.items()):
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, str) for v in present) and len(values) <= MAX_CATEGORICAL:
            schema[key] = {"type": "categorical", "values": sorted(present)}
        elif present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
            schema[key] = {"type": "number"}
        else:
            schema[key] = {"type": "string"}
    return schema
