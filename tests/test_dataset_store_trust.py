"""The store tells the truth about its versions: a killed create's leftovers, a broken or
misplaced manifest and hostile names never pass for a version (issue: trust under faults)."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from verifily_core.cli import cli
from verifily_core.datasets import DatasetStore
from verifily_core.errors import DataError
from verifily_core.plugins import load_registries
from verifily_core.testing import make_sft_rows, write_jsonl


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def store(verifily_store, tmp_path):
    """``ds@v1`` and ``ds@v2`` (different rows) in an otherwise empty store."""
    s = DatasetStore(verifily_store)
    for i, version in enumerate(("v1", "v2")):
        rows = write_jsonl(tmp_path / f"{version}.jsonl", make_sft_rows(6, seed=i))
        s.create("ds", version, "sft", {"train": rows}, registries=load_registries())
    return s


def _copy_version(store, version, target_name, dataset_id="ds"):
    target = store.root / dataset_id / target_name
    shutil.copytree(store.root / "ds" / version, target)
    target.chmod(0o755)
    (target / "manifest.json").chmod(0o644)
    return target


def test_a_killed_creates_hidden_folder_is_never_a_version(store):
    # what SIGKILL during `dataset create` leaves: a complete-looking copy under a hidden temp name
    leftover = _copy_version(store, "v1", ".v3.abc123.partial")
    doc = json.loads((leftover / "manifest.json").read_text())
    doc["version"] = "v3"
    (leftover / "manifest.json").write_text(json.dumps(doc))
    assert [v.version for v in store.versions("ds")] == ["v1", "v2"]
    with pytest.raises(DataError, match="dataset ds@v3 not found"):
        store.get("ds@v3")
    assert store.get("ds@latest").version == "v2"
    listing = run("dataset", "list", "--store", store.root)
    assert listing.exit_code == 0 and "ds@v3" not in listing.stdout
    assert f"Warning: {leftover}: incomplete (an interrupted or still-running `dataset create`)" in listing.stderr


def test_a_manifest_naming_another_version_is_reported_not_used(store):
    moved = _copy_version(store, "v1", "v9")  # its manifest still says ds@v1
    assert [v.version for v in store.versions("ds")] == ["v1", "v2"]
    with pytest.raises(DataError, match=r"ds/v9/manifest.json: the manifest names ds@v1 but sits in ds/v9"):
        store.get("ds@v9")
    assert store.get("ds@v1").root == str(store.root / "ds" / "v1")
    assert [(p.name, problem) for p, problem in store.broken()] == \
        [("v9", f"{moved / 'manifest.json'}: the manifest names ds@v1 but sits in ds/v9; {moved} is not a version")]


def test_one_malformed_manifest_does_not_block_the_other_versions(store):
    bad = store.root / "ds" / "v2" / "manifest.json"
    bad.chmod(0o644)
    bad.write_text("{not json")
    assert [v.version for v in store.versions("ds")] == ["v1"]
    assert store.get("ds@v1").version == "v1"
    assert store.get("ds@latest").version == "v1"
    with pytest.raises(DataError, match="ds/v2/manifest.json: unreadable manifest"):
        store.get("ds@v2")
    listing = run("dataset", "list", "--store", store.root)
    assert listing.exit_code == 0 and "ds@v1" in listing.stdout
    assert "ds/v2/manifest.json: unreadable manifest" in listing.stderr


@pytest.mark.parametrize("dataset_id, version, why", [
    ("ds", "v3\n", "version 'v3\\n'"),
    ("d" * 300, "v1", "dataset id 'ddd"),
    ("ds", "v" * 101, "version 'vvv"),
    ("../escape", "v1", "dataset id '../escape'"),
])
def test_hostile_names_are_refused_in_one_line(tmp_path, store, dataset_id, version, why):
    rows = write_jsonl(tmp_path / "rows.jsonl", make_sft_rows(3, seed=5))
    with pytest.raises(DataError, match="use letters, digits") as err:
        store.create(dataset_id, version, "sft", {"train": rows}, registries=load_registries())
    assert why in str(err.value) and "\n" not in str(err.value).replace("\\n", "")
    with pytest.raises(DataError, match="expected id@version"):
        store.get(f"{dataset_id}@{version}")


def _bad_rows_file(tmp_path, line: str, *, bom: bool = False):
    good = json.dumps({"instruction": "say hi", "output": "hi", "tags": {"source": "human"}})
    path = tmp_path / "rows.jsonl"
    path.write_bytes(("\ufeff" if bom else "").encode() + f"{good}\n{line}\n".encode("utf-8"))
    return path


@pytest.mark.parametrize("line, message", [
    ('{"instruction": "x", "output": ' + "[" * 100_000 + "]" * 100_000 + "}", "rows.jsonl:2: nested more than 64 levels"),
    ('{"instruction": "x", "output": "y", "tags": {"n": ' + "9" * 5000 + "}}", "rows.jsonl:2: invalid JSON (Exceeds the limit"),
    ('{"instruction": "x", "output": "\\ud800"}', "rows.jsonl:2: a string holds a lone surrogate escape"),
])
def test_hostile_rows_are_named_by_file_and_line(tmp_path, line, message):
    """Deep nesting, a 5000-digit number and a lone surrogate: one line naming the row, exit 2."""
    path = _bad_rows_file(tmp_path, line)
    res = run("dataset", "create", "--id", "ds", "--version", "v1", "--task", "sft", "--train", path,
              "--store", tmp_path / "store")
    assert res.exit_code == 2 and message in res.stderr, res.stderr
    assert "unexpected" not in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "store" / "ds" / "v1").exists()


def test_a_byte_order_mark_is_read_not_refused(tmp_path):
    """Editors write a UTF-8 BOM; the file is valid input and its hash covers the bytes as they are."""
    path = _bad_rows_file(tmp_path, json.dumps({"instruction": "a [b] {c}", "output": 'd \\ " e'}), bom=True)
    res = run("dataset", "create", "--id", "ds", "--version", "v1", "--task", "sft", "--train", path,
              "--store", tmp_path / "store")
    assert res.exit_code == 0, res.stderr
    from verifily_core.datasets import hash_file

    dv = DatasetStore(tmp_path / "store").get("ds@v1")
    assert dv.num_rows == 2 and dv.file("train").sha256 == hash_file(path)
    assert dv.read_rows("train")[1]["output"] == 'd \\ " e'


# Concrete manifests the property tests (test_properties_data.py) found; each once ended in an
# "unexpected <Error>" (a traceback from the library), or read rows from another file than it verified.
def _edit_manifest(store, version, edit):
    path = store.root / "ds" / version / "manifest.json"
    path.chmod(0o644)
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(tag_schema="train.jsonl"),
     r"malformed manifest \(field 'tag_schema' must be an object, got str\)"),
    (lambda d: d.update(tag_schema={"source": {"type": "categorical", "values": 5}}),
     r"malformed manifest \(tag 'source': \"values\" must be a list\)"),
    (lambda d: d.update(created_at=5), r"malformed manifest \(field 'created_at' must be a string, got int\)"),
    (lambda d: d.update(task={"a": 1}), r"malformed manifest \(field 'task' must be a string, got dict\)"),
    (lambda d: d["files"][0].update(num_rows=float("inf")), r"field 'files\[0\]\.num_rows' must be a count, got inf"),
    (lambda d: d["files"][0].update(sha256=5), r"field 'files\[0\]\.sha256' must be a string, got 5"),
    (lambda d: d["files"][0].update(path="a\nb"), r"file path 'a\\nb' holds a control character"),
])
def test_a_malformed_manifest_field_is_one_line_and_hides_no_sibling(store, edit, message):
    _edit_manifest(store, "v2", edit)
    with pytest.raises(DataError, match=message) as err:
        store.get("ds@v2")
    assert "\n" not in str(err.value)
    assert [v.version for v in store.versions("ds")] == ["v1"]
    listing = run("dataset", "list", "--store", store.root)
    assert listing.exit_code == 0 and "ds@v1" in listing.stdout and "unexpected" not in listing.output


@pytest.mark.parametrize("text, message", [
    ('{"files": ' + "9" * 5000 + "}", r"unreadable manifest \(Exceeds the limit \(4300 digits\)"),
    ("[" * 100_000, r"unreadable manifest \(nested too deeply\)"),
    (b"\xff{}", r"unreadable manifest \('utf-8' codec can't decode byte 0xff"),
])
def test_an_unreadable_manifest_is_one_line(store, text, message):
    path = store.root / "ds" / "v2" / "manifest.json"
    path.chmod(0o644)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DataError, match=message):
        store.get("ds@v2")
    assert store.get("ds@latest").version == "v1"


def test_a_file_path_with_dot_segments_reads_the_file_it_verified(store):
    _edit_manifest(store, "v2", lambda d: d["files"][0].update(path="sub/../train.jsonl"))  # no folder `sub`
    dv = store.get("ds@v2")
    from verifily_core.datasets import verify

    verify(dv)
    assert dv.split_path("train") == store.root / "ds" / "v2" / "train.jsonl"
    assert len(dv.read_rows("train")) == 6 and dv.data_files()["train"]["path"] == str(dv.split_path("train"))


def test_a_file_path_too_long_for_the_os_is_missing_not_an_oserror(store):
    from verifily_core.datasets import verify

    _edit_manifest(store, "v2", lambda d: d["files"][0].update(path="a" * 300))
    with pytest.raises(DataError, match=r"/aaaa+: listed in .*manifest.json but missing|cannot read it"):
        verify(store.get("ds@v2"))


def test_a_tag_schema_file_with_bad_values_is_refused(tmp_path, store):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"source": {"type": "categorical", "values": 5}}))
    rows = write_jsonl(tmp_path / "t.jsonl", make_sft_rows(3, 1))
    res = run("dataset", "create", "--id", "ds", "--version", "v3", "--task", "sft", "--tag-schema", schema,
              "--train", rows, "--store", store.root)
    assert res.exit_code == 2 and "schema.json: tag 'source': \"values\" must be a list" in res.stderr
    schema.write_bytes(b'{"a": ' + b"9" * 5000 + b"}")
    res = run("dataset", "create", "--id", "ds", "--version", "v3", "--task", "sft", "--tag-schema", schema,
              "--train", rows, "--store", store.root)
    assert res.exit_code == 2 and "unreadable tag schema (Exceeds the limit" in res.stderr
