"""End-to-end streamed training (training.streaming) on tiny offline models: it learns, it equals the
in-memory path on the same order, it is deterministic, it resumes at the right row, and it never
reads the train split into memory."""

from __future__ import annotations

import json

import pytest
import yaml

from test_train_local import losses, make_config, only_run, stall_then_kill, train, train_reference
from verifily_core.datasets.manifest import DatasetVersion
from verifily_core.testing import make_classification_rows, write_jsonl

pytestmark = pytest.mark.slow

STREAM = {"streaming": True, "max_steps": 18, "num_epochs": 1}


@pytest.fixture
def no_train_list(monkeypatch):
    """Training must never hold the train split as a list."""
    original = DatasetVersion.read_rows

    def read_rows(self, split):
        assert split != "train", "the train split was read into memory"
        return original(self, split)

    monkeypatch.setattr(DatasetVersion, "read_rows", read_rows)


def test_a_streamed_run_learns_without_reading_the_split_into_memory_and_is_deterministic(
        tmp_path, verifily_tiny_llama_dir, no_train_list):
    config = make_config(tmp_path, verifily_tiny_llama_dir, shuffle_buffer=16, **STREAM)
    runs = []
    for attempt in range(2):
        res = train(config)
        assert res.exit_code == 0, res.output + res.stderr
        runs.append(only_run(tmp_path))
        (tmp_path / "runs").rename(tmp_path / f"runs{attempt}")
        runs[-1] = tmp_path / f"runs{attempt}" / runs[-1].name
    first, second = (losses(r) for r in runs)
    assert first[-1] < 0.9 * first[0], first
    assert first == second  # the same seed gives the same order, hence the same losses
    meta = json.loads((runs[0] / "run_meta.json").read_text())
    assert meta["metrics"]["train_rows"] == 18 * 8  # steps x batch size x accumulation
    assert yaml.safe_load((runs[0] / "config.yaml").read_text())["training"]["streaming"] is True


def test_streamed_in_file_order_gives_the_in_memory_losses_on_the_same_order(tmp_path, verifily_tiny_llama_dir,
                                                                               monkeypatch):
    """With ``shuffle_buffer: 0`` the stream is the file's order; the in-memory path, given a
    sequential sampler, trains on the same batches: the per-step losses agree."""
    from torch.utils.data import SequentialSampler
    from transformers import Trainer

    steps = {"max_steps": 6, "num_epochs": 1, "logging_steps": 1}  # 6 x 8 = the 48 rows once
    streamed_cfg = make_config(tmp_path, verifily_tiny_llama_dir, streaming=True, shuffle_buffer=0, **steps)
    res = train(streamed_cfg)
    assert res.exit_code == 0, res.output + res.stderr
    streamed = losses(only_run(tmp_path))
    (tmp_path / "runs").rename(tmp_path / "streamed_runs")

    monkeypatch.setattr(Trainer, "_get_train_sampler", lambda self, dataset=None: SequentialSampler(
        dataset if dataset is not None else self.train_dataset))
    res = train(make_config(tmp_path, verifily_tiny_llama_dir, **steps))
    assert res.exit_code == 0, res.output + res.stderr
    in_memory = losses(only_run(tmp_path))
    assert len(streamed) == len(in_memory) == 6
    assert streamed == pytest.approx(in_memory, abs=1e-6)


