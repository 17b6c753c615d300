"""End-to-end local training on tiny offline models: learning, run directory, hashes, failures, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from verifily_core import hookimpl
from verifily_core.cli import cli
from verifily_core.hashing import reproducibility_hash, sha256_file
from verifily_core.testing import make_sft_rows, write_jsonl

pytestmark = pytest.mark.slow


def make_config(tmp_path: Path, model_dir: Path, **training) -> Path:
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", make_sft_rows(48, seed=1))
    write_jsonl(data / "val.jsonl", make_sft_rows(8, seed=2))
    write_jsonl(data / "test.jsonl", make_sft_rows(8, seed=3))
    cfg = {
        "task": "sft",
        "base_model": str(model_dir),
        "data_paths": {s: str(data / f"{s}.jsonl") for s in ("train", "val", "test")},
        "training": {"num_epochs": 3, "batch_size": 8, "gradient_accumulation_steps": 1, "learning_rate": 0.01,
                     "logging_steps": 3, "save_steps": 6, "eval_steps": 100, "max_seq_length": 64,
                     "warmup_ratio": 0.0, **training},
        "lora": {"r": 8, "alpha": 16},
        "eval": {"enabled": False},
        "data_checks": {"leakage": "off"},
        "output": {"dir": str(tmp_path / "runs")},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train(config: Path, *extra: str):
    return CliRunner().invoke(cli, ["train", "--config", str(config), *extra])


def only_run(tmp_path: Path, suffix: str = "") -> Path:
    runs = [p for p in (tmp_path / "runs").iterdir() if p.name.endswith(suffix) and (suffix or "." not in p.name)]
    assert len(runs) == 1, runs
    return runs[0]


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.parametrize("model", ["verifily_tiny_llama_dir", "verifily_tiny_t5_dir"])
def test_lora_sft_lowers_training_loss_and_writes_a_complete_run(request, tmp_path, model):
    res = train(make_config(tmp_path, request.getfixturevalue(model)))
    assert res.exit_code == 0, res.output + res.stderr
    run = only_run(tmp_path)
    assert "Run completed: " + run.name in res.stdout
    trace = losses(run)
    assert trace[-1] < 0.85 * trace[0], trace
    for name in ("run_meta.json", "config.yaml", "hashes.json", "environment.json", "train_log.jsonl",
                 "adapter/adapter_model.safetensors", "adapter/adapter_config.json", "tokenizer/tokenizer.json"):
        assert (run / name).is_file(), name
    assert not (run / "checkpoints").exists()
    meta = json.loads((run / "run_meta.json").read_text())
    assert meta["status"] == "completed" and meta["format_version"] == 1 and meta["run_id"] == run.name
    assert meta["metrics"]["train_loss"] > 0 and "eval_loss" in meta["metrics"]


def test_every_hash_matches_the_files(tmp_path, verifily_tiny_llama_dir):
    assert train(make_config(tmp_path, verifily_tiny_llama_dir, max_steps=4)).exit_code == 0
    run = only_run(tmp_path)
    hashes = json.loads((run / "hashes.json").read_text())
    on_disk = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()} - {"hashes.json"}
    assert set(hashes["artifacts"]) == on_disk
    for rel, digest in hashes["artifacts"].items():
        assert sha256_file(run / rel) == digest, rel
    env = json.loads((run / "environment.json").read_text())
    from verifily_core.environment import env_hash

    assert hashes["env_hash"] == env_hash(env)
    assert hashes["reproducibility_hash"] == reproducibility_hash(hashes["config_hash"], hashes["data_hash"], hashes["env_hash"])
    for split, entry in hashes["data_files"].items():
        assert sha256_file(entry["path"]) == entry["sha256"], split
    from verifily_core.config import TrainConfig

    assert TrainConfig.from_yaml(run / "config.yaml").to_hash() == hashes["config_hash"]
    assert not os.access(run / "adapter" / "adapter_model.safetensors", os.W_OK) or os.geteuid() == 0
    assert not (run / "config.yaml").stat().st_mode & 0o222


def test_two_runs_of_one_config_give_identical_adapters(tmp_path, verifily_tiny_llama_dir, verifily_subprocess):
    """Byte-identical adapter files, also across processes whose string hashing differs (PEFT
    keeps target_modules in a set)."""
    config = make_config(tmp_path, verifily_tiny_llama_dir, max_steps=4)
    for seed in ("1", "2"):
        res = verifily_subprocess("train", "--config", config, env={"PYTHONHASHSEED": seed})
        assert res.returncode == 0, res.stderr
    runs = sorted(p for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 2
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert len({sha256_file(r / "adapter" / name) for r in runs}) == 1, name
    timed = {"run_meta.json", "train_log.jsonl"}  # start/end times, tokens per second
    a, b = (json.loads((r / "hashes.json").read_text())["artifacts"] for r in runs)
    assert set(a) == set(b) and {k for k in a if a[k] != b[k]} == timed
    adapter = json.loads((runs[0] / "adapter" / "adapter_config.json").read_text())
    assert adapter["target_modules"] == sorted(adapter["target_modules"]) and len(adapter["target_modules"]) > 1


class PoisonPlugin:
    """Injects NaN into the LoRA weights after step 2, as a diverging run would."""

    plugin_name = "poison"

    @hookimpl
    def verifily_trainer_callbacks(self):
        import torch
        from transformers import TrainerCallback

        class Poison(TrainerCallback):
            def on_step_end(self, args, state, control, model=None, **kw):
                if state.global_step == 2:
                    with torch.no_grad():
                        for name, p in model.named_parameters():
                            if "lora_B" in name:
                                p.fill_(float("nan"))

        return [Poison()]


def test_nan_loss_fails_with_exit_3_and_marks_the_run_failed(tmp_path, verifily_tiny_llama_dir):
    from verifily_core import TrainingError
    from verifily_core import train as api_train
    from verifily_core.plugins import load_registries, make_plugin_manager

    regs = load_registries(make_plugin_manager(plugins=[PoisonPlugin()]))
    with pytest.raises(TrainingError, match="non-finite training: (loss|grad_norm) became nan") as err:
        api_train(str(make_config(tmp_path, verifily_tiny_llama_dir, logging_steps=1)), registries=regs)
    assert err.value.exit_code == 3
    failed = only_run(tmp_path, ".failed")
    meta = json.loads((failed / "run_meta.json").read_text())
    assert meta["status"] == "failed" and "non-finite" in meta["error"]
    assert meta["metrics"] == {} and not (failed / "hashes.json").exists()
    assert [p for p in (tmp_path / "runs").iterdir() if "." not in p.name] == []
    steps = [json.loads(line)["step"] for line in (failed / "train_log.jsonl").read_text().splitlines()]
    assert max(steps) <= 4  # stopped early, not after all epochs


def log_steps(run: Path) -> list[tuple[int, str]]:
    return [(r["step"], "loss" if "loss" in r else "eval" if "eval_loss" in r else "end")
            for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines())]


STALLING_TRAINER = """
import pathlib, sys, time
from transformers import TrainerCallback
from verifily_core import hookimpl, train
from verifily_core.plugins import load_registries, make_plugin_manager

