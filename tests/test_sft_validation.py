"""SFT validation metrics during training: token and sequence accuracy from the teacher-forced
pass of the val loss, logged at every evaluation, equal to what `verifily eval` computes on the
same rows with the final model."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from verifily_core.cli import cli
from verifily_core.testing import make_sft_rows, write_jsonl

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("model", ["llama", "t5"])
def test_validation_accuracy_is_logged_and_equals_eval_on_the_val_rows(tmp_path, model, request):
    base = request.getfixturevalue(f"verifily_tiny_{model}_dir")
    write_jsonl(tmp_path / "train.jsonl", make_sft_rows(24, seed=1))
    write_jsonl(tmp_path / "val.jsonl", make_sft_rows(10, seed=2))
    cfg = {"task": "sft", "base_model": str(base),
           "data_paths": {"train": str(tmp_path / "train.jsonl"), "val": str(tmp_path / "val.jsonl")},
           "data_checks": {"leakage": "off"},
           "training": {"max_steps": 6, "batch_size": 8, "gradient_accumulation_steps": 1, "max_seq_length": 48,
                        "learning_rate": 0.01, "eval_steps": 3, "save_steps": 3},
           "lora": {"r": 4, "alpha": 8}, "eval": {"enabled": False}, "output": {"dir": str(tmp_path / "runs")}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(cli, ["train", "--config", str(tmp_path / "c.yaml")])
    assert res.exit_code == 0, res.output
    run = next((tmp_path / "runs").iterdir())
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    evals = [e for e in log if "eval_loss" in e]
    assert [e["step"] for e in evals] == [3, 6]
    assert all(0 <= e["eval_token_accuracy"] <= 1 and 0 <= e["eval_sequence_accuracy"] <= 1 for e in evals)
    meta = json.loads((run / "run_meta.json").read_text())["metrics"]
    assert meta["eval_token_accuracy"] == evals[-1]["eval_token_accuracy"]

    out = tmp_path / "on-val"
    res = CliRunner().invoke(cli, ["eval", "--run", str(run), "--test-data", str(tmp_path / "val.jsonl"),
                                   "--metrics", "token_accuracy,sequence_accuracy,loss", "--output", str(out)])
    assert res.exit_code == 0, res.output
    overall = json.loads((out / "eval_results.json").read_text())["overall"]["metrics"]
    assert overall["token_accuracy"]["value"] == pytest.approx(meta["eval_token_accuracy"], abs=1e-9)
    assert overall["sequence_accuracy"]["value"] == pytest.approx(meta["eval_sequence_accuracy"], abs=1e-9)
    assert overall["loss"]["value"] == pytest.approx(meta["eval_loss"], rel=1e-4)
