"""`verifily compare`: hand-computable deltas per slice, paired intervals, data changes, formats, no torch."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from verifily_core.cli import cli
from verifily_core.evaluation.stats import rng_for
from verifily_core.plugins import load_registries
from verifily_core.testing import seal_run, write_jsonl

SOURCES = ["human"] * 4 + ["ai_contaminated"] * 4
F1_A = [1, 1, 1, 0.5, 0.0, 0.25, 0.0, 0.25]  # run on ds@v1: mean 0.5; human 0.875, ai 0.125
F1_B = [1, 1, 0.5, 0.5, 1.0, 0.75, 1.0, 0.75]  # run on ds@v2: mean 0.8125; human 0.75, ai 0.875


def sft_pair(i: int, f1: float) -> tuple[str, str]:
    """A (prediction, reference) pair whose SQuAD token F1 is ``f1`` (a multiple of 1/4)."""
    ref = [f"w{i}x{j}" for j in range(4)]
    k = round(f1 * 4)
    return " ".join(ref[:k] + [f"other{j}" for j in range(4 - k)]), " ".join(ref)


def fake_run(root: Path, run_id: str, ref: str | None, f1: list[float], *, test_hash: str = "sha256:test",
             store: Path | None = None, row_ids: list[str] | None = None, losses: list[float] | None = None,
             name: str | None = None, more_tags: list[dict] | None = None,
             slice_by: tuple[str, ...] = ("source",)) -> Path:
    """A completed run directory per docs/run-directory.md, evaluated by the real evaluation code."""
    from verifily_core.evaluation import build_eval_result, write_eval_files

    regs = load_registries()
    run = root / run_id
    run.mkdir(parents=True)
    meta = {"format_version": 1, "run_id": run_id, "name": name, "status": "completed", "task": "sft",
            "base_model": "tiny", "dataset": {"ref": ref}, "started_at": f"2026-01-01T00:00:0{len(run_id) % 10}Z",
            "completed_at": None, "duration_seconds": 1.0, "metrics": {"train_loss": 1.0}, "artifact_path": str(run),
            "error": None, "hashes": {"config_hash": "", "data_hash": "", "env_hash": "", "reproducibility_hash": ""}}
    (run / "run_meta.json").write_text(json.dumps(meta))
    cfg = {"task": "sft", "base_model": "tiny", "dataset_version": ref, "dataset_store": str(store) if store else None}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    records = []
    for i, (value, source) in enumerate(zip(f1, SOURCES)):
        pred, gold = sft_pair(i, value)
        records.append({"index": i, "row_id": (row_ids or [f"sha256:r{j}" for j in range(len(f1))])[i],
                        "prediction": pred, "reference": gold,
                        "tags": {"source": source, **((more_tags or [{}] * len(f1))[i])},
                        "scores": {"loss": (losses or [1.0] * len(f1))[i]}})
    metrics = [regs.metrics.get(m) for m in ("token_f1", "exact_match", "loss")]
    result = build_eval_result(records, regs.tasks.get("sft"), metrics, slicers=regs.slicers, slice_by=list(slice_by), resamples=100,
                               min_slice_size=2, run_id=run_id,
                               test_data={"path": "test.jsonl", "sha256": test_hash, "num_examples": len(f1)})
    seal_run(run)
    write_eval_files(result, run / "eval", run_path=run)
    return run


def sft_row(i: int, source: str, output: str = "out") -> dict:
    return {"instruction": f"instruction {i}", "input": "", "output": f"{output} {i}", "tags": {"source": source}}


@pytest.fixture
def store(tmp_path):
    """ds@v1 and ds@v2: v2 changes the outputs of 2 ai rows, drops 2 ai rows and adds 1 human row."""
    from verifily_core.datasets import DatasetStore

    v1 = [sft_row(i, "human") for i in range(6)] + [sft_row(i, "ai_contaminated") for i in range(6, 10)]
    v2 = v1[:6] + [sft_row(6, "ai_contaminated", "fixed"), sft_row(7, "ai_contaminated", "fixed"), sft_row(10, "human")]
    s = DatasetStore(tmp_path / "store")
    regs = load_registries()
    s.create("ds", "v1", "sft", {"train": write_jsonl(tmp_path / "v1.jsonl", v1)}, registries=regs)
    s.create("ds", "v2", "sft", {"train": write_jsonl(tmp_path / "v2.jsonl", v2)}, registries=regs)
    return tmp_path / "store"


@pytest.fixture
def two_runs(tmp_path, store):
    root = tmp_path / "runs"
    return (fake_run(root, "run_a", "ds@v1", F1_A, store=store, name="baseline-v1"),
            fake_run(root, "run_b", "ds@v2", F1_B, store=store, name="cleaned-v2"))


def invoke(*args):
    return CliRunner().invoke(cli, ["compare", *map(str, args)])


def compare_json(*args):
    res = invoke(*args, "--format", "json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_deltas_per_slice_are_the_hand_computed_ones(two_runs):
    a, b = two_runs
    d = compare_json("--runs", f"{a},{b}", "--slice-by", "source")
    assert d["metric"] == "token_f1" and d["requested_metric"] == "f1"  # f1 is the SFT alias
    assert d["overall"] == {"run_a": pytest.approx(0.5), "run_b": pytest.approx(0.8125)}
    assert d["deltas"]["run_b"] == pytest.approx(0.3125) and d["deltas"]["run_a"] == 0
    assert d["slice_deltas"]["source=human"]["run_b"] == pytest.approx(0.75 - 0.875)
    assert d["slice_deltas"]["source=ai_contaminated"]["run_b"] == pytest.approx(0.875 - 0.125)
    assert d["slice_sizes"]["source=human"] == {"run_a": 4, "run_b": 4}
    assert d["same_test_set"] is True and d["datasets"] == {"run_a": "ds@v1", "run_b": "ds@v2"}


def test_paired_intervals_match_a_hand_bootstrap(two_runs):
    a, b = two_runs
    d = compare_json("--runs", f"{a},{b}", "--slice-by", "source")
    ci = d["intervals"]["run_b"]
    # every ai row improved (+1, +0.5, +1, +0.5): every resample's mean delta is >= 0.5
    assert ci["source=ai_contaminated"]["delta"] == pytest.approx(0.75)
    assert ci["source=ai_contaminated"]["ci_low"] >= 0.5 and ci["source=ai_contaminated"]["significant"] is True
    # human rows: deltas 0, 0, -0.5, 0; a third of the resamples draw no -0.5: the interval reaches 0
    assert ci["source=human"]["ci_high"] == 0 and ci["source=human"]["significant"] is False
    # overall: the documented algorithm, recomputed by hand (mean per-row difference of token F1)
    diff = np.array(F1_B) - np.array(F1_A)
    draws = rng_for(42, "paired|token_f1|overall").integers(0, 8, size=(1000, 8))
    lo, hi = np.percentile(diff[draws].mean(axis=1), [2.5, 97.5])
    assert (ci["overall"]["ci_low"], ci["overall"]["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert ci["overall"]["n"] == 8 and ci["overall"]["significant"] == bool(lo > 0)


def test_training_data_changes_beside_slice_deltas(two_runs):
    a, b = two_runs
    d = compare_json("--runs", f"{a},{b}", "--slice-by", "source")
    changes = d["data_changes"]["run_b"]
    assert changes["from"] == "ds@v1" and changes["to"] == "ds@v2"
    assert changes["train"] == {"added": 1, "removed": 2, "changed": 2, "retagged": 0}
    assert changes["by_tag"]["source=ai_contaminated"] == {"added": 0, "removed": 2, "changed": 2, "retagged": 0}
    assert changes["by_tag"]["source=human"] == {"added": 1, "removed": 0, "changed": 0, "retagged": 0}
    table = invoke("--runs", f"{a},{b}", "--slice-by", "source").output
    row = next(line for line in table.splitlines() if line.strip().startswith("Train rows"))
    # columns in the evaluation's slice order: largest first, then by name
    assert row.split()[-3:] == ["+1/-2/~2", "+0/-2/~2", "+1/-0/~0"]  # overall, ai, human
    assert ("source=ai_contaminated: training rows 2 removed, 2 changed (ds@v1 -> ds@v2); "
            "its delta: +75.00 points.") in table


def test_interpretation_is_computed_from_the_numbers(two_runs):
    a, b = two_runs
    table = invoke("--runs", f"{a},{b}", "--slice-by", "source").output
    assert "Comparison: token_f1 ('f1' for sft)" in table
    assert "- Overall token_f1 improved by +31.25 points; 95% CI" in table
    assert "- source=ai_contaminated slice improved (+75.00 points); 95% CI +50.00 to" in table
    assert "significant." in table
    assert "- source=human slice decreased (-12.50 points); 95% CI" in table and "within noise." in table
    assert table.rstrip().endswith("Note: Correlation, not causation.")
    reverse = invoke("--runs", f"{b},{a}", "--slice-by", "source").output
    assert "Overall token_f1 decreased by -31.25 points" in reverse
    assert "source=human slice improved (+12.50 points)" in reverse


def test_lower_is_better_metric_reads_the_right_way(tmp_path):
    root = tmp_path / "runs"
    a = fake_run(root, "run_a", None, F1_A, losses=[2.0] * 8)
    b = fake_run(root, "run_b", None, F1_A, losses=[1.5] * 8)
    d = compare_json("--runs", f"{a},{b}", "--metric", "loss")
    assert d["higher_is_better"] is False and d["deltas"]["run_b"] == pytest.approx(-0.5)
    assert "Overall loss improved by -0.5000" in d["interpretation"][0]


def test_table_csv_and_json_agree(two_runs, tmp_path):
    a, b = two_runs
    args = ("--runs", f"{a},{b}", "--slice-by", "source")
    d = compare_json(*args)
    out = tmp_path / "cmp.csv"
    assert invoke(*args, "--format", "csv", "--output", out).exit_code == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["run_id"], r["slice"]) for r in rows] == [
        (rid, s) for rid in ("run_a", "run_b") for s in ("overall", "source=ai_contaminated", "source=human")]
    table = invoke(*args).output.splitlines()
    for rid, label in (("run_a", "baseline-v1"), ("run_b", "cleaned-v2")):
        cells = next(line for line in table if line.strip().startswith(label)).split()
        csv_values = [float(r["value"]) for r in rows if r["run_id"] == rid]
        json_values = [d["overall"][rid], d["slices"]["source=ai_contaminated"][rid], d["slices"]["source=human"][rid]]
        assert [float(c) for c in cells[2:]] == [round(v, 4) for v in csv_values] == [round(v, 4) for v in json_values]
        assert cells[1] == d["datasets"][rid] == next(r["dataset_version"] for r in rows if r["run_id"] == rid)
    delta_cells = next(line for line in table if line.strip().startswith("Delta (v2 vs v1):")).split()[4:]
    b_rows = [r for r in rows if r["run_id"] == "run_b"]
    assert [c.rstrip("*") for c in delta_cells] == [f"{float(r['delta']):+.4f}" for r in b_rows]
    assert [c.endswith("*") for c in delta_cells] == [r["significant"] == "True" for r in b_rows]
    assert float(b_rows[1]["ci_low"]) == pytest.approx(d["intervals"]["run_b"]["source=ai_contaminated"]["ci_low"])
    assert (b_rows[1]["train_removed"], b_rows[1]["train_changed"]) == ("2", "2")


def test_different_test_sets_are_flagged_and_only_shared_rows_are_tested(tmp_path):
    root = tmp_path / "runs"
    a = fake_run(root, "run_a", "ds@v1", F1_A, test_hash="sha256:one")
    shared = [f"sha256:r{i}" if i < 4 else f"sha256:new{i}" for i in range(8)]
    b = fake_run(root, "run_b", "ds@v2", F1_B, test_hash="sha256:two", row_ids=shared)
    d = compare_json("--runs", f"{a},{b}", "--no-data-changes")
    assert d["same_test_set"] is False
    assert d["intervals"]["run_b"]["overall"]["n"] == 4  # only the 4 rows both test sets hold
    assert d["intervals"]["run_b"]["overall"]["delta"] == pytest.approx((3.0 - 3.5) / 4)
    table = invoke("--runs", f"{a},{b}", "--no-data-changes").output
    assert "WARNING: the runs were evaluated on DIFFERENT test sets" in table
    assert "on the 4 shared test rows" in table
    assert "The runs were evaluated on different test sets" in table


def test_three_runs_deltas_against_the_first(two_runs, tmp_path):
    a, b = two_runs
    c = fake_run(tmp_path / "runs", "run_c", "ds@v2", [1.0] * 8)
    d = compare_json("--runs", f"{a},{b},{c}", "--no-data-changes")
    assert d["deltas"] == {"run_a": 0, "run_b": pytest.approx(0.3125), "run_c": pytest.approx(0.5)}
    assert any(line.startswith("run_c vs baseline-v1: Overall token_f1 improved by +50.00 points")
               for line in d["interpretation"])


def test_errors_are_one_clear_line(two_runs, tmp_path):
    a, b = two_runs
    res = invoke("--runs", f"{a},{b}", "--metric", "bleu")
    assert res.exit_code == 1
    assert "'bleu' is not in the results of baseline-v1; available in every run: exact_match, loss, token_f1" in res.stderr
    res = invoke("--runs", f"{a},{b}", "--slice-by", "difficulty")
    assert res.exit_code == 1 and "they were sliced by: source" in res.stderr
    assert invoke("--runs", str(a)).exit_code == 1
    (b / "eval" / "eval_results.json").unlink()
    res = invoke("--runs", f"{a},{b}")
    assert res.exit_code == 4 and "no evaluation results" in res.stderr and len(res.stderr.splitlines()) == 1


def test_run_ids_are_looked_up_in_the_runs_dir(two_runs):
    a, _ = two_runs
    res = invoke("--runs", "run_a,run_b", "--runs-dir", a.parent, "--format", "csv")
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("run,run_id,dataset_version,slice,")


def test_compare_imports_no_torch(two_runs):
    a, b = two_runs
    probe = ("import sys\nfrom verifily_core.cli import cli\n"
             "try:\n    cli.main(args=sys.argv[1:], prog_name='verifily')\nexcept SystemExit as e:\n    code = e.code\n"
             "heavy = ('torch', 'transformers', 'peft', 'evaluate', 'accelerate', 'datasets', 'sklearn')\n"
             "print('HEAVY=' + ','.join(m for m in heavy if m in sys.modules))\n"
             "sys.exit(code or 0)\n")
    res = subprocess.run([sys.executable, "-c", probe, "compare", "--runs", f"{a},{b}", "--slice-by", "source"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "improved" in res.stdout  # the comparison really ran
    assert res.stdout.strip().splitlines()[-1] == "HEAVY="


def test_python_api(two_runs):
    import verifily_core
    from verifily_core.comparison.result import CompareResult

    a, b = two_runs
    result = verifily_core.compare([str(a), str(b)], metric="token_f1", slice_by="source", resamples=0)
    assert isinstance(result, CompareResult) and result.runs == ["run_a", "run_b"]
    assert result.deltas["run_b"] == pytest.approx(0.3125) and result.interval("run_b")["ci_low"] is None
    assert "Comparison: token_f1" in result.to_table() and result.to_csv().count("\n") == 7


def classification_run(root: Path, run_id: str, predictions: list[str]) -> Path:
    from verifily_core.evaluation import build_eval_result, write_eval_files

    regs = load_registries()
    run = root / run_id
    run.mkdir(parents=True)
    meta = {"format_version": 1, "run_id": run_id, "name": None, "status": "completed", "task": "classification",
            "base_model": "tiny", "dataset": {"ref": None}, "started_at": "2026-01-01T00:00:00Z", "completed_at": None,
            "duration_seconds": 1.0, "metrics": {}, "artifact_path": str(run), "error": None, "hashes": {}}
    (run / "run_meta.json").write_text(json.dumps(meta))
    (run / "labels.json").write_text(json.dumps({"labels": ["neg", "pos"]}))
    (run / "config.yaml").write_text(yaml.safe_dump({"task": "classification", "base_model": "tiny"}))
    refs = ["pos"] * 4 + ["neg"] * 4
    records = [{"index": i, "row_id": f"sha256:r{i}", "prediction": p, "reference": r, "tags": {"source": SOURCES[i]}}
               for i, (p, r) in enumerate(zip(predictions, refs))]
    metrics = [regs.metrics.get(m) for m in ("macro_f1", "accuracy")]
    result = build_eval_result(records, "classification", metrics, slicers=regs.slicers, resamples=0, run_id=run_id,
                               metric_kwargs={"labels": ["neg", "pos"]}, test_data={"sha256": "sha256:t"})
    seal_run(run)
    write_eval_files(result, run / "eval", run_path=run)
    return run


def test_classification_f1_is_macro_f1_and_its_interval_recomputes_the_metric(tmp_path):
    a = classification_run(tmp_path, "run_a", ["pos", "pos", "neg", "neg"] + ["neg"] * 4)
    b = classification_run(tmp_path, "run_b", ["pos"] * 4 + ["neg"] * 4)
    d = compare_json("--runs", f"{a},{b}", "--no-data-changes")
    # A: pos F1 = 2/3 (P 1, R 1/2), neg F1 = 4/5 (P 2/3, R 1): macro 11/15; B is perfect
    assert d["metric"] == "macro_f1" and d["overall"]["run_a"] == pytest.approx(11 / 15)
    ci = d["intervals"]["run_b"]["overall"]
    assert ci["value_a"] == pytest.approx(11 / 15) and ci["delta"] == pytest.approx(4 / 15)
    # per class, B's F1 is never below A's on any resample: every resampled delta is >= 0
    assert 0 <= ci["ci_low"] <= ci["delta"] <= ci["ci_high"] <= 1
    assert ci["delta"] != pytest.approx(2 / 8)  # not the mean per-row (accuracy) difference


def test_several_slice_specs_in_one_call(tmp_path):
    more = [{"difficulty": "easy" if i % 2 else "hard", "topic": "math" if i < 4 else "words"} for i in range(8)]
    specs = ("source", "difficulty", "topic&difficulty")
    a = fake_run(tmp_path, "run_a", None, [0.25] * 8, more_tags=more, slice_by=specs)
    b = fake_run(tmp_path, "run_b", None, [0.25, 1, 0.25, 1, 0.25, 1, 0.25, 1], more_tags=more, slice_by=specs)
    d = compare_json("--runs", f"{a},{b}", "--metric", "token_f1", "--slice-by", "source,difficulty,topic&difficulty")
    assert list(d["slice_groups"]) == ["source", "difficulty", "topic&difficulty"]
    assert sorted(d["slice_groups"]["difficulty"]) == ["difficulty=easy", "difficulty=hard"]
    assert len(d["slice_groups"]["topic&difficulty"]) == 4
    assert d["slice_deltas"]["difficulty=easy"]["run_b"] == pytest.approx(0.75)  # odd rows: 0.25 -> 1
    assert d["slice_deltas"]["difficulty=hard"]["run_b"] == pytest.approx(0.0)
    table = invoke("--runs", f"{a},{b}", "--metric", "token_f1", "--slice-by", "source,difficulty,topic&difficulty")
    assert table.exit_code == 0, table.output
    blocks = [line.strip() for line in table.stdout.splitlines() if line.strip().startswith("Sliced by ")]
    assert blocks == ["Sliced by source:", "Sliced by difficulty:", "Sliced by topic&difficulty:"]
    heads = [line for line in table.stdout.splitlines() if line.strip().startswith("Run ")]
    assert len(heads) == 3 and all("Overall" in h for h in heads)
    assert "difficulty=easy" in heads[1] and "source=human" not in heads[1]


def test_a_spec_the_runs_were_not_sliced_by_gets_true_advice(two_runs):
    a, b = two_runs
    res = invoke("--runs", f"{a},{b}", "--slice-by", "source,topic")
    assert res.exit_code == 1
    assert "--slice-by topic: the runs' results have no such slices (they were sliced by: source)" in res.stderr
    assert "verifily eval --run R --slice-by topic" in res.stderr