STALL_AT = int(sys.argv[3]) if len(sys.argv) > 3 else 7

class Stall(TrainerCallback):  # holds training at step 7 (checkpoint at 4, a log line at 6) until killed
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == STALL_AT:
            pathlib.Path(sys.argv[2]).write_text("stalled")
            time.sleep(600)

class StallPlugin:
    plugin_name = "stall"

    @hookimpl
    def verifily_trainer_callbacks(self):
        return [Stall()]

train(sys.argv[1], name="first-try", registries=load_registries(make_plugin_manager(plugins=[StallPlugin()])))
"""


def train_reference(tmp_path: Path, config: Path) -> tuple[dict, list]:
    """Train ``config`` uninterrupted; its metrics and log steps (its runs folder moved aside)."""
    assert train(config).exit_code == 0
    metrics = json.loads((only_run(tmp_path) / "run_meta.json").read_text())["metrics"]
    steps = log_steps(only_run(tmp_path))
    (tmp_path / "runs").rename(tmp_path / "reference_runs")
    return metrics, steps


@pytest.mark.parametrize("grouped", [False, True], ids=["random", "group_by_length"])
def test_killed_run_resumes_to_the_same_final_metrics(tmp_path, verifily_tiny_llama_dir, grouped):
    config = make_config(tmp_path, verifily_tiny_llama_dir, num_epochs=6, save_steps=4, logging_steps=2,
                         group_by_length=grouped)
    reference, reference_log = train_reference(tmp_path, config)

    run_dir = stall_then_kill(tmp_path, config, 7)
    assert json.loads((run_dir / "run_meta.json").read_text())["status"] == "running"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["checkpoint-4"]
    assert [s for s, _ in log_steps(run_dir)] == [2, 4, 6]

    res = train(config, "--resume", str(run_dir), "--output-dir", str(tmp_path / "elsewhere"))
    assert res.exit_code == 0, res.output + res.stderr
    assert not (tmp_path / "elsewhere").exists()  # a run continues where it is
    resumed = json.loads((only_run(tmp_path) / "run_meta.json").read_text())
    assert resumed["run_id"] == run_dir.name.removesuffix(".partial")
    assert resumed["metrics"]["eval_loss"] == pytest.approx(reference["eval_loss"], abs=1e-6)
    assert resumed["metrics"]["train_loss"] == pytest.approx(reference["train_loss"], abs=1e-6)
    assert resumed["metrics"]["train_steps"] == reference["train_steps"]
    assert log_steps(only_run(tmp_path)) == reference_log  # steps after the checkpoint are not logged twice
    # the last log line's train_loss is the whole run's, as in run_meta (not this session's mean)
    last = json.loads((only_run(tmp_path) / "train_log.jsonl").read_text().splitlines()[-1])
    assert last["train_loss"] == resumed["metrics"]["train_loss"]
    # the resumed run keeps its name and records the folder it really sits in
    assert resumed["name"] == "first-try"
    recorded = yaml.safe_load((only_run(tmp_path) / "config.yaml").read_text())["output"]
    assert recorded == {**recorded, "name": "first-try", "dir": str(tmp_path / "runs")}


def stall_then_kill(tmp_path: Path, config: Path, step: int) -> Path:
    """Train ``config`` in a process held at ``step`` and killed there; the partial run it left."""
    marker = tmp_path / "stalled"
    proc = subprocess.Popen([sys.executable, "-c", STALLING_TRAINER, str(config), str(marker), str(step)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.exists(), f"training never reached step {step}"
    return only_run(tmp_path, ".partial")


def test_a_damaged_newest_checkpoint_resumes_from_the_previous_one(tmp_path, verifily_tiny_llama_dir, caplog):
    """Issue 13: a truncated optimizer.pt in the newest checkpoint is named on stderr and the
    checkpoint before it is used; the run still ends as an uninterrupted one."""
    config = make_config(tmp_path, verifily_tiny_llama_dir, max_steps=10, save_steps=4, logging_steps=2)
    reference, reference_log = train_reference(tmp_path, config)

    run_dir = stall_then_kill(tmp_path, config, 9)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["checkpoint-4", "checkpoint-8"]
    optimizer = run_dir / "checkpoints" / "checkpoint-8" / "optimizer.pt"
    with open(optimizer, "r+b") as fh:
        fh.truncate(optimizer.stat().st_size // 2)

    # with the one before it damaged too, nothing is usable: one line, exit 3, the run left as it was
    previous = run_dir / "checkpoints" / "checkpoint-4" / "optimizer.pt"
    intact = previous.read_bytes()
    previous.write_bytes(intact[:100])
    res = train(config, "--resume", str(run_dir))
    assert res.exit_code == 3, res.output + res.stderr
    error = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "no usable checkpoint to resume from" in error[0]
    assert "checkpoint-8: optimizer.pt" in error[0] and "checkpoint-4: optimizer.pt" in error[0]
    assert json.loads((only_run(tmp_path, ".partial") / "run_meta.json").read_text())["status"] == "running"
    previous.write_bytes(intact)

    with caplog.at_level("WARNING", logger="verifily"):  # the warning line on stderr
        res = train(config, "--resume", str(run_dir))
    assert res.exit_code == 0, res.output + res.stderr
    assert "checkpoint-8 is not usable: optimizer.pt is" in caplog.text and "truncated" in caplog.text
    assert "resuming from checkpoint-4" in caplog.text
    resumed = json.loads((only_run(tmp_path) / "run_meta.json").read_text())["metrics"]
    assert resumed["train_loss"] == pytest.approx(reference["train_loss"], abs=1e-6)
    assert resumed["eval_loss"] == pytest.approx(reference["eval_loss"], abs=1e-6)
    assert log_steps(only_run(tmp_path)) == reference_log


class ResumeWhileTraining:
    """At step 1 of a fresh run, runs `verifily train --resume` on that run in another process."""

    plugin_name = "resume-while-training"

    def __init__(self, config: Path) -> None:
        self.config, self.result = config, None

    @hookimpl
    def verifily_trainer_callbacks(self):
        from transformers import TrainerCallback

        from verifily_core.testing.pytest_plugin import run_verifily

        outer = self

        class Probe(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step == 1:
                    run = Path(args.output_dir).parent
                    outer.result = (run, run_verifily("train", "--config", outer.config, "--resume", run, timeout=120))

        return [Probe()]


def test_a_run_in_training_cannot_be_resumed_by_another_process(tmp_path, verifily_tiny_llama_dir):
    """Issue 13: a fresh `train` racing with a `--resume` of its run; the resume is refused (exit 1)."""
    from verifily_core import train as api_train
    from verifily_core.plugins import load_registries, make_plugin_manager

    config = make_config(tmp_path, verifily_tiny_llama_dir, max_steps=2)
    probe = ResumeWhileTraining(config)
    run = api_train(str(config), registries=load_registries(make_plugin_manager(plugins=[probe])))
    assert run.status == "completed"
    partial, res = probe.result
    assert res.returncode == 1, res.stderr
    assert f"run {partial}" in res.stderr and "another process" in res.stderr and "is writing it" in res.stderr
    if Path("/proc/locks").is_file():
        assert f"(pid {os.getpid()})" in res.stderr
    assert "Traceback" not in res.stderr
    hashes = json.loads((Path(run.artifact_path) / "hashes.json").read_text())["artifacts"]
    assert not [name for name in hashes if "lock" in name]


def test_resume_refuses_a_changed_config(tmp_path, verifily_tiny_llama_dir):
    config = make_config(tmp_path, verifily_tiny_llama_dir)
    fake = tmp_path / "runs" / "run_x.partial"
    fake.mkdir(parents=True)
    (fake / "run_meta.json").write_text(json.dumps({"run_id": "run_x", "status": "running",
                                                    "hashes": {"config_hash": "sha256:0", "data_hash": "sha256:0"}}))
    (fake / "config.yaml").write_text(config.read_text().replace("learning_rate: 0.01", "learning_rate: 0.02"))
    res = train(config, "--resume", str(fake))
    assert res.exit_code == 1 and "the config differs from the run's (training.learning_rate" in res.stderr


def test_python_api_returns_a_run(tmp_path, verifily_tiny_llama_dir):
    from verifily_core import train as api_train

    run = api_train(str(make_config(tmp_path, verifily_tiny_llama_dir, max_steps=2)), name="api-run")
    assert run.status == "completed" and run.name == "api-run"
    assert Path(run.artifact_path).is_dir() and run.reproducibility_hash.startswith("sha256:")
