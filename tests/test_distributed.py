"""Data-parallel training in two CPU processes over gloo (``verifily train --nproc 2``): one sealed
run, the losses of one process with the same global batch, evaluation on rank 0, a dying worker,
resume, and a dataset that differs between ranks. Each run starts real worker processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from verifily_core.distributed import TEST_BREAK_DATA_HASH_RANK, TEST_EXIT_AT_STEP
from verifily_core.testing import make_classification_rows, make_sft_rows, write_jsonl
from verifily_core.testing.pytest_plugin import run_verifily
from verifily_dpo.testing import make_preference_rows

pytestmark = pytest.mark.slow


def _config(folder: Path, model_dir: Path, **training) -> Path:
    data = folder / "data"
    write_jsonl(data / "train.jsonl", make_sft_rows(32, seed=1))  # 4 steps of 8 rows
    write_jsonl(data / "test.jsonl", make_sft_rows(6, seed=3))
    cfg = {
        "task": "sft", "base_model": str(model_dir),
        "data_paths": {s: str(data / f"{s}.jsonl") for s in ("train", "test")},
        "training": {"num_epochs": 1, "batch_size": 4, "gradient_accumulation_steps": 1, "learning_rate": 0.01,
                     "logging_steps": 1, "save_steps": 2, "max_seq_length": 48, "warmup_ratio": 0.0, **training},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "eval": {"enabled": True, "metrics": ["exact_match"], "bootstrap_resamples": 10, "max_new_tokens": 4},
        "data_checks": {"leakage": "off"},
        "output": {"dir": str(folder / "runs")},
    }
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _runs(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / "runs").iterdir() if p.name.startswith("run_"))


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _log(run) if "loss" in r}


def _adapter(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def model_dir(verifily_tiny_model) -> Path:
    return verifily_tiny_model("llama")


@pytest.fixture(scope="module")
def two(tmp_path_factory, model_dir):
    """An uninterrupted run in two processes (per-device batch 4) and its command's result."""
    folder = tmp_path_factory.mktemp("two")
    res = run_verifily("train", "--config", _config(folder, model_dir), "--nproc", "2", cwd=folder)
    assert res.returncode == 0, res.stdout + res.stderr
    return folder, res


def test_two_processes_seal_one_run_with_the_losses_of_one_process(two, model_dir, tmp_path):
    folder, res = two
    runs = _runs(folder)
    assert len(runs) == 1 and not runs[0].name.endswith((".partial", ".failed")), runs
    run = runs[0]
    meta = json.loads((run / "run_meta.json").read_text())
    assert meta["status"] == "completed"
    assert meta["distributed"] == {"world_size": 2, "num_nodes": 1, "backend": "gloo", "per_device_batch_size": 4,
                                   "gradient_accumulation_steps": 1, "global_batch_size": 8}
    assert yaml.safe_load((run / "config.yaml").read_text())["compute"]["num_processes"] == 2
    assert meta["optimizations"]["batches"] == "padding-free"  # each rank packs its own batch
    assert meta["optimizations"]["parallelism"] == "ddp"  # what the Trainer's accelerator set up
    assert res.stdout.count("Run completed:") == 1 and res.stderr.count("Run run_") == 1, res.stdout + res.stderr
    assert "[rank 1]" not in res.stderr
    assert "step 4/4" in res.stderr and res.stderr.count("step 4/4") == 1
    # evaluation after training ran once, on rank 0, into the sealed run
    assert (run / "eval" / "eval_results.json").is_file() or any((run / "eval").iterdir())
    verify = run_verifily("reproduce", "--run", run, "--verify-only", cwd=folder)
    assert verify.returncode == 0 and "MATCH" in verify.stdout, verify.stdout + verify.stderr

    # one process with the global batch (8) sees the same rows per optimizer step
    one = run_verifily("train", "--config", _config(tmp_path, model_dir), "--batch-size", "8", "eval.enabled=false",
                       cwd=tmp_path)
    assert one.returncode == 0, one.stdout + one.stderr
    single = _runs(tmp_path)[0]
    a, b = _losses(run), _losses(single)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert abs(a[step] - b[step]) < 1e-5, (step, a[step], b[step])
    assert a[4] < a[1]  # it learns
    wa, wb = _adapter(run), _adapter(single)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert (wa[key] - wb[key]).abs().max().item() < 1e-5, key
    # the per-device batch and the world size enter the config hash; the global batch is the same
    single_meta = json.loads((single / "run_meta.json").read_text())
    assert single_meta["distributed"]["global_batch_size"] == 8 and single_meta["distributed"]["world_size"] == 1
    assert single_meta["hashes"]["config_hash"] != meta["hashes"]["config_hash"]


