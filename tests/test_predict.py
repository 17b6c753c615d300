"""`verifily generate` / `verifily predict`: the run's model on a prompt or rows, rendered and
predicted as evaluation does, so the outputs equal eval's predictions for the same rows."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from verifily_core.cli import cli
from verifily_core.testing import make_classification_rows, make_sft_rows, write_jsonl

pytestmark = pytest.mark.slow


def _train(tmp_path, cfg):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(cli, ["train", "--config", str(tmp_path / "c.yaml")])
    assert res.exit_code == 0, res.output
    return next((tmp_path / "runs").iterdir())


def _eval_predictions(run):
    return [json.loads(line) for line in (run / "eval" / "predictions.jsonl").read_text().splitlines()]


def test_generate_and_predict_equal_eval_for_an_sft_run(tmp_path, verifily_tiny_llama_dir):
    test_rows = make_sft_rows(6, seed=3)
    write_jsonl(tmp_path / "train.jsonl", make_sft_rows(16, seed=1))
    test = write_jsonl(tmp_path / "test.jsonl", test_rows)
    run = _train(tmp_path, {
        "task": "sft", "base_model": str(verifily_tiny_llama_dir),
        "data_paths": {"train": str(tmp_path / "train.jsonl"), "test": str(test)}, "data_checks": {"leakage": "off"},
        "training": {"max_steps": 3, "batch_size": 8, "max_seq_length": 48, "learning_rate": 0.01},
        "eval": {"metrics": ["exact_match"], "max_new_tokens": 5}, "output": {"dir": str(tmp_path / "runs")}})
    expected = [p["prediction"] for p in _eval_predictions(run)]
    res = CliRunner().invoke(cli, ["predict", "--run", str(run), "--input", str(test), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert [r["prediction"] for r in json.loads(res.stdout)] == expected
    first = test_rows[0]
    args = ["generate", "--run", str(run), "--prompt", first["instruction"]]
    res = CliRunner().invoke(cli, args + (["--context", first["input"]] if first.get("input") else []))
    assert res.exit_code == 0, res.output
    assert res.stdout.rstrip("\n") == expected[0]
    piped = [r for r in test_rows if r["input"] == first["input"]]  # instructions piped in, one per line
    res = CliRunner().invoke(cli, ["generate", "--run", str(run), "--context", first["input"], "--format", "json"],
                             input="".join(r["instruction"] + "\n" for r in piped))
    assert res.exit_code == 0, res.output
    assert [r["prediction"] for r in json.loads(res.stdout)] == [expected[test_rows.index(r)] for r in piped]
    res = CliRunner().invoke(cli, ["predict", "--run", str(run), "--set", "input=apple"])
    assert res.exit_code == 2 and "row 1: missing required field 'instruction'" in res.output


def test_predict_prints_the_label_and_its_probability_for_a_classification_run(tmp_path, verifily_tiny_bert_dir):
    write_jsonl(tmp_path / "train.jsonl", make_classification_rows(32, seed=1))
    test = write_jsonl(tmp_path / "test.jsonl", make_classification_rows(8, seed=2))
    run = _train(tmp_path, {
        "task": "classification", "base_model": str(verifily_tiny_bert_dir),
        "data_paths": {"train": str(tmp_path / "train.jsonl"), "test": str(test)}, "data_checks": {"leakage": "off"},
        "training": {"max_steps": 4, "batch_size": 8, "max_seq_length": 32, "learning_rate": 0.01},
        "eval": {"metrics": ["accuracy"]}, "output": {"dir": str(tmp_path / "runs")}})
    expected = _eval_predictions(run)
    res = CliRunner().invoke(cli, ["predict", "--run", str(run), "--input", str(test), "--format", "json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert [g["prediction"] for g in got] == [e["prediction"] for e in expected]
    assert [g["scores"]["p_pred"] for g in got] == pytest.approx([e["scores"]["p_pred"] for e in expected], abs=1e-6)
    res = CliRunner().invoke(cli, ["predict", "--run", str(run), "--set", "text=the movie was great"])
    assert res.exit_code == 0, res.output
    label, prob = res.stdout.split()
    assert label in ("neg", "pos") and prob.startswith("p_pred=") and 0 <= float(prob[7:]) <= 1
