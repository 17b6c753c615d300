"""`verifily eval` end to end on a tiny trained run: files, slices, gold set, a pip-installed metric."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from verifily_core.cli import cli
from verifily_core.testing import make_sft_rows, write_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, verifily_tiny_llama_dir):
    root = tmp_path_factory.mktemp("evalrun")
    data = root / "data"
    write_jsonl(data / "train.jsonl", make_sft_rows(32, seed=1))
    write_jsonl(data / "test.jsonl", make_sft_rows(24, seed=3))
    write_jsonl(data / "gold.jsonl", make_sft_rows(6, seed=4))
    cfg = {"task": "sft", "base_model": str(verifily_tiny_llama_dir),
           "data_paths": {"train": str(data / "train.jsonl"), "test": str(data / "test.jsonl")},
           "training": {"max_steps": 3, "batch_size": 8, "gradient_accumulation_steps": 1, "max_seq_length": 48},
           "lora": {"r": 4, "alpha": 8},
           "eval": {"enabled": False, "slice_by_tags": ["source"], "gold_set": str(data / "gold.jsonl"),
                    "max_new_tokens": 4, "bootstrap_resamples": 200, "min_slice_size": 5, "hard_examples": 5,
                    "metrics": ["exact_match", "token_f1", "loss", "perplexity", "gold_exact_match"]},
           "data_checks": {"leakage": "off"}, "output": {"dir": str(root / "runs")}}
    (root / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(cli, ["train", "--config", str(root / "c.yaml")])
    assert res.exit_code == 0, res.output
    return next((root / "runs").iterdir())


def test_eval_writes_the_contract_files(run_dir):
    res = CliRunner().invoke(cli, ["eval", "--run", str(run_dir)])
    assert res.exit_code == 0, res.output
    assert "Sliced by [source]" in res.stdout and "correlation, not causation" in res.stdout
    results = json.loads((run_dir / "eval" / "eval_results.json").read_text())
    assert results["format_version"] == 1 and results["test_data"]["num_examples"] == 24
    assert results["test_data"]["sha256"].startswith("sha256:")
    assert set(results["overall"]["metrics"]) >= {"exact_match", "token_f1", "loss", "perplexity", "gold_exact_match"}
    assert set(results["slices"]) == {"source=human", "source=synthetic", "source=ai_contaminated"}
    assert sum(s["n"] for s in results["slices"].values()) == 24
    preds = [json.loads(line) for line in (run_dir / "eval" / "predictions.jsonl").read_text().splitlines()]
    test_preds = [p for p in preds if p.get("split") != "gold"]
    assert len(test_preds) == 24 and len(preds) == 30
    hard = [json.loads(line) for line in (run_dir / "eval" / "hard_examples.jsonl").read_text().splitlines()]
    assert len(hard) == 5
    worst = sorted(p["scores"]["token_f1"] for p in test_preds)[:5]
    assert sorted(h["score"] for h in hard) == worst


def test_hard_by_chooses_the_ranking_score(run_dir, tmp_path):
    out = tmp_path / "by-loss"
    res = CliRunner().invoke(cli, ["eval", "--run", str(run_dir), "--hard-by", "loss", "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert "highest loss first" in res.stdout
    results = json.loads((out / "eval_results.json").read_text())
    assert results["hard_examples"]["score"] == "loss"
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    hard = [json.loads(line) for line in (out / "hard_examples.jsonl").read_text().splitlines()]
    worst = sorted((p["scores"]["loss"] for p in preds if p.get("split") != "gold"), reverse=True)[:5]
    assert [h["score"] for h in hard] == worst
    res = CliRunner().invoke(cli, ["eval", "--run", str(run_dir), "--hard-by", "nope", "--output", str(out)])
    assert res.exit_code == 1 and "no row has the score 'nope'" in res.stderr


@pytest.mark.parametrize("metric, skipped", [("loss", "generate"), ("exact_match", "reference_losses")])
def test_the_model_does_only_the_work_the_metrics_read(run_dir, tmp_path, monkeypatch, metric, skipped):
    import verifily_sft.predict

    def refuse(*args, **kwargs):
        raise AssertionError(f"{skipped} was called")

    monkeypatch.setattr(verifily_sft.predict, skipped, refuse)
    out = tmp_path / metric
    res = CliRunner().invoke(cli, ["eval", "--run", str(run_dir), "--metrics", metric, "--output", str(out)])
    assert res.exit_code == 0, res.output
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    if metric == "loss":
        assert all(p["prediction"] is None and p["scores"]["loss"] > 0 for p in preds)
    else:
        assert all(isinstance(p["prediction"], str) and "loss" not in p["scores"] for p in preds)


def test_gold_rows_count_for_gold_metrics_only(run_dir):
    results = json.loads((run_dir / "eval" / "eval_results.json").read_text())
    preds = [json.loads(line) for line in (run_dir / "eval" / "predictions.jsonl").read_text().splitlines()]
    gold = [p for p in preds if p.get("split") == "gold"]
    expected = sum(p["prediction"].strip().lower() == p["reference"].strip().lower() for p in gold) / len(gold)
    assert results["overall"]["metrics"]["gold_exact_match"]["value"] == pytest.approx(expected)
    assert results["overall"]["n"] == 24


def test_pip_installed_metric_and_slicer_are_used_by_eval(run_dir, tmp_path, installed_example):
    env = installed_example
    out = tmp_path / "eval_out"
    res = subprocess.run([sys.executable, "-c", "from verifily_core.cli import main; main()", "eval", "--run",
                          str(run_dir), "--metrics", "token_f1,response_length", "--slice-by", "source,first_letter:source",
                          "--output", str(out)], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    results = json.loads((out / "eval_results.json").read_text())
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    preds = [p for p in preds if p.get("split") != "gold"]  # gold rows count for gold metrics only
    mean_len = sum(len(p["prediction"]) for p in preds) / len(preds)
    assert results["overall"]["metrics"]["response_length"]["value"] == pytest.approx(mean_len)
    human = [p for p in preds if p["tags"]["source"] == "human"]
    assert results["slices"]["source=human"]["metrics"]["response_length"]["value"] == pytest.approx(
        sum(len(p["prediction"]) for p in human) / len(human))
    # The plugin's slicer: source^=h holds exactly the human rows (no other source starts with h).
    by_letter = results["slices"]["source^=h"]
    assert by_letter["n"] == len(human) and by_letter["spec"] == "first_letter:source"
    assert by_letter["metrics"]["response_length"] == results["slices"]["source=human"]["metrics"]["response_length"]


def test_unknown_metric_and_bad_test_data(run_dir, tmp_path):
    res = CliRunner().invoke(cli, ["eval", "--run", str(run_dir), "--metrics", "bleuu", "--output", str(tmp_path)])
    assert res.exit_code == 1 and "unknown metric 'bleuu'" in res.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x"}\n')
    res = CliRunner().invoke(cli, ["eval", "--run", str(run_dir), "--test-data", str(bad), "--output", str(tmp_path)])
    assert res.exit_code == 2 and f"{bad}:1: missing required field 'output'" in res.stderr


@pytest.mark.parametrize("heading, name", [
    ("run_meta.json", "run_meta.json"), ("hashes.json", "hashes.json"),
    ("eval/eval_results.json", "eval/eval_results.json"),
    ("eval/predictions.jsonl and eval/hard_examples.jsonl", "eval/predictions.jsonl"),
])
def test_documented_run_files_have_the_keys_of_a_real_run(run_dir, documented_json, heading, name):
    """docs/run-directory.md is the contract other tools read: its examples list exactly the real keys."""
    documented = documented_json("run-directory.md", heading)
    text = (run_dir / name).read_text()
    real = json.loads(text.splitlines()[0] if name.endswith(".jsonl") else text)
    assert set(documented) == set(real), f"docs/run-directory.md '{heading}' differs from {name}"
    if name == "eval/eval_results.json":
        assert set(documented["overall"]) == set(real["overall"])
        one = next(iter(real["slices"].values()))
        assert set(next(iter(documented["slices"].values()))) == set(one)
        assert set(documented["hard_examples"]) == set(real["hard_examples"])


def test_the_run_records_its_loader_and_eval_rebuilds_the_model_with_it(run_dir, tmp_path):
    import shutil
    import stat

    meta = json.loads((run_dir / "run_meta.json").read_text())
    assert meta["model"] == {"loader": "causal_lm", "kind": "causal_lm", "auto_class": "AutoModelForCausalLM"}
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    for p in [copy, *copy.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)
    meta["model"]["loader"] = "seq2seq"  # the config still says model.loader: auto
    (copy / "run_meta.json").write_text(json.dumps(meta))
    res = CliRunner().invoke(cli, ["eval", "--run", str(copy), "--no-verify"])  # the edit is the point here
    assert res.exit_code == 1 and "cannot be loaded as AutoModelForSeq2SeqLM" in res.stderr, res.stderr
    meta["model"]["loader"] = "no_such_loader"
    (copy / "run_meta.json").write_text(json.dumps(meta))
    res = CliRunner().invoke(cli, ["eval", "--run", str(copy), "--no-verify"])
    assert res.exit_code == 1 and "unknown model loader 'no_such_loader'" in res.stderr