def test_a_dying_worker_fails_the_run_and_resume_finishes_it_as_uninterrupted(two, model_dir, tmp_path):
    config = _config(tmp_path, model_dir)
    res = run_verifily("train", "--config", config, "--nproc", "2", cwd=tmp_path, env={TEST_EXIT_AT_STEP: "1:3"})
    assert res.returncode == 3, res.stdout + res.stderr
    runs = _runs(tmp_path)
    assert len(runs) == 1 and runs[0].name.endswith(".failed"), runs
    meta = json.loads((runs[0] / "run_meta.json").read_text())
    assert meta["status"] == "failed" and meta["error"] == "distributed training failed: rank 1 exited with code 17"
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: distributed training failed: rank 1 exited with code 17; the run is marked failed: "
                      f"{runs[0]}"], res.stderr

    resumed = run_verifily("train", "--config", config, "--nproc", "2", "--resume", runs[0], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    done = _runs(tmp_path)
    assert len(done) == 1 and "." not in done[0].name, done
    uninterrupted = _runs(two[0])[0]
    got, want = (json.loads((r / "run_meta.json").read_text())["metrics"] for r in (done[0], uninterrupted))
    assert got["train_steps"] == want["train_steps"] == 4
    assert got["train_loss"] == pytest.approx(want["train_loss"], abs=1e-5)
    assert _losses(done[0]) == pytest.approx(_losses(uninterrupted), abs=1e-5)
    wa, wb = _adapter(done[0]), _adapter(uninterrupted)
    assert all((wa[k] - wb[k]).abs().max().item() < 1e-5 for k in wa)


def test_a_rank_with_other_data_fails_every_rank_naming_it(model_dir, tmp_path):
    res = run_verifily("train", "--config", _config(tmp_path, model_dir), "--nproc", "2", cwd=tmp_path,
                       env={TEST_BREAK_DATA_HASH_RANK: "1"})
    assert res.returncode == 2, res.stdout + res.stderr
    errors = [line for line in res.stderr.splitlines() if "Error:" in line]
    assert len(errors) == 1 and errors[0].startswith("Error: the dataset differs between the processes of this run: "
                                                     "rank 1 (sha256:000"), res.stderr
    assert not (tmp_path / "runs").exists() or not _runs(tmp_path)


def test_a_streamed_split_is_shared_between_processes_as_one_process_reads_it(model_dir, tmp_path):
    """Streaming and two processes: rank r takes the shuffled stream's positions r, r + 2, ..., so
    the two per-device batches of 4 are the one batch of 8 a single process takes."""
    streamed = {"streaming": True, "shuffle_buffer": 8, "max_steps": 4}
    two_dir, one_dir = tmp_path / "two", tmp_path / "one"
    res = run_verifily("train", "--config", _config(two_dir, model_dir, **streamed), "--nproc", "2",
                       "eval.enabled=false", cwd=two_dir)
    assert res.returncode == 0, res.stdout + res.stderr
    one = run_verifily("train", "--config", _config(one_dir, model_dir, **streamed), "--batch-size", "8",
                       "eval.enabled=false", cwd=one_dir)
    assert one.returncode == 0, one.stdout + one.stderr
    (run,), (single,) = _runs(two_dir), _runs(one_dir)
    a, b = _losses(run), _losses(single)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert abs(a[step] - b[step]) < 1e-5, (step, a[step], b[step])
    wa, wb = _adapter(run), _adapter(single)
    assert all((wa[k] - wb[k]).abs().max().item() < 1e-5 for k in wa)


def test_reproduce_retrains_a_distributed_run_in_as_many_processes(two, tmp_path):
    folder, _ = two
    run = _runs(folder)[0]
    res = run_verifily("reproduce", "--run", run, "--output-dir", tmp_path / "again", "--format", "json", cwd=folder)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)  # the child's summary went to stderr: stdout is the JSON alone
    assert doc["verdict"] in ("MATCH", "REPRODUCIBLE"), doc
    (new,) = [p for p in (tmp_path / "again").iterdir() if p.name.startswith("run_")]
    meta = json.loads((new / "run_meta.json").read_text())
    assert meta["distributed"]["world_size"] == 2 and meta["status"] == "completed"
    assert _losses(new) == pytest.approx(_losses(run), abs=1e-5)


