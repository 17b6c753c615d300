"""A step's loss is the mean over the step's target tokens however the step is split: batch 2 with
4 gradient-accumulation steps logs (and trains on) the loss of batch 8 in one, for a CausalLM and
for a Seq2Seq model (T5 ignores the Trainer's token count, so its loss is weighed outside it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from verifily_core.testing import make_sft_rows, write_jsonl
from verifily_core.testing.runs import train_run

pytestmark = pytest.mark.slow


def _without_dropout(model_dir: Path, folder: Path) -> Path:
    """A copy of ``model_dir`` whose dropout is off, so micro-batches see the same network."""
    out = folder / "model"
    shutil.copytree(model_dir, out)
    config = json.loads((out / "config.json").read_text())
    for key in ("dropout_rate", "attention_dropout", "hidden_dropout_prob", "attention_probs_dropout_prob"):
        if key in config:
            config[key] = 0.0
    (out / "config.json").write_text(json.dumps(config))
    return out


def _losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_accumulated_micro_batches_give_the_loss_of_one_batch(kind, verifily_tiny_model, tmp_path):
    model = _without_dropout(verifily_tiny_model(kind, pretrain_steps=60), tmp_path)
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", make_sft_rows(32, seed=1))
    losses = {}
    for batch, accumulation in ((8, 1), (2, 4)):
        cfg = {"task": "sft", "base_model": str(model), "data_paths": {"train": str(data / "train.jsonl")},
               "training": {"num_epochs": 1, "batch_size": batch, "gradient_accumulation_steps": accumulation,
                            "learning_rate": 0.01, "logging_steps": 1, "max_seq_length": 48, "warmup_ratio": 0.0},
               "task_options": {"packing": "off"}, "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
               "eval": {"enabled": False}, "data_checks": {"leakage": "off"},
               "output": {"dir": str(tmp_path / "runs")}}
        losses[batch] = _losses(train_run(cfg, tmp_path, f"b{batch}"))
    assert len(losses[8]) == 4
    assert losses[2] == pytest.approx(losses[8], rel=1e-5), losses
    assert losses[8][-1] < losses[8][0]
