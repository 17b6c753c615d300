"""Resolving a config's dataset: store location, verification on use, rule 6, leakage policy."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from verifily_core.config_loading import resolve_config
from verifily_core.datasets import DatasetStore, open_store, resolve_dataset, store_path
from verifily_core.errors import ConfigError, DataError
from verifily_core.plugins import load_registries
from verifily_core.testing import make_classification_rows, make_sft_rows, write_jsonl


@pytest.fixture(scope="module")
def regs():
    return load_registries()


@pytest.fixture
def store(tmp_path, monkeypatch):
    root = tmp_path / "store"
    monkeypatch.setenv("VERIFILY_DATASETS_DIR", str(root))
    return DatasetStore(root)


def cfg(**data):
    return resolve_config(data={"task": "sft", "base_model": "m", **data})


def add(store, tmp_path, version, rows, task="sft", dataset_id="ds", **kw):
    src = tmp_path / f"src_{dataset_id}_{version}"
    paths = {split: write_jsonl(src / f"{split}.jsonl", r) for split, r in rows.items()}
    return store.create(dataset_id, version, task, paths, **{"registries": load_registries(), **kw})


def _writable(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_store_location_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VERIFILY_DATASETS_DIR", raising=False)
    assert store_path() == tmp_path / "home" / ".verifily" / "datasets"
    assert store_path(None, "cfg_store") == Path("cfg_store")
    monkeypatch.setenv("VERIFILY_DATASETS_DIR", str(tmp_path / "env"))
    assert store_path(None, "cfg_store") == tmp_path / "env"
    assert open_store(tmp_path / "flag", "cfg_store").root == tmp_path / "flag"


def test_explicit_store_argument_wins_over_env_and_config(tmp_path, monkeypatch, regs):
    flagged = DatasetStore(tmp_path / "flagged")
    add(flagged, tmp_path, "v1", {"train": make_sft_rows(7, 1)})
    monkeypatch.setenv("VERIFILY_DATASETS_DIR", str(tmp_path / "empty"))
    c = cfg(dataset_version="ds@v1", dataset_store=str(tmp_path / "also_empty"))
    assert resolve_dataset(c, regs, store=flagged.root).num_rows == 7
    with pytest.raises(DataError, match=f"dataset ds@v1 not found in {tmp_path / 'empty'}"):
        resolve_dataset(c, regs)
    monkeypatch.delenv("VERIFILY_DATASETS_DIR")
    c = cfg(dataset_version="ds@v1", dataset_store=str(flagged.root))
    assert resolve_dataset(c, regs).ref == "ds@v1"


def test_latest_is_the_newest_created_and_records_the_concrete_version(tmp_path, store, regs):
    add(store, tmp_path, "v9", {"train": make_sft_rows(5, 1)}, created_at="2026-01-01T00:00:00Z")
    add(store, tmp_path, "v10", {"train": make_sft_rows(6, 2)}, created_at="2026-01-02T00:00:00Z")
    dv = resolve_dataset(cfg(dataset_version="ds@latest"), regs)
    assert dv.ref == "ds@v10" and dv.version == "v10"
    assert dv.to_ref_dict()["ref"] == "ds@v10" and dv.to_ref_dict()["content_hash"] == dv.content_hash


def test_task_of_the_manifest_must_match_the_config(tmp_path, store, regs):
    add(store, tmp_path, "v1", {"train": make_classification_rows(8, 1)}, task="classification")
    with pytest.raises(ConfigError, match=r"\$\.task: 'sft' does not match dataset ds@v1, which is for 'classification'"):
        resolve_dataset(cfg(dataset_version="ds@v1"), regs)


def test_rows_are_revalidated_on_use(tmp_path, store, regs):
    rows = make_sft_rows(6, 1)
    rows[3] = {"instruction": "no output here"}
    add(store, tmp_path, "v1", {"train": rows}, validate_row=lambda row: None)  # a lax validator let it in
    with pytest.raises(DataError, match=r"train\.jsonl:4: missing required field 'output'"):
        resolve_dataset(cfg(dataset_version="ds@v1"), regs)


def test_content_hash_is_over_the_sorted_split_and_file_hashes(tmp_path, store):
    dv = add(store, tmp_path, "v1", {"train": make_sft_rows(5, 1), "test": make_sft_rows(3, 2)})
    digests = {f.split: "sha256:" + hashlib.sha256(Path(dv.split_path(f.split)).read_bytes()).hexdigest()
               for f in dv.files}
    text = f"test\t{digests['test']}\ntrain\t{digests['train']}\n"
    assert dv.content_hash == "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    assert {f.split: f.sha256 for f in dv.files} == digests
    swapped = add(store, tmp_path, "v2", {"train": make_sft_rows(3, 2), "test": make_sft_rows(5, 1)})
    assert swapped.content_hash != dv.content_hash  # same bytes, different splits


def test_manifest_details(tmp_path, store, regs):
    dv = add(store, tmp_path, "v1", {"train": make_sft_rows(5, 1)})
    manifest = json.loads(Path(dv.manifest_path).read_text())
    assert manifest["row_schema"] == {"sft": ["instruction", "input", "messages", "output"]}
    assert manifest["format"] == "jsonl" and manifest["created_at"].endswith("Z")
    _writable(store.root)
    manifest["files"][0]["sha256"] = manifest["files"][0]["sha256"].removeprefix("sha256:")  # bare hex is fine
    Path(dv.manifest_path).write_text(json.dumps(manifest))
    assert resolve_dataset(cfg(dataset_version="ds@v1"), regs).num_rows == 5
    manifest["files"].append(dict(manifest["files"][0]))
    Path(dv.manifest_path).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="split 'train' is listed twice"):
        store.get("ds@v1")


def test_data_paths_version(tmp_path, regs):
    train = write_jsonl(tmp_path / "tr.jsonl", make_sft_rows(9, 1))
    dv = resolve_dataset(cfg(data_paths={"train": str(train)}, data_checks={"leakage": "off"}), regs)
    assert dv.ref is None and dv.tag_keys == ("difficulty", "source")
    assert dv.to_ref_dict()["files"] == {"train": str(train)}
    assert dv.data_files() == {"train": {"path": str(train), "sha256": dv.files[0].sha256}}
    assert dv.read_rows("train")[0] == make_sft_rows(9, 1)[0]


def test_rule_6_holds_for_data_paths_too(tmp_path, regs):
    rows = [{k: v for k, v in r.items() if k != "tags"} for r in make_sft_rows(5, 1)]
    c = cfg(data_paths={"train": str(write_jsonl(tmp_path / "tr.jsonl", rows))}, eval={"slice_by_tags": ["source"]})
    with pytest.raises(ConfigError, match=r"\$\.eval\.slice_by_tags: tag key\(s\) source not in dataset data_paths "
                                          r"\(its tag keys: none\)"):
        resolve_dataset(c, regs)


def _split_files(tmp_path, train, test):
    return {"train": str(write_jsonl(tmp_path / "tr.jsonl", train)), "test": str(write_jsonl(tmp_path / "te.jsonl", test))}


def test_leakage_summary_counts_per_tag_and_off_skips_it(tmp_path, regs, caplog):
    train = [{"instruction": "Say", "input": f"w{i}", "output": f"w{i}", "tags": {"source": "human"}} for i in range(10)]
    test = [{"instruction": "say ", "input": "W1", "output": "other", "tags": {"source": "synthetic"}},
            {"instruction": "Say", "input": "w2", "output": "w2", "tags": {"source": "human"}},
            {"instruction": "Say", "input": "new", "output": "new", "tags": {"source": "human"}}]
    paths = _split_files(tmp_path, train, test)
    with caplog.at_level("WARNING", logger="verifily.datasets"):
        resolve_dataset(cfg(data_paths=paths), regs)
    warnings = [r for r in caplog.records if r.name == "verifily.datasets"]
    assert len(warnings) == 1
    assert "2 test row(s) also in train (source=human 1, source=synthetic 1)" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="verifily.datasets"):
        resolve_dataset(cfg(data_paths=paths, data_checks={"leakage": "off", "group_key": "tags.source"}), regs)
    assert not caplog.records


def test_clean_splits_pass_the_error_policy(tmp_path, regs):
    train = [{"instruction": "Say", "input": f"a{i}", "output": "x", "tags": {"post_id": f"p{i}"}} for i in range(5)]
    test = [{"instruction": "Say", "input": f"b{i}", "output": "x", "tags": {"post_id": f"q{i}"}} for i in range(5)]
    c = cfg(data_paths=_split_files(tmp_path, train, test),
            data_checks={"leakage": "error", "group_key": "tags.post_id"})
    assert resolve_dataset(c, regs).num_rows == 10


def test_a_group_key_no_row_has_is_a_config_error(tmp_path, regs):
    paths = _split_files(tmp_path, make_sft_rows(4, 1), make_sft_rows(4, 2))
    c = cfg(data_paths=paths, data_checks={"leakage": "warn", "group_key": "tags.post_idd"})
    with pytest.raises(ConfigError, match=r"\$\.data_checks\.group_key: no row of data_paths has 'tags.post_idd'"):
        resolve_dataset(c, regs)