def _no_dropout(model_dir: Path, folder: Path) -> Path:
    """A copy of ``model_dir`` with dropout off: each process draws its own masks, so only
    without dropout do two processes compute one process's numbers."""
    import shutil

    out = folder / "model"
    shutil.copytree(model_dir, out)
    config = json.loads((out / "config.json").read_text())
    config.update({k: 0.0 for k in ("dropout_rate", "hidden_dropout_prob", "attention_probs_dropout_prob")
                   if k in config})
    (out / "config.json").write_text(json.dumps(config))
    return out


OTHER_TASKS = {  # task, tiny model, rows
    "seq2seq-sft": ("sft", "t5", lambda n, seed: make_sft_rows(n, seed=seed)),
    "classification": ("classification", "bert", lambda n, seed: make_classification_rows(n, seed=seed)),
    "dpo": ("dpo", "llama", lambda n, seed: make_preference_rows(n, seed=seed)),
}


@pytest.mark.parametrize("name", sorted(OTHER_TASKS))
def test_other_tasks_and_models_train_in_two_processes_as_in_one(name, verifily_tiny_model, tmp_path):
    """Seq2Seq SFT (T5, whose loss verifily weighs by the step's tokens), classification with a
    head, and DPO through TRL: per-device batch 4 in 2 processes logs the losses of batch 8 in 1."""
    task, kind, make = OTHER_TASKS[name]
    model = _no_dropout(verifily_tiny_model(kind, pretrain_steps=0 if kind == "bert" else 60), tmp_path)
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", make(32, 1))
    losses = {}
    for procs, batch in ((2, 4), (1, 8)):
        folder = tmp_path / f"p{procs}"
        cfg = {"task": task, "base_model": str(model), "data_paths": {"train": str(data / "train.jsonl")},
               "training": {"num_epochs": 1, "batch_size": batch, "gradient_accumulation_steps": 1,
                            "learning_rate": 0.01, "logging_steps": 1, "max_seq_length": 48, "warmup_ratio": 0.0},
               "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "eval": {"enabled": False},
               "data_checks": {"leakage": "off"}, "output": {"dir": str(folder / "runs")}}
        folder.mkdir()
        (folder / "train.yaml").write_text(yaml.safe_dump(cfg))
        res = run_verifily("train", "--config", folder / "train.yaml", "--nproc", procs, cwd=folder)
        assert res.returncode == 0, res.stdout + res.stderr
        (run,) = _runs(folder)
        assert json.loads((run / "run_meta.json").read_text())["distributed"]["world_size"] == procs
        losses[procs] = _losses(run)
    assert sorted(losses[2]) == sorted(losses[1]) == [1, 2, 3, 4]
    for step in losses[1]:
        assert abs(losses[2][step] - losses[1][step]) < 1e-5, (name, step, losses)


