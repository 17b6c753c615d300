"""Input files other than JSONL for ``verifily dataset create``: CSV, TSV, Parquet and JSON
arrays, with a column mapping, turned into the JSONL rows a version stores.

A version always stores JSONL, one ``json.dumps(row, ensure_ascii=False)`` line per row, so a
CSV or Parquet input gives the same files and content hash as the JSONL file with the same rows.
Each input record becomes a row: ``--map text=review,label=sentiment,tags.source=origin`` names
the column each field comes from (``tags.<key>`` fills a tag); an unmapped column named like a
field of the task is that field, a ``tags.<key>`` column is a tag and a ``tags`` object column
holds tags; other columns are left out and named in the command's output. Empty cells and
nulls are left out too, so the row simply lacks that field or tag. CSV/TSV cells are text; a
cell of a list field the task declares (``Task.list_fields``: classification's ``labels``) is a
JSON array (``["a", "b"]``, ``[]`` for none) or ``;``-separated values (``a;b``).
Rows are validated as they are converted, so a problem names the input file and record.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator, Mapping

from verifily_core.errors import ConfigError, DataError
from verifily_core.files import write_lines

FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".json": "json"}


def input_format(path: str | Path) -> str:
    """``jsonl``, ``csv``, ``tsv``, ``parquet`` or ``json`` from the file's extension.

    :raises DataError: another extension (the supported ones are named).
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'!r}; use "
                        f"{', '.join(FORMATS)} (a .jsonl file holds one JSON object per line)")
    return FORMATS[suffix]


def parse_mapping(text: str | None) -> dict[str, str]:
    """``"text=review,tags.source=origin"`` -> ``{"text": "review", "tags.source": "origin"}``.

    :raises ConfigError: an item without ``=``, an empty side or a field given twice.
    """
    mapping: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        target, sep, source = (part.strip() for part in item.partition("="))
        if not sep or not target or not source or target in ("tags", "tags.") or target.count(".") > 1 \
                or ("." in target and not target.startswith("tags.")):
            raise ConfigError(f"--map {item.strip()!r}: write FIELD=COLUMN or tags.KEY=COLUMN, comma-separated")
        if target in mapping:
            raise ConfigError(f"--map: field {target!r} is mapped twice")
        mapping[target] = source
    return mapping


