"""`verifily train --quantization 4bit|8bit` end to end on CPU: completed runs that keep learning
across the evaluations during training, `verifily eval` of a quantized run, and a clear exit 1
when bitsandbytes cannot run on the device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from verifily_core.cli import cli
from verifily_core.config import TrainConfig
from verifily_core.testing import make_sft_rows, write_jsonl

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, model_dir: Path) -> Path:
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", make_sft_rows(48, seed=1))
    write_jsonl(data / "val.jsonl", make_sft_rows(8, seed=2))
    write_jsonl(data / "test.jsonl", make_sft_rows(8, seed=3))
    cfg = {"task": "sft", "base_model": str(model_dir),
           "data_paths": {s: str(data / f"{s}.jsonl") for s in ("train", "val", "test")},
           "training": {"num_epochs": 3, "batch_size": 8, "gradient_accumulation_steps": 1, "learning_rate": 0.01,
                        "logging_steps": 3, "eval_steps": 4, "save_steps": 100, "max_seq_length": 64,
                        "warmup_ratio": 0.0},
           "lora": {"r": 8, "alpha": 16},
           "eval": {"enabled": False, "metrics": ["exact_match", "loss"], "max_new_tokens": 4,
                    "bootstrap_resamples": 0},
           "data_checks": {"leakage": "off"}, "output": {"dir": str(tmp_path / "runs")}}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_quantized_training_completes_and_keeps_learning_after_evaluations(tmp_path, verifily_tiny_llama_dir, bits):
    res = CliRunner().invoke(cli, ["train", "--config", str(_config(tmp_path, verifily_tiny_llama_dir)),
                                   "--quantization", bits, "--device", "cpu"])
    assert res.exit_code == 0, res.output
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "run_meta.json").read_text())["status"] == "completed"
    assert TrainConfig.from_yaml(run / "config.yaml").lora.quantization == bits
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    evals = [r["eval_loss"] for r in _log(run) if "eval_loss" in r]
    # Evaluations at steps 4, 8, 12, 16 and at the end. Had LoRA stopped receiving gradients
    # after the first one (the CPU 4-bit repacking), every later eval_loss would equal the first.
    assert len(evals) >= 4 and evals[-1] < 0.97 * evals[0], evals


def test_a_quantized_run_evaluates(tmp_path, verifily_tiny_llama_dir):
    config = _config(tmp_path, verifily_tiny_llama_dir)
    assert CliRunner().invoke(cli, ["train", "--config", str(config), "--quantization", "4bit",
                                    "training.max_steps=4"]).exit_code == 0
    (run,) = (tmp_path / "runs").iterdir()
    res = CliRunner().invoke(cli, ["eval", "--run", str(run)])
    assert res.exit_code == 0, res.output
    results = json.loads((run / "eval" / "eval_results.json").read_text())
    assert results["test_data"]["num_examples"] == 8
    assert results["overall"]["metrics"]["loss"]["value"] > 0


def test_two_4bit_runs_of_one_config_give_identical_adapters(tmp_path, verifily_tiny_llama_dir):
    from verifily_core.hashing import sha256_file

    digests = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        config = _config(tmp_path / name, verifily_tiny_llama_dir)
        assert CliRunner().invoke(cli, ["train", "--config", str(config), "--quantization", "4bit",
                                        "training.max_steps=4"]).exit_code == 0
        (run,) = (tmp_path / name / "runs").iterdir()
        digests.append(sha256_file(run / "adapter" / "adapter_model.safetensors"))
    assert digests[0] == digests[1]


def test_a_bitsandbytes_build_that_cannot_run_here_exits_1(tmp_path, verifily_tiny_llama_dir, monkeypatch):
    import bitsandbytes as bnb

    def no_kernel(*args, **kwargs):
        raise NotImplementedError("Could not run 'bitsandbytes::gemm_4bit' with arguments from the 'CPU' backend")

    monkeypatch.setattr(bnb.nn.Linear4bit, "forward", no_kernel)
    res = CliRunner().invoke(cli, ["train", "--config", str(_config(tmp_path, verifily_tiny_llama_dir)),
                                   "--quantization", "4bit"])
    assert res.exit_code == 1, res.output
    assert f"Error: $.lora.quantization: bitsandbytes {bnb.__version__} cannot run 4bit layers on cpu" in res.stderr
    assert "Traceback" not in res.output
    assert not [p for p in (tmp_path / "runs").iterdir() if "." not in p.name]  # no run taken for a completed one



def _classifier_run(tmp_path: Path, model_dir: Path):
    from verifily_core.api import train
    from verifily_core.testing import make_classification_rows

    data = tmp_path / "data"
    paths = {"train": write_jsonl(data / "train.jsonl", make_classification_rows(64, seed=1)),
             "test": write_jsonl(data / "test.jsonl", make_classification_rows(16, seed=3))}
    return train({"task": "classification", "base_model": str(model_dir),
                  "data_paths": {k: str(v) for k, v in paths.items()},
                  "training": {"num_epochs": 6, "batch_size": 16, "gradient_accumulation_steps": 1,
                               "learning_rate": 0.01, "logging_steps": 4, "save_steps": 1000, "max_seq_length": 32,
                               "warmup_ratio": 0.0},
                  "lora": {"r": 8, "alpha": 16, "quantization": "4bit"},
                  "eval": {"bootstrap_resamples": 0}, "data_checks": {"leakage": "off"},
                  "output": {"dir": str(tmp_path / "runs")}}).path


def _eval_results(run: Path) -> dict:
    return json.loads((run / "eval" / "eval_results.json").read_text())


def test_a_quantized_decoder_classifier_learns_and_evaluates(tmp_path, verifily_tiny_llama_dir):
    """The ``score`` head stays a normal layer, trained in full; evaluation reloads it onto the
    quantized backbone."""
    run = _classifier_run(tmp_path, verifily_tiny_llama_dir)
    losses = [r["loss"] for r in _log(run) if "loss" in r]
    assert losses[-1] < 0.9 * losses[0], losses
    results = _eval_results(run)
    assert results["test_data"]["num_examples"] == 16 and "accuracy" in results["overall"]["metrics"]


def test_a_quantized_encoder_classifier_keeps_its_head_and_pooler_in_full_precision(tmp_path, verifily_tiny_deberta_dir):
    from safetensors import safe_open

    run = _classifier_run(tmp_path, verifily_tiny_deberta_dir)
    with safe_open(str(run / "adapter" / "adapter_model.safetensors"), "pt") as f:
        full = {k: f.get_tensor(k) for k in f.keys() if "lora_" not in k}  # base_model.model.<module>....
    assert {k.split(".")[2] for k in full} >= {"classifier", "pooler"}, sorted(full)
    assert all(t.is_floating_point() for t in full.values())
    assert _eval_results(run)["test_data"]["num_examples"] == 16