def test_a_killed_streamed_run_resumes_at_the_checkpoint_row_to_the_same_result(tmp_path, verifily_tiny_llama_dir):
    config = make_config(tmp_path, verifily_tiny_llama_dir, streaming=True, shuffle_buffer=16, max_steps=10,
                         save_steps=4, logging_steps=2)
    reference, reference_log = train_reference(tmp_path, config)

    run_dir = stall_then_kill(tmp_path, config, 7)
    state = json.loads((run_dir / "checkpoints" / "checkpoint-4" / "verifily_stream.json").read_text())
    assert state["rows_consumed"] == 4 * 8 and state["world_size"] == 1
    manifest = json.loads((run_dir / "checkpoints" / "checkpoint-4" / "verifily_checkpoint.json").read_text())
    assert "verifily_stream.json" in manifest["files"]  # damage to it is caught like any checkpoint file

    res = train(config, "--resume", str(run_dir))
    assert res.exit_code == 0, res.output + res.stderr
    resumed = json.loads((only_run(tmp_path) / "run_meta.json").read_text())["metrics"]
    assert resumed["eval_loss"] == pytest.approx(reference["eval_loss"], abs=1e-6)
    assert resumed["train_loss"] == pytest.approx(reference["train_loss"], abs=1e-6)
    assert resumed["train_steps"] == reference["train_steps"] == 10
    assert resumed["train_rows"] == reference["train_rows"] == 80


def test_a_streamed_classifier_learns_its_labels_from_a_streaming_pass(tmp_path, verifily_tiny_bert_dir,
                                                                        no_train_list):
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", make_classification_rows(64, seed=1))
    write_jsonl(data / "val.jsonl", make_classification_rows(8, seed=2))
    cfg = {
        "task": "classification", "base_model": str(verifily_tiny_bert_dir),
        "data_paths": {s: str(data / f"{s}.jsonl") for s in ("train", "val")},
        "task_options": {"class_weights": "auto"},
        "training": {"streaming": True, "shuffle_buffer": 32, "max_steps": 16, "batch_size": 8,
                     "gradient_accumulation_steps": 1, "learning_rate": 0.005, "logging_steps": 4,
                     "eval_steps": 100, "max_seq_length": 64, "warmup_ratio": 0.0},
        "lora": {"r": 8, "alpha": 16}, "eval": {"enabled": False}, "data_checks": {"leakage": "off"},
        "output": {"dir": str(tmp_path / "runs")},
    }
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(cfg))
    res = train(config)
    assert res.exit_code == 0, res.output + res.stderr
    run = only_run(tmp_path)
    trace = losses(run)
    assert trace[-1] < trace[0], trace
    labels = json.loads((run / "labels.json").read_text())
    assert sorted(map(str, labels["labels"])) == sorted({str(r["label"]) for r in make_classification_rows(64, seed=1)})


def test_a_row_that_cannot_be_prepared_is_named_by_its_file_line_while_streaming(tmp_path, verifily_tiny_bert_dir):
    """Rows are prepared a chunk at a time as they stream; a row the task refuses is named by its
    line in the split's file, not by its place in the chunk."""
    data = tmp_path / "data"
    rows = [dict(r, text_pair="short") for r in make_classification_rows(16, seed=1)]
    rows[6]["text_pair"] = " ".join(["good"] * 40)  # line 7: alone longer than max_seq_length
    write_jsonl(data / "train.jsonl", rows)
    cfg = {"task": "classification", "base_model": str(verifily_tiny_bert_dir),
           "data_paths": {"train": str(data / "train.jsonl")}, "task_options": {"truncation": "only_first"},
           "training": {"streaming": True, "shuffle_buffer": 0, "max_steps": 4, "batch_size": 4,
                        "gradient_accumulation_steps": 1, "max_seq_length": 16},
           "lora": {"r": 4, "alpha": 8}, "eval": {"enabled": False}, "data_checks": {"leakage": "off"},
           "output": {"dir": str(tmp_path / "runs")}}
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(cfg))
    res = train(config)
    assert res.exit_code == 2, res.output + res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"Error: {data / 'train.jsonl'}:7: with task_options.truncation only_first the text_pair alone is longer "
        "than training.max_seq_length (16 tokens)"), res.stderr


def test_streaming_without_max_steps_is_a_config_error(tmp_path, verifily_tiny_llama_dir):
    res = train(make_config(tmp_path, verifily_tiny_llama_dir, streaming=True), "--dry-run")
    assert res.exit_code == 1
    assert "$.training.max_steps: training.streaming needs max_steps" in res.stderr
    assert "Traceback" not in res.output + res.stderr
