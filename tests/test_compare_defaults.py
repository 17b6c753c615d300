"""The documented flow with default settings: two SFT runs trained and evaluated with the
defaults can be compared with `verifily compare`'s defaults (its `f1` is the runs' token_f1)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from verifily_core.cli import cli
from verifily_core.testing import make_sft_rows, train_run, write_jsonl

pytestmark = pytest.mark.slow


def test_two_default_sft_runs_compare_with_default_options(tmp_path, verifily_tiny_llama_dir):
    write_jsonl(tmp_path / "train.jsonl", make_sft_rows(16, seed=1))
    write_jsonl(tmp_path / "test.jsonl", make_sft_rows(6, seed=3))
    runs = []
    for seed in (1, 2):
        cfg = {"task": "sft", "base_model": str(verifily_tiny_llama_dir), "seed": seed,
               "data_paths": {"train": str(tmp_path / "train.jsonl"), "test": str(tmp_path / "test.jsonl")},
               "training": {"max_steps": 2, "batch_size": 8, "max_seq_length": 48},
               "eval": {"max_new_tokens": 4}, "data_checks": {"leakage": "off"},
               "output": {"dir": str(tmp_path / "runs"), "name": f"s{seed}"}}
        runs.append(train_run(cfg, tmp_path, f"c{seed}"))
    metrics = json.loads((runs[0] / "eval" / "eval_results.json").read_text())["metrics"]
    assert metrics == ["exact_match", "token_f1", "loss", "perplexity"]  # the sft defaults
    res = CliRunner().invoke(cli, ["compare", "--runs", f"{runs[0]},{runs[1]}", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["metric"] == "token_f1"
