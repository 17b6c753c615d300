"""Dataset versions: creation, immutability, hashing, path safety, row validation, diff, leakage."""

from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner

from verifily_core.cli import cli
from verifily_core.config_loading import resolve_config
from verifily_core.datasets import DatasetStore, diff_versions, resolve_dataset, row_id, verify
from verifily_core.errors import ConfigError, DataError
from verifily_core.plugins import load_registries
from verifily_core.testing import make_sft_rows, write_jsonl


@pytest.fixture
def store(verifily_store):
    """An empty dataset store, the default of ``verifily dataset`` in this test."""
    return verifily_store


@pytest.fixture(scope="module")
def regs():
    return load_registries()


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def create(tmp_path, version, train_rows, test_rows=None, dataset_id="ds"):
    d = tmp_path / f"src_{dataset_id}_{version}"
    args = ["dataset", "create", "--id", dataset_id, "--version", version, "--task", "sft",
            "--train", write_jsonl(d / "train.jsonl", train_rows)]
    if test_rows is not None:
        args += ["--test", write_jsonl(d / "test.jsonl", test_rows)]
    return run(*args)


def _writable(path):
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_create_writes_manifest_and_seals_the_version(tmp_path, store):
    res = create(tmp_path, "v1", make_sft_rows(30, 1), make_sft_rows(10, 2))
    assert res.exit_code == 0, res.output
    manifest = json.loads((store / "ds" / "v1" / "manifest.json").read_text())
    assert manifest["num_rows"] == 40 and manifest["task"] == "sft"
    assert {f["split"]: f["num_rows"] for f in manifest["files"]} == {"train": 30, "test": 10}
    assert manifest["tag_keys"] == ["difficulty", "source"]
    assert manifest["tag_schema"]["source"] == {"type": "categorical", "values": ["ai_contaminated", "human", "synthetic"]}
    assert not os.access(store / "ds" / "v1" / "train.jsonl", os.W_OK) or os.geteuid() == 0
    assert not (store / "ds" / "v1" / "train.jsonl").stat().st_mode & stat.S_IWUSR
    again = create(tmp_path, "v1", make_sft_rows(5, 9))
    assert again.exit_code == 2 and "already exists" in again.stderr and "immutable" in again.stderr


def test_documented_manifest_has_the_keys_of_a_real_one(tmp_path, store, documented_json):
    assert create(tmp_path, "v1", make_sft_rows(6, 1), make_sft_rows(3, 2)).exit_code == 0
    real = json.loads((store / "ds" / "v1" / "manifest.json").read_text())
    documented = documented_json("datasets.md", "manifest.json")
    assert set(documented) == set(real)
    assert set(documented["files"][0]) == set(real["files"][0])


def test_one_modified_byte_fails_with_exit_2_naming_file_and_hashes(tmp_path, store):
    create(tmp_path, "v1", make_sft_rows(20, 1))
    target = store / "ds" / "v1" / "train.jsonl"
    _writable(store)
    data = bytearray(target.read_bytes())
    data[5] = ord("X") if data[5] != ord("X") else ord("Y")
    target.write_bytes(bytes(data))
    res = run("dataset", "verify", "ds@v1")
    assert res.exit_code == 2
    manifest = json.loads((store / "ds" / "v1" / "manifest.json").read_text())
    assert str(target) in res.stderr
    assert manifest["files"][0]["sha256"] in res.stderr and "file has sha256:" in res.stderr


@pytest.mark.parametrize("bad_path", ["../../etc/passwd", "/etc/passwd"])
def test_manifest_paths_escaping_the_version_are_refused(tmp_path, store, bad_path):
    create(tmp_path, "v1", make_sft_rows(10, 1))
    manifest_path = store / "ds" / "v1" / "manifest.json"
    _writable(store)
    doc = json.loads(manifest_path.read_text())
    doc["files"][0]["path"] = bad_path
    manifest_path.write_text(json.dumps(doc))
    res = run("dataset", "verify", "ds@v1")
    assert res.exit_code == 2
    assert bad_path in res.stderr and ("escapes" in res.stderr or "relative" in res.stderr)