def records(path: str | Path, fmt: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(record number, record)`` of a CSV/TSV/Parquet/JSON-array file (CSV numbers from 2, the
    header being line 1).

    :raises DataError: a file that cannot be read as its type (named).
    """
    path = Path(path)
    if fmt in ("csv", "tsv"):
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="," if fmt == "csv" else "\t", strict=True)
            try:
                for record in reader:
                    if None in record:
                        raise DataError(f"{path}:{reader.line_num}: more cells than the header has columns")
                    yield reader.line_num, dict(record)
            except (csv.Error, UnicodeDecodeError) as exc:
                raise DataError(f"{path}:{reader.line_num}: not valid {fmt.upper()} ({exc})") from None
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            number = 0
            for batch in pq.ParquetFile(path).iter_batches():
                for record in batch.to_pylist():
                    number += 1
                    yield number, record
        except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
            raise DataError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    else:
        try:
            doc = json.loads(path.read_text(encoding="utf-8-sig"))
        except (ValueError, RecursionError) as exc:
            raise DataError(f"{path}: not a JSON array of objects ({str(exc).splitlines()[0]})") from None
        if not isinstance(doc, list):
            raise DataError(f"{path}: expected a JSON array of objects, got {type(doc).__name__}")
        for number, record in enumerate(doc, 1):
            if not isinstance(record, dict):
                raise DataError(f"{path}: item {number} is {type(record).__name__}, not an object")
            yield number, record


def map_record(record: Mapping[str, Any], mapping: Mapping[str, str], where: str,
               fields: Any = None, ignored: set[str] | None = None, lists: Any = ()) -> dict[str, Any]:
    """One row from one record (see the module's rules).

    :param fields: the row fields an unmapped column may fill (``None``: any).
    :param ignored: collects the names of the columns left out.
    :param lists: the list fields whose text cells are read as lists (:func:`text_list`).
    :raises DataError: a mapped column the record lacks (the columns it has are named), a list
        cell that starts like a JSON array but is not one.
    """
    row: dict[str, Any] = {}
    for target, source in mapping.items():
        if source not in record:
            raise DataError(f"{where}: no column {source!r} (--map {target}={source}); "
                            f"its columns: {', '.join(map(str, record)) or '(none)'}")
        _put(row, target, text_list(record[source], where) if target in lists else record[source])
    used = set(mapping.values())
    for column, value in record.items():
        if column in used:
            continue
        name = str(column)
        if name == "tags" and isinstance(value, dict):
            for key, tag in value.items():
                _put(row, f"tags.{key}", tag)
        elif fields is None or name in fields or (name.startswith("tags.") and name.count(".") == 1):
            _put(row, name, text_list(value, where) if name in lists else value)
        elif ignored is not None:
            ignored.add(name)
    return row


def text_list(value: Any, where: str) -> Any:
    """A list field's text cell as a list: a JSON array (``["a", "b"]``, ``[]``) or ``;``-separated
    values (``a; b``), each stripped; other values (a Parquet list, an empty cell) as they are."""
    if not isinstance(value, str) or not value.strip():
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            raise DataError(f"{where}: {text[:40]!r} starts like a JSON array but is not one; write "
                            '["a", "b"] or a;b') from None
    return [part.strip() for part in text.split(";") if part.strip()]


def _put(row: dict[str, Any], target: str, value: Any) -> None:
    if value is None or value == "":
        return
    if hasattr(value, "isoformat"):  # a Parquet date or time: as text, as JSON has no such type
        value = value.isoformat()
    if target.startswith("tags."):
        row.setdefault("tags", {})[target[5:]] = value
    else:
        row[target] = value


def to_jsonl(path: str | Path, out: str | Path, mapping: Mapping[str, str], fields: Any = None,
             validate_row: Any = None, ignored: set[str] | None = None, lists: Any = ()) -> Path:
    """Write the rows of a CSV/TSV/Parquet/JSON-array file (or of a JSONL file, mapped) to ``out``.

    :param fields: the row fields unmapped columns may fill (see :func:`map_record`).
    :param validate_row: the task's row check; its first problem is raised naming the record.
    :param ignored: collects the names of the columns left out.
    :param lists: list fields, whose CSV/TSV text cells are read as lists (:func:`text_list`).
    :raises DataError: an unreadable file, a missing mapped column, a bad row, a value JSON
        cannot hold.
    """
    path, fmt = Path(path), input_format(path)
    if fmt == "jsonl":
        from verifily_core.datasets.rows import iter_jsonl

        source: Iterator[tuple[int, dict[str, Any]]] = iter_jsonl(path)
    else:
        source = records(path, fmt)

    def lines() -> Iterator[str]:
        for number, record in source:
            where = f"{path}:{number}" if fmt in ("jsonl", "csv", "tsv") else f"{path} row {number}"
            row = map_record(record, mapping, where, fields, ignored, lists if fmt in ("csv", "tsv") else ())
            problem = validate_row(row) if validate_row is not None else None
            if problem:
                raise DataError(f"{where}: {problem}")
            try:
                yield json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n"
            except (TypeError, ValueError) as exc:
                raise DataError(f"{where}: a value JSON cannot hold ({exc})") from None

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return write_lines(out, lines())


def prepare_inputs(paths: Mapping[str, str | Path], mapping: Mapping[str, str], plan: Any,
                   work: str | Path, task: Any = None, ignored: set[str] | None = None) -> tuple[dict[str, Path], dict[str, Any]]:
    """The JSONL file of every split, written into ``work`` when an input needs converting (not
    JSONL, or ``mapping`` given), then the splits ``plan`` (a
    :class:`~verifily_core.datasets.splitting.SplitPlan`) makes from the train file; returns the
    files by split and the manifest's ``split`` record (empty without a plan).

    :param task: the task plugin, whose fields unmapped columns may fill and whose row check
        runs during the conversion.
    :param ignored: collects the names of the columns left out.
    :raises ConfigError: a plan for a split the input already has.
    """
    work = Path(work)
    lists = () if task is None else tuple(getattr(task, "list_fields", ()))
    fields = None if task is None else {*task.required_fields, *task.optional_fields, *lists, "id"}
    check = None if task is None else task.validate_row
    files = {split: Path(p) if input_format(p) == "jsonl" and not mapping else
             to_jsonl(p, work / f"{split}.converted.jsonl", mapping, fields, check, ignored, lists)
             for split, p in paths.items()}
    if plan is None:
        return files, {}
    from verifily_core.datasets.splitting import split_train_file

    given = sorted(set(plan.check().fractions) & set(files))
    if given:
        raise ConfigError(f"--{given[0]}-fraction: the input already has a {given[0]} split; give one or the other")
    (work / "split").mkdir()
    made, record = split_train_file(files["train"], plan, work / "split")
    return {**files, **made}, record
