"""`verifily runs`: completed, partial and failed runs with status, dataset, start time and main metrics."""

from __future__ import annotations

import json

from click.testing import CliRunner

from verifily_core.cli import cli


def write_run(root, dirname, status, started, ref="ds@v1", metrics=None, error=None, test=None, name=None):
    run = root / dirname
    run.mkdir(parents=True)
    meta = {"format_version": 1, "run_id": dirname.split(".")[0], "name": name, "status": status, "task": "sft",
            "base_model": "m", "dataset": {"ref": ref}, "started_at": started, "completed_at": None,
            "duration_seconds": None, "metrics": metrics or {}, "artifact_path": str(run), "error": error,
            "hashes": {"config_hash": "", "data_hash": "", "env_hash": "", "reproducibility_hash": ""}}
    (run / "run_meta.json").write_text(json.dumps(meta))
    if test is not None:
        (run / "eval").mkdir()
        doc = {"format_version": 1, "task": "sft",
               "overall": {"n": 10, "metrics": {k: {"value": v} for k, v in test.items()}}}
        (run / "eval" / "eval_results.json").write_text(json.dumps(doc))
    return run


def invoke(*args):
    return CliRunner().invoke(cli, ["runs", *map(str, args)])


def test_lists_every_run_newest_first(tmp_path):
    write_run(tmp_path, "run_1", "completed", "2026-01-01T10:00:00Z", metrics={"train_loss": 0.5},
              test={"token_f1": 0.71, "exact_match": 0.5}, name="baseline")
    write_run(tmp_path, "run_2.partial", "running", "2026-01-02T10:00:00Z", ref=None)
    write_run(tmp_path, "run_3.failed", "failed", "2026-01-03T10:00:00Z", error="NaN loss at step 3")
    (tmp_path / "not_a_run").mkdir()
    rows = json.loads(invoke("--runs-dir", tmp_path, "--format", "json").stdout)
    assert [(r["run_id"], r["status"], r["dataset"]) for r in rows] == [
        ("run_3", "failed", "ds@v1"), ("run_2", "running", "data_paths"), ("run_1", "completed", "ds@v1")]
    assert rows[2]["metrics"] == {"train_loss": 0.5, "test_token_f1": 0.71, "test_exact_match": 0.5}
    table = invoke("--runs-dir", tmp_path).output.splitlines()
    assert table[0].split() == ["run", "name", "status", "dataset", "started", "metrics"]
    assert table[3].split() == ["run_1", "baseline", "completed", "ds@v1", "2026-01-01T10:00:00Z", "train_loss=0.5000",
                                "test_token_f1=0.7100", "test_exact_match=0.5000"]
    assert table[1].endswith("error: NaN loss at step 3")


def test_empty_and_missing_directories(tmp_path):
    res = invoke("--runs-dir", tmp_path)
    assert res.exit_code == 0 and f"No runs in {tmp_path}." in res.output
    res = invoke("--runs-dir", tmp_path / "nope")
    assert res.exit_code == 2 and "no such directory" in res.stderr