def test_symlink_out_of_the_version_is_refused(tmp_path, store):
    create(tmp_path, "v1", make_sft_rows(10, 1))
    vdir = store / "ds" / "v1"
    _writable(store)
    outside = write_jsonl(tmp_path / "outside.jsonl", make_sft_rows(10, 1))
    (vdir / "train.jsonl").unlink()
    (vdir / "train.jsonl").symlink_to(outside)
    res = run("dataset", "verify", "ds@v1")
    assert res.exit_code == 2 and "escapes the version directory" in res.stderr


def test_a_broken_line_is_named_and_nothing_is_written(tmp_path, store):
    rows = make_sft_rows(8, 1)
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    lines = path.read_text().splitlines()
    lines[4] = json.dumps({"instruction": "x", "tags": {"source": "human"}})  # line 5: no output
    lines[6] = "{not json"
    path.write_text("\n".join(lines) + "\n")
    res = run("dataset", "create", "--id", "ds", "--version", "v1", "--task", "sft", "--train", path)
    assert res.exit_code == 2
    assert f"{path}:5: missing required field 'output'" in res.stderr
    assert f"{path}:7: invalid JSON" in res.stderr and "2 bad line(s) in all" in res.stderr
    assert not (store / "ds" / "v1").exists()


def test_tags_must_be_scalars(tmp_path, store):
    rows = make_sft_rows(3, 1)
    rows[1]["tags"] = {"source": ["human"]}
    res = create(tmp_path, "v1", rows)
    assert res.exit_code == 2 and ":2: tag 'tags.source' must be a scalar" in res.stderr


