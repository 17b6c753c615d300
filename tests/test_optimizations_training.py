"""``training.optimizations`` that run on CPU really train: each optimizer, each attention
implementation, gradient checkpointing with LoRA and with 4-bit QLoRA, bf16 autocast, and
torch.compile; run_meta.json records what the run trained with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verifily_core.testing import make_sft_rows, write_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sft_paths(tmp_path_factory) -> dict[str, str]:
    data = tmp_path_factory.mktemp("opt-data")
    return {"train": str(write_jsonl(data / "train.jsonl", make_sft_rows(48, seed=1)))}


def _train(tmp_path: Path, model_dir: Path, paths: dict[str, str], steps: int = 6, lora: dict | None = None,
           max_seq_length: int = 64, **optimizations):
    from verifily_core.api import train

    return train({
        "task": "sft", "base_model": str(model_dir), "data_paths": paths, "compute": {"device": "cpu"},
        "training": {"max_steps": steps, "batch_size": 8, "gradient_accumulation_steps": 1, "learning_rate": 0.01,
                     "logging_steps": 1, "save_steps": 1000, "max_seq_length": max_seq_length, "warmup_ratio": 0.0,
                     "optimizations": optimizations},
        "lora": {"r": 8, "alpha": 16, **(lora or {})}, "eval": {"enabled": False},
        "data_checks": {"leakage": "off"}, "output": {"dir": str(tmp_path / "runs")},
    })


def _losses(run) -> list[float]:
    rows = [json.loads(line) for line in (run.path / "train_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def _assert_learns(run) -> None:
    trace = _losses(run)
    assert len(trace) >= 4 and trace[-1] < 0.9 * trace[0], trace


@pytest.mark.parametrize("optimizer", ["adamw_torch", "adamw_torch_fused", "adamw_bnb_8bit", "paged_adamw_8bit",
                                       "paged_adamw_32bit"])
def test_each_optimizer_trains_on_cpu(tmp_path, verifily_tiny_llama_dir, sft_paths, optimizer):
    run = _train(tmp_path, verifily_tiny_llama_dir, sft_paths, optimizer_type=optimizer)
    _assert_learns(run)
    meta = json.loads((run.path / "run_meta.json").read_text())
    assert meta["optimizations"]["optimizer_type"] == optimizer
    if optimizer.startswith(("adamw_bnb", "paged")):
        assert "bitsandbytes" in json.loads((run.path / "environment.json").read_text())["hashed"]["packages"]


def test_the_default_optimizer_is_recorded_as_the_one_the_trainer_chose(tmp_path, verifily_tiny_llama_dir, sft_paths):
    run = _train(tmp_path, verifily_tiny_llama_dir, sft_paths, steps=2)
    recorded = json.loads((run.path / "run_meta.json").read_text())["optimizations"]
    assert recorded["optimizer_type"] in ("adamw_torch", "adamw_torch_fused")
    assert recorded["precision"] == "fp32" and recorded["gradient_checkpointing"] is False
    assert recorded["attention_implementation"] == "sdpa"  # the tiny Llama's default


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_each_attention_implementation_trains(tmp_path, verifily_tiny_llama_dir, sft_paths, attention):
    run = _train(tmp_path, verifily_tiny_llama_dir, sft_paths, attention_implementation=attention)
    _assert_learns(run)
    assert json.loads((run.path / "run_meta.json").read_text())["optimizations"]["attention_implementation"] == attention


def test_eager_and_sdpa_attention_train_the_same_model(tmp_path, verifily_tiny_llama_dir, sft_paths):
    eager = _losses(_train(tmp_path / "e", verifily_tiny_llama_dir, sft_paths, steps=3, attention_implementation="eager"))
    sdpa = _losses(_train(tmp_path / "s", verifily_tiny_llama_dir, sft_paths, steps=3, attention_implementation="sdpa"))
    assert eager == pytest.approx(sdpa, rel=1e-4)


def test_gradient_checkpointing_with_lora_gives_the_losses_of_training_without(tmp_path, verifily_tiny_llama_dir,
                                                                              sft_paths):
    """Non-reentrant checkpointing recomputes the same activations (dropout included): the same losses."""
    plain = _train(tmp_path / "a", verifily_tiny_llama_dir, sft_paths, steps=4)
    checkpointed = _train(tmp_path / "b", verifily_tiny_llama_dir, sft_paths, steps=4, gradient_checkpointing=True)
    _assert_learns(checkpointed)
    assert _losses(checkpointed) == pytest.approx(_losses(plain), rel=1e-4)
    assert json.loads((checkpointed.path / "run_meta.json").read_text())["optimizations"]["gradient_checkpointing"]
    assert checkpointed.config_hash == plain.config_hash  # it cannot change results


def test_gradient_checkpointing_with_4bit_qlora_trains(tmp_path, verifily_tiny_llama_dir, sft_paths):
    run = _train(tmp_path, verifily_tiny_llama_dir, sft_paths, lora={"quantization": "4bit"},
                 gradient_checkpointing=True)
    _assert_learns(run)
    assert json.loads((run.path / "run_meta.json").read_text())["optimizations"]["gradient_checkpointing"] is True


def test_bf16_autocast_trains_on_cpu(tmp_path, verifily_tiny_llama_dir, sft_paths):
    run = _train(tmp_path, verifily_tiny_llama_dir, sft_paths, use_amp=True, amp_dtype="bf16")
    _assert_learns(run)
    assert json.loads((run.path / "run_meta.json").read_text())["optimizations"]["precision"] == "bf16"


def test_torch_compile_trains_on_cpu(tmp_path, verifily_tiny_llama_dir, sft_paths, monkeypatch):
    """The compiled model learns (the first step compiles: about half a minute on a small CPU; rows cut to
    16 tokens give every batch one shape, so nothing recompiles)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    run = _train(tmp_path, verifily_tiny_llama_dir, sft_paths, steps=4, max_seq_length=16, use_compile=True)
    _assert_learns(run)
    assert json.loads((run.path / "run_meta.json").read_text())["optimizations"]["compile"] == "default"
