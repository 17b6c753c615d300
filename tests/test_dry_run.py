"""``verifily train --dry-run`` tells whether the real run will start (issue 13).

A dry run resolves the dataset as training does (every file hashed, every row validated,
streaming, no model and no heavy library), checks every slice key against the evaluated split,
and validates what training used to find out late: the seed range, a local base model's
tokenizer files, a writable output directory. ``--no-data-check`` keeps the config-only path.
Data problems exit 2 and config problems exit 1, each with one line and no traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from verifily_core.testing.data import make_sft_rows, write_jsonl


def _config(tmp_path: Path, **fields) -> Path:
    data = {"task": "sft", "base_model": "org/model", "output": {"dir": str(tmp_path / "runs")}, **fields}
    path = tmp_path / "dry-train.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _paths(files: dict[str, Path]) -> dict[str, str]:
    return {split: str(p) for split, p in files.items()}


def _one_line_error(res, code: int, *parts: str) -> str:
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.stderr and "unexpected" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


# -- the reproductions of issue 13: each passed --dry-run before -----------------------------

def test_a_missing_dataset_version_fails_the_dry_run_with_exit_2(tmp_path, verifily_cli, verifily_sft_dataset):
    cfg = _config(tmp_path, dataset_version="ds_sft@v9")
    _one_line_error(verifily_cli("train", "--config", cfg, "--dry-run"), 2, "ds_sft@v9 not found", "v1")


def test_a_missing_train_file_fails_the_dry_run_with_exit_2(tmp_path, verifily_cli):
    missing = tmp_path / "nope" / "train.jsonl"
    cfg = _config(tmp_path, data_paths={"train": str(missing)})
    _one_line_error(verifily_cli("train", "--config", cfg, "--dry-run"), 2, str(missing), "not found")


@pytest.mark.parametrize("bad_line, field", [
    ('{"instruction": "Repeat.", "input": "x"}', "missing required field 'output'"),
    ('{"instruction": "Repeat.", "output": ', "invalid JSON"),
])
def test_a_broken_row_fails_the_dry_run_naming_file_and_line(tmp_path, verifily_cli, bad_line, field):
    train = write_jsonl(tmp_path / "train.jsonl", make_sft_rows(5, seed=1))
    lines = train.read_text().splitlines()
    lines.insert(2, bad_line)
    train.write_text("\n".join(lines) + "\n")
    cfg = _config(tmp_path, data_paths={"train": str(train)})
    _one_line_error(verifily_cli("train", "--config", cfg, "--dry-run"), 2, f"{train}:3:", field)


def test_a_broken_row_in_a_store_version_fails_the_dry_run(tmp_path, verifily_cli, verifily_sft_dataset):
    """A version edited after it was sealed fails its hash check, as training would."""
    test_file = Path(verifily_sft_dataset.split_path("test"))
    test_file.chmod(0o644)
    test_file.write_text(test_file.read_text() + "{broken\n")
    cfg = _config(tmp_path, dataset_version=verifily_sft_dataset.ref)
    _one_line_error(verifily_cli("train", "--config", cfg, "--dry-run"), 2, str(test_file), "sha256 mismatch")


def test_a_slice_key_the_data_lacks_fails_the_dry_run_naming_the_key_and_the_tags(tmp_path, verifily_cli,
                                                                                  verifily_sft_files):
    cfg = _config(tmp_path, data_paths=_paths(verifily_sft_files), eval={"slice_by_tags": ["source", "region"]})
    line = _one_line_error(verifily_cli("train", "--config", cfg, "--dry-run"), 1,
                           "$.eval.slice_by_tags", "region", "difficulty, source")
    assert "source," not in line.split("region")[0]  # only the missing key is named as missing


def test_a_slice_key_of_a_crossed_spec_is_checked_too(tmp_path, verifily_cli, verifily_sft_files):
    cfg = _config(tmp_path, data_paths=_paths(verifily_sft_files), eval={"slice_by_tags": ["source&region"]})
    _one_line_error(verifily_cli("train", "--config", cfg, "--dry-run"), 1, "$.eval.slice_by_tags", "region")


def test_a_slice_key_only_the_train_split_carries_fails_for_the_evaluated_test_split(tmp_path, verifily_cli):
    rows = make_sft_rows(12, seed=1)
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    test = write_jsonl(tmp_path / "test.jsonl", [{**r, "tags": {"source": r["tags"]["source"]}}
                                                 for r in make_sft_rows(6, seed=3)])
    cfg = _config(tmp_path, data_paths={"train": str(train), "test": str(test)},
                  eval={"slice_by_tags": ["difficulty"]})
    _one_line_error(verifily_cli("train", "--config", cfg, "--dry-run"), 1,
                    "$.eval.slice_by_tags", "difficulty", "test split", "source")


def test_a_label_outside_the_label_set_fails_the_classification_dry_run(tmp_path, verifily_cli,
                                                                       verifily_classification_files):
    """The task's dataset-level check (``Task.validate_dataset``) runs on the dry run's path too."""
    from verifily_core.testing.data import make_classification_rows

    test = write_jsonl(verifily_classification_files["test"],
                       make_classification_rows(4, seed=3) + [{"text": "so so", "label": "neutral"}])
    cfg = _config(tmp_path, task="classification", data_paths=_paths(verifily_classification_files))
    _one_line_error(verifily_cli("train", "--config", cfg, "--dry-run"), 2,
                    f"test row 5 of {test}", "label 'neutral' is not one of the run's labels")
    one_label = write_jsonl(tmp_path / "one.jsonl", [{"text": "fine", "label": "pos"}] * 3)
    cfg = _config(tmp_path, task="classification", data_paths={"train": str(one_label)})
    _one_line_error(verifily_cli("train", "--config", cfg, "--dry-run"), 2, "1 distinct label")


def test_preference_rows_mixing_two_forms_fail_the_dpo_dry_run(tmp_path, verifily_cli):
    from verifily_dpo.testing import make_preference_rows

    train = write_jsonl(tmp_path / "train.jsonl", make_preference_rows(3, seed=1) + make_preference_rows(1, chat=True))
    cfg = _config(tmp_path, task="dpo", data_paths={"train": str(train)})
    _one_line_error(verifily_cli("train", "--config", cfg, "--dry-run"), 2, str(train),
                    "mix the text form (row 1) and the chat form (row 4)")


def test_a_derived_slicer_spec_reads_no_tag_and_passes(tmp_path, verifily_cli, verifily_sft_files):
    cfg = _config(tmp_path, data_paths=_paths(verifily_sft_files), eval={"slice_by_tags": ["length:reference"]})
    res = verifily_cli("train", "--config", cfg, "--dry-run")
    assert res.exit_code == 0, res.output


def test_an_unknown_slicer_is_a_config_error_even_without_the_data_check(tmp_path, verifily_cli):
    cfg = _config(tmp_path, data_paths={"train": "nope.jsonl"}, eval={"slice_by_tags": ["lenght:reference"]})
    _one_line_error(verifily_cli("train", "--config", cfg, "--dry-run", "--no-data-check"), 1,
                    "$.eval.slice_by_tags", "unknown slicer 'lenght'")


@pytest.mark.parametrize("seed", [2**40, 2**32, -1])
def test_an_out_of_range_seed_fails_the_dry_run_with_exit_1(tmp_path, verifily_cli, seed):
    cfg = _config(tmp_path, data_paths={"train": "nope.jsonl"})
    _one_line_error(verifily_cli("train", "--config", cfg, "--dry-run", "--no-data-check", "--seed", seed), 1,
                    "$.seed", "4294967295", str(seed))


def test_the_largest_seed_numpy_accepts_passes(tmp_path, verifily_cli):
    cfg = _config(tmp_path, data_paths={"train": "nope.jsonl"}, seed=2**32 - 1)
    assert verifily_cli("train", "--config", cfg, "--dry-run", "--no-data-check").exit_code == 0


def test_a_local_model_folder_without_tokenizer_files_fails_the_dry_run(tmp_path, verifily_cli):
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "model.safetensors").write_bytes(b"")
    cfg = _config(tmp_path, base_model=str(model), data_paths={"train": "nope.jsonl"})
    _one_line_error(verifily_cli("train", "--config", cfg, "--dry-run", "--no-data-check"), 1,
                    "$.base_model", str(model), "tokenizer", "save_pretrained")


@pytest.mark.parametrize("files", [["tokenizer.json"], ["tokenizer_config.json"], ["vocab.txt"],
                                   ["vocab.json", "merges.txt"], ["spiece.model"], ["tokenizer.model"]])
def test_a_local_model_folder_with_tokenizer_files_passes(tmp_path, verifily_cli, files):
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for name in files:
        (model / name).write_text("{}")
    cfg = _config(tmp_path, base_model=str(model), data_paths={"train": "nope.jsonl"})
    res = verifily_cli("train", "--config", cfg, "--dry-run", "--no-data-check")
    assert res.exit_code == 0, res.output


def test_a_hub_model_name_is_not_checked_offline(tmp_path, verifily_cli):
    cfg = _config(tmp_path, base_model="some-org/not-downloaded", data_paths={"train": "nope.jsonl"})
    assert verifily_cli("train", "--config", cfg, "--dry-run", "--no-data-check").exit_code == 0


def test_an_output_dir_that_cannot_be_created_fails_the_dry_run(tmp_path, verifily_cli):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg = _config(tmp_path, data_paths={"train": "nope.jsonl"})
    res = verifily_cli("train", "--config", cfg, "--dry-run", "--no-data-check", "--output-dir", blocker / "runs")
    _one_line_error(res, 1, "$.output.dir", str(blocker), "not a directory")
    res = verifily_cli("train", "--config", cfg, "--dry-run", "--no-data-check", "--output-dir", blocker)
    _one_line_error(res, 1, "$.output.dir", str(blocker), "not a directory")


@pytest.mark.skipif(sys.platform == "win32" or __import__("os").geteuid() == 0,
                    reason="root (and Windows) can write into a read-only folder")
def test_an_output_dir_that_cannot_be_written_fails_the_dry_run(tmp_path, verifily_cli):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        cfg = _config(tmp_path, data_paths={"train": "nope.jsonl"}, output={"dir": str(locked / "runs")})
        _one_line_error(verifily_cli("train", "--config", cfg, "--dry-run", "--no-data-check"), 1,
                        "$.output.dir", str(locked), "not writable")
    finally:
        locked.chmod(0o700)


def test_an_output_dir_this_user_may_not_write_fails_the_dry_run(tmp_path, verifily_cli, monkeypatch):
    """The same check as the test above where it cannot run (as root): ``os.access`` says no."""
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: Path(p) != locked and real_access(p, mode, **k))
    cfg = _config(tmp_path, data_paths={"train": "nope.jsonl"})
    for target, what in ((locked, f"'{locked}' is not writable"), (locked / "runs" / "x", f"'{locked}' is not writable")):
        res = verifily_cli("train", "--config", cfg, "--dry-run", "--no-data-check", "--output-dir", target)
        _one_line_error(res, 1, "$.output.dir", what)
    assert verifily_cli("train", "--config", cfg, "--dry-run", "--no-data-check",
                        "--output-dir", tmp_path / "new" / "runs").exit_code == 0


def test_a_real_run_refuses_the_same_config_before_loading_any_model(tmp_path, monkeypatch):
    """The checks are part of validation, so a real run stops at them too (before any model load)."""
    from verifily_core import api
    from verifily_core.errors import ConfigError

    def no_backend(*a, **k):
        raise AssertionError("the backend ran")

    monkeypatch.setattr("verifily_core.training.execute_plan", no_backend)
    cfg = _config(tmp_path, data_paths={"train": "nope.jsonl"}, seed=2**40)
    with pytest.raises(ConfigError, match=r"\$\.seed"):
        api.train(cfg)


# -- what a dry run reports --------------------------------------------------------------------

def test_the_dry_run_reports_what_it_checked(tmp_path, verifily_cli, verifily_sft_files):
    cfg = _config(tmp_path, data_paths=_paths(verifily_sft_files), eval={"slice_by_tags": ["source"]})
    res = verifily_cli("train", "--config", cfg, "--dry-run")
    assert res.exit_code == 0, res.output
    assert "Data checked:" in res.stdout
    assert "63 rows (train 30, val 9, test 24)" in res.stdout
    assert "slice keys source found in test" in res.stdout

    plan = json.loads(verifily_cli("train", "--config", cfg, "--dry-run", "--format", "json").stdout)
    check = plan["data_check"]
    assert check["checked"] is True
    assert check["dataset"] == "data_paths"
    assert check["rows"] == {"train": 30, "val": 9, "test": 24}
    assert check["slice_keys"] == ["source"] and check["slice_split"] == "test"
    assert check["tag_keys"] == ["difficulty", "source"]
    assert check["content_hash"].startswith("sha256:")


def test_the_dry_run_of_a_store_version_reports_its_ref_and_hash(tmp_path, verifily_cli, verifily_sft_dataset):
    cfg = _config(tmp_path, dataset_version=verifily_sft_dataset.ref)
    plan = json.loads(verifily_cli("train", "--config", cfg, "--dry-run", "--format", "json").stdout)
    assert plan["data_check"]["dataset"] == "ds_sft@v1"
    assert plan["data_check"]["content_hash"] == verifily_sft_dataset.content_hash
    assert plan["data_check"]["rows"] == {"train": 30, "val": 9, "test": 24}


def test_no_data_check_keeps_the_config_only_path(tmp_path, verifily_cli):
    cfg = _config(tmp_path, data_paths={"train": str(tmp_path / "nope.jsonl")}, eval={"slice_by_tags": ["region"]})
    res = verifily_cli("train", "--config", cfg, "--dry-run", "--no-data-check")
    assert res.exit_code == 0, res.output
    assert "Data not checked (--no-data-check)" in res.stdout
    plan = json.loads(verifily_cli("train", "--config", cfg, "--dry-run", "--no-data-check", "--format", "json").stdout)
    assert plan["data_check"] == {"checked": False, "reason": "skipped (--no-data-check)"}


def test_no_data_check_without_dry_run_is_a_usage_error(tmp_path, verifily_cli):
    cfg = _config(tmp_path, data_paths={"train": "nope.jsonl"})
    res = verifily_cli("train", "--config", cfg, "--no-data-check")
    assert res.exit_code == 1 and "--no-data-check" in res.stderr and "--dry-run" in res.stderr


def test_a_backend_that_reads_no_data_here_is_reported_as_not_checked(tmp_path, verifily_cli):
    cfg = _config(tmp_path, data_paths={"train": "nope.jsonl"}, compute={"mode": "managed"})
    plan = json.loads(verifily_cli("train", "--config", cfg, "--dry-run", "--format", "json").stdout)
    assert plan["data_check"]["checked"] is False
    assert "managed" in plan["data_check"]["reason"]


@pytest.mark.parametrize("task", ["sft", "classification"])
def test_the_data_check_imports_no_heavy_library(tmp_path, verifily_sft_files, verifily_classification_files, task):
    files = verifily_sft_files if task == "sft" else verifily_classification_files
    cfg = _config(tmp_path, task=task, data_paths=_paths(files), eval={"slice_by_tags": ["source&difficulty"]},
                  data_checks={"leakage": "warn", "group_key": "tags.source"})
    probe = ("import sys\nfrom verifily_core.cli import cli\n"
             "try:\n    cli.main(args=sys.argv[1:], prog_name='verifily')\nexcept SystemExit as e:\n    code = e.code\n"
             "heavy = [m for m in ('torch', 'transformers', 'peft', 'evaluate', 'accelerate', 'datasets', 'trl')"
             " if m in sys.modules]\nprint('HEAVY=' + ','.join(heavy))\nsys.exit(code or 0)\n")
    import subprocess

    res = subprocess.run([sys.executable, "-c", probe, "train", "--config", str(cfg), "--dry-run"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "Data checked:" in res.stdout
    assert res.stdout.strip().splitlines()[-1] == "HEAVY="
