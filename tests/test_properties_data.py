"""Property-based tests of data reading: JSONL rows and dataset manifests in a store.

A line is a row, blank, or one DataError line naming ``file:line``; a manifest is a version,
or a folder the store reports as broken (one line naming it) without hiding its siblings;
never another exception, never a file outside the version's folder. Budget: the hypothesis
profiles of ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from hypothesis import event, given, strategies as st

from verifily_core.datasets.manifest import MANIFEST, read_manifest, verify
from verifily_core.datasets.rows import iter_jsonl, parse_line, row_id, scan_file
from verifily_core.datasets.store import DatasetStore
from verifily_core.datasets.streaming import _decode_or_none
from verifily_core.errors import DataError
from verifily_core.hashing import canonical_json
from verifily_core.plugins import load_registries
from verifily_core.slices import tag_labels
from verifily_core.testing.data import make_sft_rows, write_jsonl

UNEXPECTED = re.compile(r"unexpected \w*(Error|Exception)")


def assert_clean(message: str, *names: str) -> None:
    """One line, no "unexpected <Error>", naming one of ``names``."""
    assert len(message.splitlines()) == 1, message
    assert not UNEXPECTED.search(message) and "Traceback" not in message, message
    assert any(n in message for n in names), message


# -- JSON values and lines ------------------------------------------------------------------------

JSON_TEXT = st.one_of(st.text(max_size=10), st.sampled_from(["", "\ud800", "\udfff", "\ufeff", "\x00", "\u2028",
                                                             "é", "tags", "source", "instruction", "output"]))
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), JSON_TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(JSON_TEXT, inner, max_size=3)),
    max_leaves=10,
)
SFT_ROWS = st.fixed_dictionaries(
    {"instruction": st.one_of(st.text(max_size=8), JSON_VALUES), "output": st.one_of(st.text(max_size=8), JSON_VALUES)},
    optional={"input": JSON_VALUES, "tags": st.one_of(st.dictionaries(JSON_TEXT, JSON_VALUES, max_size=3), JSON_VALUES),
              "id": JSON_VALUES},
)
PIECES = st.sampled_from([
    "{", "}", "[", "]", '"', ",", ":", "\\", "\\u", "\\ud800", '"\\ud800"', '"\\udc00\\ud800"', "NaN", "-Infinity",
    "1e999", "9" * 5000, "-" + "9" * 4301, "0" * 10, "\ufeff", "\r", "\t", "\x00", "\x1c", "\x85", "\u2028", "null",
    "[" * 70, "]" * 70, "{\"a\":" * 70, "}" * 70, "[" * 100_000, '"' + "[" * 100 + '"', "tr", "true", "1.5e", " ",
])


def dumps(value: object, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


LINES = st.one_of(
    st.builds(dumps, st.one_of(SFT_ROWS, JSON_VALUES), st.booleans()),
    st.lists(st.one_of(PIECES, st.text(max_size=6)), max_size=6).map("".join),
    st.builds(lambda row, cut, piece: row[:cut] + piece + row[cut:],
              st.builds(dumps, SFT_ROWS, st.booleans()), st.integers(0, 40), PIECES),
)


@given(line=LINES, lineno=st.integers(1, 10**6))
def test_a_line_is_a_row_blank_or_one_error_naming_file_and_line(line, lineno):
    line = _decode_or_none(line.encode("utf-8", "surrogatepass"))  # what the reader hands over
    row, problem = parse_line(line, "data/train.jsonl", lineno)
    if problem is not None:
        assert row is None
        assert problem.startswith(f"data/train.jsonl:{lineno}: ")
        assert_clean(problem, f"train.jsonl:{lineno}")
    elif row is not None:
        assert isinstance(row, dict)
        canonical_json(row).encode("utf-8")  # hashable as written (no lone surrogate)
        row_id(row)
        tag_labels(row.get("tags") if isinstance(row.get("tags"), dict) else None)
    else:
        assert line is not None and not (line[1:] if lineno == 1 and line.startswith("\ufeff") else line).strip()


BYTE_LINES = st.one_of(LINES.map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary(max_size=12),
                       st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\r", b""]))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("properties-data")


@pytest.fixture(scope="module")
def registries():
    return load_registries()


@given(lines=st.lists(BYTE_LINES, max_size=6), bom=st.booleans(), final_newline=st.booleans())
def test_a_file_reads_as_rows_or_one_error_naming_file_and_line(registries, folder, lines, bom, final_newline):
    path = folder / "rows.jsonl"
    data = (b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines) + (b"\n" if final_newline else b"")
    path.write_bytes(data)
    count = data.count(b"\n") + 1
    try:
        rows = list(iter_jsonl(path))
    except DataError as exc:
        assert_clean(str(exc), *(f"{path}:{n}:" for n in range(1, count + 1)))
        rows = None
    scan = scan_file(path, registries.tasks.get("sft").validate_row)
    for problem in scan.problems:
        assert_clean(problem, *(f"{path}:{n}:" for n in range(1, count + 1)))
    if rows is not None:
        assert scan.num_rows + scan.problem_count == len(rows)
        for _, row in rows:
            canonical_json(row).encode("utf-8")
    if scan.problem_count:
        with pytest.raises(DataError) as err:
            scan.raise_if_invalid()
        assert "\n" not in str(err.value)


# -- manifests in a store -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory, registries):
    """A store holding the good version ``ds@v1``; examples write ``ds@v2`` beside it."""
    root = tmp_path_factory.mktemp("properties-store")
    files = {"train": write_jsonl(root.parent / "train.jsonl", make_sft_rows(4, seed=1))}
    DatasetStore(root).create("ds", "v1", "sft", files, created_at="2026-01-01T00:00:00Z", registries=registries)
    (root.parent / "outside.jsonl").write_text((root / "ds" / "v1" / "train.jsonl").read_text())
    return root


FIELDS = ["dataset_id", "version", "format", "task", "num_rows", "content_hash", "created_at", "tag_keys", "files",
          "row_schema", "tag_schema", "files.0", "files.0.split", "files.0.path", "files.0.num_rows",
          "files.0.sha256", "files.1", "files.1.path", "tag_schema.source", "tag_schema.source.type",
          "tag_schema.source.values"]
PATHS = st.sampled_from([
    "train.jsonl", "./train.jsonl", "sub/../train.jsonl", "../v1/train.jsonl", "../../../outside.jsonl",
    "/etc/passwd", "//etc/passwd", "~/train.jsonl", "", ".", "..", "link.jsonl", "dirlink/train.jsonl",
    "train.jsonl\x00", "C:\\train.jsonl", "a" * 300, "train.jsonl/", "missing.jsonl", MANIFEST,
]) | st.text(max_size=8)


def _set(doc: object, path: str, value: object) -> object:
    """``doc`` with the dotted ``path`` (list indices as digits) set to ``value``, where it can be."""
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) and part.isdigit() and int(part) < len(node) else (
            node.get(part) if isinstance(node, dict) else None)
        if not isinstance(node, (dict, list)):
            return doc
    if isinstance(node, list) and last.isdigit():
        if int(last) < len(node):
            node[int(last)] = value
        else:
            node.append(value)
    elif isinstance(node, dict):
        node[last] = value
    return doc


MANIFEST_TEXT = st.one_of(
    st.builds(lambda v: json.dumps(v), JSON_VALUES),
    st.sampled_from(["", "{", "[" * 100_000, '{"files": ' + "9" * 5000 + "}", "\ufeff{}", '{"a": NaN}', "null"]),
)


CHANGES = st.one_of(
    st.tuples(st.sampled_from(FIELDS), st.one_of(JSON_VALUES, st.sampled_from(
        [1e400, -1, 10**30, True, "sft", "v2", "ds", "train", "val", "12", 12.0, None, {}, []]))),
    st.tuples(st.just("files.0.path"), PATHS),
    st.tuples(st.sampled_from(["created_at", "format", "task", "tag_keys", "row_schema"]),
              st.one_of(st.none(), st.text(max_size=5), st.integers(), st.lists(st.text(max_size=3), max_size=2))),
)


@given(changes=st.lists(CHANGES, max_size=3), raw=st.one_of(st.none(), st.none(), st.none(), MANIFEST_TEXT),
       links=st.booleans())
def test_a_manifest_is_a_version_or_a_reported_broken_folder(store, registries, changes, raw, links):
    good = store / "ds" / "v1"
    v2 = store / "ds" / "v2"
    if v2.exists():
        shutil.rmtree(v2)
    v2.mkdir()
    shutil.copyfile(good / "train.jsonl", v2 / "train.jsonl")
    if links:
        os.symlink(store.parent / "outside.jsonl", v2 / "link.jsonl")
        os.symlink(store.parent, v2 / "dirlink")
    doc = json.loads((good / MANIFEST).read_text())
    doc["version"] = "v2"
    for path, value in changes:
        doc = _set(doc, path, value)
    text = raw if raw is not None else json.dumps(doc)
    (v2 / MANIFEST).write_bytes(text.encode("utf-8", "surrogatepass"))

    versions, broken = DatasetStore(store).survey()
    assert "ds@v1" in [v.ref for v in versions]  # a broken sibling hides nothing
    for folder, problem in broken:
        assert folder == v2
        assert_clean(problem, str(v2))
    try:
        dv = DatasetStore(store).get("ds@v2")
    except DataError as exc:
        assert_clean(str(exc), str(v2))
        assert [f for f, _ in broken] == [v2]
        event("broken folder")
        return
    assert dv.ref == "ds@v2" and not broken
    f"{dv.ref:<28} {dv.task:<15} {dv.num_rows:>8} rows  {dv.created_at}"  # noqa: B018 (what `dataset list` prints)
    DatasetStore(store).get("ds@latest")
    for validate in (None, registries.tasks.get("sft").validate_row):
        try:
            verify(dv, validate)
        except DataError as exc:
            assert_clean(str(exc), str(v2))
            event("a version that fails verification")
            return
    event("a verified version")
    for f in dv.files:  # verified: every file is inside the version's folder
        assert dv.split_path(f.split).resolve().is_relative_to(v2.resolve())
        for row in dv.iter_rows(f.split):
            tag_labels(row.get("tags"))


@given(raw=MANIFEST_TEXT)
def test_read_manifest_of_any_text_is_a_version_or_one_error(folder, raw):
    path = folder / "v" / MANIFEST
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(raw.encode("utf-8", "surrogatepass"))
    try:
        read_manifest(path)
    except DataError as exc:
        assert_clean(str(exc), str(path))


@given(ref=st.one_of(st.text(max_size=12), st.sampled_from(["ds@v1", "ds@latest", "ds@v1\n", "ds@", "@v1", "ds@v1@x",
                                                            "ds@" + "v" * 300, "../ds@v1", "ds@../v1", "ds@.v1"])))
def test_any_ref_is_a_version_or_one_error(store, ref):
    try:
        dv = DatasetStore(store).get(ref)
    except DataError as exc:
        assert_clean(str(exc), "dataset ref", "dataset ", str(store))
    else:
        assert dv.dataset_id == "ds" and dv.root.startswith(str(store))
