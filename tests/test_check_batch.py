"""``verifily train --dry-run --check-batch``: token lengths, the largest batch run as training runs
it, peak memory against a limit, time estimates; exit 1 with advice when it would not fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from verifily_core.testing import make_classification_rows, make_sft_rows, write_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sft_config(tmp_path_factory, verifily_tiny_llama_dir) -> Path:
    root = tmp_path_factory.mktemp("check-batch")
    paths = {"train": str(write_jsonl(root / "train.jsonl", make_sft_rows(40, seed=1))),
             "val": str(write_jsonl(root / "val.jsonl", make_sft_rows(8, seed=5)))}
    cfg = {"task": "sft", "base_model": str(verifily_tiny_llama_dir), "data_paths": paths, "compute": {"device": "cpu"},
           "training": {"batch_size": 4, "gradient_accumulation_steps": 2, "max_seq_length": 20, "num_epochs": 2},
           "data_checks": {"leakage": "off"}, "output": {"dir": str(root / "runs")}}
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_batch_that_fits_passes_and_reports_lengths_memory_and_time(verifily_subprocess, sft_config):
    # a fresh process, as a user's command is: in a process that already grew its heap (a whole
    # test session), a small batch may reuse freed pages and the resident set need not grow
    res = verifily_subprocess("train", "--config", sft_config, "--dry-run", "--check-batch", "--format", "json")
    assert res.returncode == 0, res.stdout + res.stderr
    check = json.loads(res.stdout)["batch_check"]
    assert check["checked"] and check["fits"] and check["device"] == "cpu"
    train = check["splits"]["train"]
    assert train["rows"] == 40 and train["p50"] <= train["p90"] <= train["p99"] <= train["max"] == 20
    assert train["truncated"] > 0  # rows are cut to training.max_seq_length=20
    assert 0 <= train["padding_waste"] < 1 and check["splits"]["val"]["rows"] == 8
    assert check["largest_batch"] == {"rows": 4, "tokens": 20}
    assert 0 < check["peak_memory"] < check["memory_limit"]
    assert check["total_steps"] == 10  # ceil(ceil(40 / 4) / 2) * 2 epochs
    assert check["seconds_per_step"] > 0 and check["estimated_seconds"] >= 0
    assert not (Path(sft_config).parent / "runs").exists()  # nothing written


def test_the_table_prints_the_numbers(verifily_cli, sft_config):
    res = verifily_cli("train", "--config", sft_config, "--dry-run", "--check-batch")
    assert res.exit_code == 0, res.output
    assert "Batch check" in res.stdout and "p50" in res.stdout and "padding waste" in res.stdout
    assert "Largest batch: 4 rows x 20 tokens on cpu: peak" in res.stdout and ": fits" in res.stdout
    assert "per optimizer step" in res.stdout


def test_a_tiny_memory_limit_exits_1_with_advice(verifily_cli, sft_config):
    res = verifily_cli("train", "--config", sft_config, "--dry-run", "--check-batch",
                       env={"VERIFILY_MEMORY_LIMIT": "50KB"})
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    line = lines[0]
    assert line.startswith("Error: the largest batch (4 rows x 20 tokens) needs ") and "over the memory limit" in line
    for advice in ("training.batch_size=2 training.gradient_accumulation_steps=4",
                   "training.optimizations.gradient_checkpointing=true",
                   "training.optimizations.optimizer_type=adamw_bnb_8bit", "lora.quantization=4bit"):
        assert advice in line, line


def test_the_batch_check_loads_the_configured_quantization(verifily_cli, sft_config):
    res = verifily_cli("train", "--config", sft_config, "--dry-run", "--check-batch", "--quantization", "4bit",
                       "--format", "json", "training.optimizations.gradient_checkpointing=true")
    assert res.exit_code == 0, res.output
    check = json.loads(res.stdout)["batch_check"]
    assert check["fits"] and check["gradient_checkpointing"] is True


def test_a_classification_batch_is_checked(tmp_path, verifily_cli, verifily_tiny_bert_dir):
    paths = {"train": str(write_jsonl(tmp_path / "train.jsonl", make_classification_rows(24, seed=1)))}
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump({"task": "classification", "base_model": str(verifily_tiny_bert_dir),
                                   "data_paths": paths, "compute": {"device": "cpu"},
                                   "training": {"batch_size": 8, "max_seq_length": 32},
                                   "output": {"dir": str(tmp_path / "runs")}}))
    res = verifily_cli("train", "--config", cfg, "--dry-run", "--check-batch", "--format", "json")
    assert res.exit_code == 0, res.output
    check = json.loads(res.stdout)["batch_check"]
    assert check["fits"] and check["largest_batch"]["rows"] == 8 and check["splits"]["train"]["rows"] == 24


@pytest.mark.parametrize("args, part", [
    (["--check-batch"], "--check-batch applies only with --dry-run"),
    (["--dry-run", "--check-batch", "--no-data-check"], "--check-batch applies only with --dry-run"),
    (["--dry-run", "--check-batch", "--memory-limit", "lots"], "--memory-limit: expected a size"),
])
def test_misuse_is_one_line_exit_1(verifily_cli, sft_config, args, part):
    res = verifily_cli("train", "--config", sft_config, *args)
    assert res.exit_code == 1 and part in res.stderr, res.output


def _long_rows(n: int) -> list[dict]:
    words = "river stone cloud field light water tree hill road wind".split()
    return [{"instruction": "Repeat the words.", "input": " ".join(words[(i + j) % 10] for j in range(400)),
             "output": " ".join(words[(i + j) % 10] for j in range(200))} for i in range(n)]


def _deeper(model_dir: Path, out: Path, layers: int) -> Path:
    """The tiny Llama with ``layers`` layers (fresh weights), its tokenizer files copied."""
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    config.num_hidden_layers = layers
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    for f in model_dir.iterdir():
        if f.name.startswith("tokenizer") or f.name.endswith((".json", ".txt")) and not (out / f.name).exists():
            shutil.copy(f, out / f.name)
    return out


def test_gradient_checkpointing_lowers_the_peak_memory_of_long_sequences(tmp_path, verifily_tiny_llama_dir,
                                                                         verifily_subprocess):
    """Eager attention on 512-token rows through 8 layers: without checkpointing every layer keeps
    its attention probabilities and activations for the backward pass, with it one layer at a
    time does (a 2-layer model saves too little against the process's fixed costs to measure
    reliably). Each check runs in a fresh process (a process keeps memory it freed, which would
    hide a later check's growth)."""
    paths = {"train": str(write_jsonl(tmp_path / "train.jsonl", _long_rows(8)))}
    model = _deeper(verifily_tiny_llama_dir, tmp_path / "deep-llama", 8)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump({
        "task": "sft", "base_model": str(model), "data_paths": paths, "compute": {"device": "cpu"},
        "data_checks": {"leakage": "off"}, "output": {"dir": str(tmp_path / "runs")},
        "training": {"batch_size": 8, "max_seq_length": 512, "optimizations": {"attention_implementation": "eager"}}}))

    def peak(checkpointing: bool) -> int:
        res = verifily_subprocess("train", "--config", cfg, "--dry-run", "--check-batch", "--format", "json",
                                  f"training.optimizations.gradient_checkpointing={str(checkpointing).lower()}")
        assert res.returncode == 0, res.stderr
        check = json.loads(res.stdout)["batch_check"]
        assert check["largest_batch"] == {"rows": 8, "tokens": 512} and check["gradient_checkpointing"] is checkpointing
        return check["peak_memory"]

    with_checkpointing, without = peak(True), peak(False)
    print(f"peak memory with / without checkpointing: {with_checkpointing} / {without}")
    assert with_checkpointing < 0.75 * without, (with_checkpointing, without)
