"""The hash chain covers what readers trust: eval outputs are sealed and checked, `compare` and
`eval` refuse a run that does not verify (unless told to skip, and then they say so), and the
base model's files are recorded and re-hashed."""

from __future__ import annotations

import json
import shutil
import stat

import pytest
from click.testing import CliRunner

from verifily_core.cli import cli
from verifily_core.testing import make_sft_rows, train_run, write_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory, verifily_tiny_llama_dir):
    """Two tiny evaluated runs (seeds 1 and 2) trained from a private copy of the base model."""
    root = tmp_path_factory.mktemp("chain")
    base = shutil.copytree(verifily_tiny_llama_dir, root / "base")
    write_jsonl(root / "train.jsonl", make_sft_rows(16, seed=1))
    write_jsonl(root / "test.jsonl", make_sft_rows(6, seed=3))
    out = []
    for seed in (1, 2):
        cfg = {"task": "sft", "base_model": str(base), "seed": seed,
               "data_paths": {"train": str(root / "train.jsonl"), "test": str(root / "test.jsonl")},
               "data_checks": {"leakage": "off"},
               "training": {"max_steps": 2, "batch_size": 4, "gradient_accumulation_steps": 1, "max_seq_length": 48},
               "lora": {"r": 4, "alpha": 8},
               "eval": {"metrics": ["token_f1"], "slice_by_tags": ["source"], "max_new_tokens": 4,
                        "bootstrap_resamples": 20, "min_slice_size": 1, "hard_examples": 2},
               "output": {"dir": str(root / "runs"), "name": f"seed{seed}"}}
        out.append(train_run(cfg, root, f"c{seed}"))
    return out, base


def writable_copy(run, dst_root):
    dst = shutil.copytree(run, dst_root / run.name)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)
    return dst


def verify(run):
    return CliRunner().invoke(cli, ["reproduce", "--run", str(run), "--verify-only"])


def line(output, name):
    return next(ln for ln in output.splitlines() if ln.strip().startswith(name + ":"))


def rename_in_meta(run):
    """Edit run_meta.json as a forger would (the run's name)."""
    meta = json.loads((run / "run_meta.json").read_text())
    meta["name"] = "renamed"
    (run / "run_meta.json").write_text(json.dumps(meta))


def edit_metric(run):
    path = run / "eval" / "eval_results.json"
    doc = json.loads(path.read_text())
    doc["overall"]["metrics"]["token_f1"]["value"] = 0.999
    path.write_text(json.dumps(doc, indent=2))


def test_a_fresh_run_seals_its_eval_and_records_its_base_model(runs):
    (run, _), base = runs
    seal = json.loads((run / "eval" / "eval_hashes.json").read_text())
    assert {"eval_results.json", "predictions.jsonl", "hard_examples.jsonl"} <= set(seal["files"])
    hashes = json.loads((run / "hashes.json").read_text())
    assert hashes["base_model"]["source"] == "folder"
    assert set(hashes["base_model"]["files"]) == {p.name for p in base.iterdir()}
    res = verify(run)
    assert res.exit_code == 0, res.output
    assert "MATCH" in line(res.output, "Eval files") and "MATCH" in line(res.output, "Base model")


def test_an_edited_metric_fails_verification_and_compare_refuses_it(runs, tmp_path):
    (a, b), _ = runs
    forged = writable_copy(b, tmp_path)
    edit_metric(forged)
    res = verify(forged)
    assert res.exit_code == 5
    assert "eval/eval_results.json changed" in line(res.output, "Eval files")
    res = CliRunner().invoke(cli, ["compare", "--runs", f"{a},{forged}", "--metric", "token_f1"])
    assert res.exit_code == 4
    assert str(forged) in res.output and "eval/eval_results.json changed" in res.output
    assert "--no-verify" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(cli, ["compare", "--runs", f"{a},{forged}", "--metric", "token_f1", "--no-verify",
                                   "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["overall"][json.loads((forged / "run_meta.json").read_text())["run_id"]] == 0.999
    assert any("--no-verify" in w for w in doc["warnings"])


def test_compare_refuses_an_edited_run_meta(runs, tmp_path):
    (a, b), _ = runs
    forged = writable_copy(b, tmp_path)
    rename_in_meta(forged)
    res = CliRunner().invoke(cli, ["compare", "--runs", f"{a},{forged}", "--metric", "token_f1"])
    assert res.exit_code == 4 and "run_meta.json changed" in res.output


def test_eval_files_of_another_run_are_caught(runs, tmp_path):
    (a, b), _ = runs
    forged = writable_copy(b, tmp_path)
    shutil.rmtree(forged / "eval")
    shutil.copytree(a / "eval", forged / "eval")
    res = verify(forged)
    assert res.exit_code == 5 and "made for another run" in line(res.output, "Eval files")


@pytest.mark.parametrize("damage", ["unsealed", "added", "link"])
def test_unsealed_added_and_linked_eval_files_are_caught(runs, tmp_path, damage):
    (run, _), _ = runs
    copy = writable_copy(run, tmp_path)
    if damage == "unsealed":
        (copy / "eval" / "eval_hashes.json").unlink()
        expected = "no eval_hashes.json"
    elif damage == "added":
        (copy / "eval" / "notes.txt").write_text("x")
        expected = "eval/notes.txt added"
    else:
        (copy / "eval" / "predictions.jsonl").unlink()
        (copy / "eval" / "predictions.jsonl").symlink_to(run / "eval" / "predictions.jsonl")
        expected = "eval/predictions.jsonl is a link"
    res = verify(copy)
    assert res.exit_code == 5 and expected in line(res.output, "Eval files")


def test_eval_refuses_a_changed_run_and_re_evaluating_reseals(runs, tmp_path):
    (run, _), _ = runs
    copy = writable_copy(run, tmp_path)
    (copy / "tokenizer" / "tokenizer_config.json").write_text(
        (copy / "tokenizer" / "tokenizer_config.json").read_text() + " ")
    res = CliRunner().invoke(cli, ["eval", "--run", str(copy)])
    assert res.exit_code == 4
    assert "tokenizer/tokenizer_config.json changed" in res.output and "--no-verify" in res.output
    assert not (copy / "eval" / "eval_results.json").read_text().count("0.999")

    fresh = writable_copy(run, tmp_path / "again")
    edit_metric(fresh)
    assert verify(fresh).exit_code == 5
    res = CliRunner().invoke(cli, ["eval", "--run", str(fresh)])
    assert res.exit_code == 0, res.output
    res = verify(fresh)
    assert res.exit_code == 0, res.output


def test_eval_no_verify_loads_the_run_and_says_so(runs, tmp_path):
    (run, _), _ = runs
    copy = writable_copy(run, tmp_path)
    rename_in_meta(copy)
    res = CliRunner().invoke(cli, ["eval", "--run", str(copy), "--no-verify"])
    assert res.exit_code == 0, res.output
    assert "--no-verify" in res.output and "without checking" in res.output


def test_a_changed_base_model_file_is_named_and_a_missing_folder_is_not_checked(runs, tmp_path):
    (run, _), base = runs
    config = base / "config.json"
    original = config.read_bytes()
    try:
        config.write_bytes(original + b"\n")
        res = verify(run)
        assert res.exit_code == 5
        assert "config.json changed" in line(res.output, "Base model")
    finally:
        config.write_bytes(original)
    base.rename(tmp_path / "moved")
    try:
        res = verify(run)
    finally:
        (tmp_path / "moved").rename(base)
    assert res.exit_code == 0, res.output
    assert "NOT CHECKED" in line(res.output, "Base model") and "not on this machine" in res.output