def test_diff_counts_exactly_the_changed_rows_per_tag(tmp_path, store):
    v1 = make_sft_rows(60, 1)
    v2 = [dict(r) for r in v1]
    contaminated = [i for i, r in enumerate(v2) if r["tags"]["source"] == "ai_contaminated"]
    for i in contaminated[:4]:  # repaired outputs: changed
        v2[i] = {**v2[i], "output": v2[i]["output"] + "!"}
    removed = v2.pop(0)  # source of row 0 (human by construction)
    v2.append({"instruction": "Repeat the word.", "input": "zebra", "output": "zebra",
               "tags": {"source": "synthetic", "difficulty": "easy"}})
    create(tmp_path, "v1", v1)
    create(tmp_path, "v2", v2)
    res = run("dataset", "diff", "ds@v1", "ds@v2", "--format", "json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["splits"]["train"] == {"added": 1, "removed": 1, "changed": 4, "retagged": 0}
    by_tag = d["by_tag"]["train"]
    assert by_tag["source=ai_contaminated"]["changed"] == 4
    assert by_tag[f"source={removed['tags']['source']}"]["removed"] == 1
    assert by_tag["source=synthetic"]["added"] == 1


def test_latest_and_not_found(tmp_path, store, regs):
    create(tmp_path, "v1", make_sft_rows(10, 1))
    create(tmp_path, "v2", make_sft_rows(12, 2))
    cfg = resolve_config(data={"task": "sft", "base_model": "m", "dataset_version": "ds@latest"})
    dv = resolve_dataset(cfg, regs)
    assert dv.ref == "ds@v2" and dv.num_rows == 12
    missing = resolve_config(data={"task": "sft", "base_model": "m", "dataset_version": "ds@v9"})
    with pytest.raises(DataError, match="dataset ds@v9 not found in .*; available versions of ds: v1, v2"):
        resolve_dataset(missing, regs)


def test_rule_6_slice_keys_must_exist(tmp_path, store, regs):
    create(tmp_path, "v1", make_sft_rows(10, 1))
    cfg = resolve_config(data={"task": "sft", "base_model": "m", "dataset_version": "ds@v1",
                               "eval": {"slice_by_tags": ["source", "vendor"]}})
    with pytest.raises(ConfigError, match=r"\$\.eval\.slice_by_tags: tag key\(s\) vendor not in dataset ds@v1"):
        resolve_dataset(cfg, regs)


def test_resolve_refuses_a_tampered_store_file(tmp_path, store, regs):
    create(tmp_path, "v1", make_sft_rows(10, 1))
    _writable(store)
    with open(store / "ds" / "v1" / "train.jsonl", "a") as fh:
        fh.write("\n")
    cfg = resolve_config(data={"task": "sft", "base_model": "m", "dataset_version": "ds@v1"})
    with pytest.raises(DataError, match="sha256 mismatch"):
        resolve_dataset(cfg, regs)


def _leaky(tmp_path, leakage, group_key=None):
    def rows(prefix, n):
        return [{"instruction": "Repeat the word.", "input": f"{prefix}{i}", "output": f"{prefix}{i}",
                 "tags": {"source": "human"}} for i in range(n)]

    train, test = rows("a", 30), rows("b", 10)
    test[0] = {**train[3], "output": "different", "input": "  A3 "}  # same input as a train row, up to case/space
    paths = {"train": str(write_jsonl(tmp_path / "tr.jsonl", train)), "test": str(write_jsonl(tmp_path / "te.jsonl", test))}
    return resolve_config(data={"task": "sft", "base_model": "m", "data_paths": paths,
                                "data_checks": {"leakage": leakage, "group_key": group_key}})


def test_leakage_warns_by_default_and_errors_when_asked(tmp_path, regs, caplog):
    with caplog.at_level("WARNING", logger="verifily.datasets"):
        resolve_dataset(_leaky(tmp_path, "warn"), regs)
    assert "1 test row(s) also in train" in caplog.text
    with pytest.raises(DataError, match="1 test row\\(s\\) also in train"):
        resolve_dataset(_leaky(tmp_path, "error"), regs)


def test_group_key_spanning_splits(tmp_path, regs):
    train = [{**r, "tags": {**r["tags"], "post_id": f"p{i}"}} for i, r in enumerate(make_sft_rows(5, 1))]
    test = [{**r, "tags": {**r["tags"], "post_id": f"q{i}"}} for i, r in enumerate(make_sft_rows(5, 50))]
    test[2]["tags"]["post_id"] = "p3"
    paths = {"train": str(write_jsonl(tmp_path / "tr.jsonl", train)), "test": str(write_jsonl(tmp_path / "te.jsonl", test))}
    cfg = resolve_config(data={"task": "sft", "base_model": "m", "data_paths": paths,
                               "data_checks": {"leakage": "error", "group_key": "tags.post_id"}})
    with pytest.raises(DataError, match="1 value\\(s\\) of tags.post_id span splits, e.g. p3"):
        resolve_dataset(cfg, regs)


def test_row_id_ignores_tags_but_not_content():
    row = {"instruction": "a", "output": "b", "tags": {"source": "human"}}
    assert row_id(row) == row_id({**row, "tags": {"source": "synthetic"}})
    assert row_id(row) != row_id({**row, "output": "c"})


def test_data_paths_version_is_verified_against_changes(tmp_path, regs):
    path = write_jsonl(tmp_path / "tr.jsonl", make_sft_rows(10, 1))
    cfg = resolve_config(data={"task": "sft", "base_model": "m", "data_paths": {"train": str(path)}})
    dv = resolve_dataset(cfg, regs)
    assert dv.ref is None and dv.num_rows == 10 and dv.content_hash.startswith("sha256:")
    verify(dv)
    write_jsonl(path, make_sft_rows(10, 2))
    with pytest.raises(DataError, match="sha256 mismatch"):
        verify(dv)


def test_store_diff_api_matches_cli(tmp_path, store, regs):
    create(tmp_path, "v1", make_sft_rows(10, 1))
    create(tmp_path, "v2", make_sft_rows(10, 1)[:-1])
    s = DatasetStore(store)
    d = diff_versions(s.get("ds@v1"), s.get("ds@v2"), regs.tasks.get("sft").row_input)
    assert d["total"]["removed"] == 1 and d["total"]["added"] == 0


def test_rule_6_reads_keys_through_slice_specs(tmp_path, store, regs):
    create(tmp_path, "v1", make_sft_rows(10, 1))
    ok = resolve_config(data={"task": "sft", "base_model": "m", "dataset_version": "ds@v1",
                              "eval": {"slice_by_tags": ["source&difficulty", "length:reference"]}})
    assert resolve_dataset(ok, regs).ref == "ds@v1"
    bad = resolve_config(data={"task": "sft", "base_model": "m", "dataset_version": "ds@v1",
                               "eval": {"slice_by_tags": ["source&vendor"]}})
    with pytest.raises(ConfigError, match=r"tag key\(s\) vendor not in dataset ds@v1"):
        resolve_dataset(bad, regs)