def _python_json(script: str, cwd: Path) -> dict:
    """Run ``script`` in a fresh Python process (a process no launcher started) and return the
    JSON object its last line prints."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_the_python_api_starts_the_workers_itself(model_dir, tmp_path):
    """``api.train(config, nproc=2)`` from a process no launcher started: two workers, one sealed
    run, and ``on_eval`` receives the evaluation rank 0 wrote; several machines need a launch."""
    config = _config(tmp_path, model_dir)
    script = ("import json, sys, yaml\nfrom verifily_core.api import train\nfrom verifily_core.errors import ConfigError\n"
              "seen = []\n"
              f"cfg = yaml.safe_load(open({str(config)!r}))\n"
              "run = train(cfg, nproc=2, on_eval=seen.append)\n"
              "try:\n    train(cfg, nproc=2, nnodes=2)\nexcept ConfigError as exc:\n    refused = str(exc)\n"
              "print(json.dumps({'run': str(run.path), 'world': run.distributed['world_size'],\n"
              "                  'eval_n': seen[0].num_examples if seen else None, 'refused': refused}))\n")
    out = _python_json(script, tmp_path)
    assert out["world"] == 2 and out["eval_n"] == 6, out
    assert out["refused"].startswith("compute.num_nodes above 1 need the rendezvous"), out
    (run,) = _runs(tmp_path)
    assert str(run) == out["run"] and json.loads((run / "run_meta.json").read_text())["status"] == "completed"


def test_eval_in_two_processes_gives_the_results_of_one(two, tmp_path):
    """``verifily eval --nproc 2``: each process predicts half the rows, rank 0 writes the results
    of one process; what both would refuse is refused once."""
    folder, _ = two
    run = _runs(folder)[0]
    one = run_verifily("eval", "--run", run, "--output", tmp_path / "one", cwd=folder)
    assert one.returncode == 0, one.stdout + one.stderr
    res = run_verifily("eval", "--run", run, "--output", tmp_path / "two", "--nproc", "2", cwd=folder)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("Full results:") == 1 and "[rank 1]" not in res.stdout + res.stderr
    a, b = (json.loads((tmp_path / d / "eval_results.json").read_text()) for d in ("one", "two"))
    assert a["overall"]["n"] == b["overall"]["n"] == 6
    for name, value in a["overall"]["metrics"].items():
        assert b["overall"]["metrics"][name]["value"] == pytest.approx(value["value"], abs=1e-6), name
    rows = [[json.loads(line) for line in (tmp_path / d / "predictions.jsonl").read_text().splitlines()]
            for d in ("one", "two")]
    assert [r["prediction"] for r in rows[0]] == [r["prediction"] for r in rows[1]]  # in the rows' order

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x"}\n')
    res = run_verifily("eval", "--run", run, "--test-data", bad, "--nproc", "2", cwd=folder)
    assert res.returncode == 2, res.stdout + res.stderr
    assert [line for line in res.stderr.splitlines() if "Error:" in line] == [
        f"Error: {bad}:1: missing required field 'output'"], res.stderr


def test_the_python_api_resumes_a_distributed_run_in_its_workers(model_dir, tmp_path):
    """A run whose worker died, resumed with ``api.train(config, nproc=2, resume_from=run)``: the
    workers continue it to the end."""
    config = _config(tmp_path, model_dir)
    script = ("import json, os, sys, yaml\nfrom pathlib import Path\nfrom verifily_core.api import train\n"
              "from verifily_core.errors import VerifilyTrainError\n"
              f"cfg = yaml.safe_load(open({str(config)!r}))\n"
              f"os.environ[{TEST_EXIT_AT_STEP!r}] = '1:3'\n"
              "try:\n    train(cfg, nproc=2)\nexcept VerifilyTrainError as exc:\n    code = exc.exit_code\n"
              f"del os.environ[{TEST_EXIT_AT_STEP!r}]\n"
              "(failed,) = [p for p in Path(cfg['output']['dir']).iterdir() if p.name.endswith('.failed')]\n"
              "run = train(cfg, nproc=2, resume_from=str(failed))\n"
              "print(json.dumps({'code': code, 'steps': run.metrics['train_steps'], 'status': run.status}))\n")
    out = _python_json(script, tmp_path)
    assert out == {"code": 3, "steps": 4, "status": "completed"}, out
    (run,) = _runs(tmp_path)
    assert "." not in run.name and _losses(run).keys() == {1, 2, 3, 4}
