"""Reading and validating JSONL rows as a stream, and stable per-row ids.

Files are read in blocks (memory does not grow with file size), hashed and split into
lines in the same pass (:mod:`verifily_core.datasets.streaming`). Errors name the file, the line number and the field.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import attrs

from verifily_core.datasets.streaming import HashedLines
from verifily_core.errors import DataError
from verifily_core.files import parse_line
from verifily_core.hashing import PREFIX, canonical_json

MAX_REPORTED = 5
MAX_CATEGORICAL = 50  # a tag with more distinct string values is recorded as free text


def row_id(row: Mapping[str, Any]) -> str:
    """Stable id of a row: ``sha256:`` of the canonical JSON of the row without ``tags`` and ``id``."""
    content = {k: v for k, v in row.items() if k not in ("tags", "id")}
    return PREFIX + hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()


def normalize_text(text: Any) -> str:
    """Lowercase, collapse whitespace: the form in which leakage is detected."""
    return re.sub(r"\s+", " ", str(text)).strip().lower()


def input_key(parts: Mapping[str, Any]) -> str:
    """The normalized input of a row (:meth:`~verifily_core.interfaces.Task.row_input`: its parts
    besides the reference), as one string; text inside lists and objects (messages) is
    normalized too."""
    return "\x1f".join(_normalized(v) for v in parts.values())


def _normalized(value: Any) -> str:
    if value is None or isinstance(value, str):
        return normalize_text(value or "")
    return canonical_json(_normalize_nested(value))


def _normalize_nested(value: Any) -> Any:
    if isinstance(value, str):
        return normalize_text(value)
    if isinstance(value, Mapping):
        return {k: _normalize_nested(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalize_nested(v) for v in value]
    return value


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, row)`` of a JSONL file, skipping blank lines.

    :raises DataError: on the first line that is not a JSON object.
    """
    for lineno, text in HashedLines(path, hash=False):
        row, problem = parse_line(text, path, lineno)
        if problem:
            raise DataError(problem)
        if row is not None:
            yield lineno, row


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
    """The first problem with a row's ``tags``, or ``None``.

    Tags are an object of scalars. With a ``tag_schema`` every key must be in it and every
    value must fit its type (``null`` always fits: the row simply lacks that tag).
    """
    tags = row.get("tags")
    if tags is None:
        return None
    if not isinstance(tags, dict):
        return "field 'tags' must be an object"
    for key, value in tags.items():
        if isinstance(value, (dict, list)):
            return f"tag 'tags.{key}' must be a scalar (string, number, boolean or null)"
        if not tag_schema or value is None:
            continue
        spec = tag_schema.get(key)
        if spec is None:
            return f"tag 'tags.{key}' is not in the tag_schema (keys: {', '.join(sorted(tag_schema))})"
        problem = _type_problem(spec, value)
        if problem:
            return f"tag 'tags.{key}' has value {value!r}, {problem} (tag_schema)"
    return None


TAG_TYPES = ("categorical", "number", "boolean", "string")


def tag_schema_problem(schema: Any) -> str | None:
    """What is wrong with a tag schema (``{key: {"type": ..., "values": [...]}}``), or ``None``."""
    if not isinstance(schema, dict):
        return f"a tag schema is an object, got {type(schema).__name__}"
    for key, spec in schema.items():
        if not isinstance(spec, dict) or spec.get("type") not in TAG_TYPES:
            return f"tag {key!r}: expected {{\"type\": ...}} with a type of {', '.join(TAG_TYPES)}"
        if not isinstance(spec.get("values", []), list):
            return f"tag {key!r}: \"values\" must be a list"
    return None


def _type_problem(spec: Mapping[str, Any], value: Any) -> str | None:
    kind = spec.get("type")
    if kind == "categorical" and value not in spec.get("values", []):
        return f"not one of {spec.get('values', [])}"
    if kind == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return "expected a number"
    if kind == "boolean" and not isinstance(value, bool):
        return "expected true or false"
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
    lines = HashedLines(p, progress_label)
    tag_values = scan.tag_values
    for lineno, text in lines:
        row, problem = parse_line(text, p, lineno)
        if row is not None:
            problem = (validate_row(row) if validate_row else None) or check_tags(row, tag_schema)
            if problem:
                problem = f"{p}:{lineno}: {problem}"
        if problem:
            scan.problem_count += 1
            if len(scan.problems) < MAX_REPORTED:
                scan.problems.append(problem)
            continue
        if row is None:
            continue
        scan.num_rows += 1
        tags = row.get("tags")
        if tags:
            for key, value in tags.items():
                values = tag_values.setdefault(key, set())
                if value is not None and len(values) <= MAX_CATEGORICAL:  # one more marks "too many"
                    values.add(value)
    scan.sha256 = lines.sha256
    return scan


def infer_tag_schema(tag_values: Mapping[str, set[Any]]) -> dict[str, Any]:
    """The tag schema the rows show: ``categorical`` for string tags with at most
    :data:`MAX_CATEGORICAL` values, ``number``, ``boolean``, else ``string`` (free text)."""
    schema: dict[str, Any] = {}
    for key, values in sorted(tag_values.items()):
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, str) for v in present) and len(present) <= MAX_CATEGORICAL:
            schema[key] = {"type": "categorical", "values": sorted(present)}
        elif present and all(isinstance(v, bool) for v in present):
            schema[key] = {"type": "boolean"}
        elif present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
            schema[key] = {"type": "number"}
        else:
            schema[key] = {"type": "string"}
    return schema
