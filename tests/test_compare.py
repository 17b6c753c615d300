"""`verifily compare`: hand-computable deltas per slice, paired intervals, formats, no torch."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from verifily_core.cli import cli
from verifily_core.stats import paired_bootstrap_ci

SOURCES = ["human"] * 4 + ["ai_contaminated"] * 4


def fake_run(root: Path, run_id: str, ref: str, f1: list[float], test_hash: str = "sha256:test") -> Path:
    """A run directory per docs/run-directory.md with eval files holding per-example token_f1."""
    run = root / run_id
    (run / "eval").mkdir(parents=True)
    meta = {"format_version": 1, "run_id": run_id, "name": None, "status": "completed", "task": "sft",
            "base_model": "m", "dataset": {"ref": ref}, "started_at": "2026-01-01T00:00:00Z", "completed_at": None,
            "duration_seconds": 1.0, "metrics": {}, "artifact_path": str(run), "error": None,
            "hashes": {"config_hash": "", "data_hash": "", "env_hash": "", "reproducibility_hash": ""}}
    (run / "run_meta.json").write_text(json.dumps(meta))

    def block(values):
        return {"n": len(values), "metrics": {"token_f1": {"value": sum(values) / len(values), "ci_low": 0, "ci_high": 1}}}

    slices = {f"source={s}": {"keys": ["source"], "n": 4, "small": True,
                              **block([v for v, src in zip(f1, SOURCES) if src == s])} for s in set(SOURCES)}
    results = {"format_version": 1, "run_id": run_id, "task": "sft", "test_data": {"sha256": test_hash},
               "metrics": ["token_f1"], "higher_is_better": {"token_f1": True},
               "overall": block(f1), "slice_by": ["source"], "slices": slices}
    (run / "eval" / "eval_results.json").write_text(json.dumps(results))
    with open(run / "eval" / "predictions.jsonl", "w") as fh:
        for i, (v, s) in enumerate(zip(f1, SOURCES)):
            fh.write(json.dumps({"index": i, "row_id": f"r{i}", "scores": {"token_f1": v}, "tags": {"source": s}}) + "\n")
    return run


@pytest.fixture
def two_runs(tmp_path):
    a = fake_run(tmp_path, "run_a", "ds@v1", [1, 1, 1, 0.5, 0.0, 0.25, 0.0, 0.25])
    b = fake_run(tmp_path, "run_b", "ds@v2", [1, 1, 0.5, 0.5, 1.0, 0.75, 1.0, 0.75])
    return a, b


def invoke(*args):
    return CliRunner().invoke(cli, ["compare", *map(str, args)])


def test_deltas_per_slice_are_the_hand_computed_ones(two_runs):
    a, b = two_runs
    res = invoke("--runs", f"{a},{b}", "--slice-by", "source", "--format", "json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["metric"] == "token_f1"  # f1 is the SFT alias
    assert d["deltas"]["run_b"] == pytest.approx((6.5 - 4.0) / 8)
    assert d["slice_deltas"]["source=human"]["run_b"] == pytest.approx((3.0 - 3.5) / 4)
    assert d["slice_deltas"]["source=ai_contaminated"]["run_b"] == pytest.approx((3.5 - 0.5) / 4)
    ci = d["intervals"]["run_b"]["source=ai_contaminated"]
    assert ci["delta"] == pytest.approx(0.75) and ci["low"] > 0 and ci["significant"] is True
    assert d["intervals"]["run_b"]["overall"] == paired_bootstrap_ci(
        [1, 1, 1, 0.5, 0.0, 0.25, 0.0, 0.25], [1, 1, 0.5, 0.5, 1.0, 0.75, 1.0, 0.75])
    assert d["same_test_set"] is True


def test_table_csv_and_json_agree(two_runs, tmp_path):
    a, b = two_runs
    table = invoke("--runs", f"{a},{b}", "--slice-by", "source").output
    assert "Comparison: token_f1" in table
    assert "+0.3125" in table and "+0.7500" in table and "-0.1250" in table
    assert "source=ai_contaminated slice improved most (+75.00 points)." in table
    assert "Note: Correlation, not causation." in table
    out = tmp_path / "cmp.csv"
    assert invoke("--runs", f"{a},{b}", "--slice-by", "source", "--format", "csv", "--output", out).exit_code == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["run_id"] for r in rows] == ["run_a", "run_b"]
    assert float(rows[1]["overall_delta"]) == pytest.approx(0.3125)
    assert float(rows[1]["source=human"]) == pytest.approx(0.75)
    assert rows[1]["dataset_version"] == "ds@v2"


def test_different_test_sets_are_flagged_and_not_tested(tmp_path):
    a = fake_run(tmp_path, "run_a", "ds@v1", [1.0] * 8, test_hash="sha256:one")
    b = fake_run(tmp_path, "run_b", "ds@v2", [0.5] * 8, test_hash="sha256:two")
    res = invoke("--runs", f"{a},{b}")
    assert "DIFFERENT test sets" in res.output and "[" not in res.output.split("Interpretation")[0].split("Delta")[1]


def test_unknown_metric_and_unevaluated_run(two_runs, tmp_path):
    a, b = two_runs
    res = invoke("--runs", f"{a},{b}", "--metric", "bleu")
    assert res.exit_code == 1 and "metric 'bleu' is not in the results of run_a; available: token_f1" in res.stderr
    (b / "eval" / "eval_results.json").unlink()
    res = invoke("--runs", f"{a},{b}")
    assert res.exit_code == 4 and "no evaluation results" in res.stderr


def test_run_ids_are_looked_up_in_the_runs_dir(two_runs):
    a, _ = two_runs
    res = invoke("--runs", "run_a,run_b", "--runs-dir", a.parent)
    assert res.exit_code == 0, res.output


def test_compare_imports_no_torch(two_runs):
    a, b = two_runs
    probe = ("import sys\nfrom verifily_core.cli import cli\n"
             "try:\n    cli.main(args=sys.argv[1:], prog_name='verifily')\nexcept SystemExit as e:\n    code = e.code\n"
             "print('HEAVY=' + ','.join(m for m in ('torch', 'transformers', 'peft', 'evaluate') if m in sys.modules))\n"
             "sys.exit(code or 0)\n")
    res = subprocess.run([sys.executable, "-c", probe, "compare", "--runs", f"{a},{b}", "--slice-by", "source"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "HEAVY="
