"""MLflow tracking of a run, read back from a real local MLflow store (SQLite) with
``mlflow.MlflowClient``: parameters, per-step and per-evaluation metrics, test metrics overall and
per slice with their bounds, artifacts, lineage tags (git state in a temporary repository), the
dataset input, the run id in run_meta.json; a tracker failure leaves the run sealed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from verifily_core.api import train
from verifily_core.config import TrainConfig
from verifily_core.errors import ConfigError
from verifily_core.plugins import load_registries
from verifily_core.testing import make_classification_rows, write_jsonl

mlflow = pytest.importorskip("mlflow", reason="needs the mlflow extra (pip install 'verifily-train[mlflow]')")
from mlflow import MlflowClient  # noqa: E402

from verifily_mlflow.lineage import flatten, git_tags  # noqa: E402
from verifily_mlflow.names import slice_part, step_metrics  # noqa: E402

SECRET = "sekret-token-7f3a"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo, check=True,
                   capture_output=True)


def _repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    _git(path, "init", "-q", "-b", "main")
    (path / "README").write_text("x\n")
    _git(path, "add", "README")
    _git(path, "commit", "-q", "-m", "first")
    return path


def _config(tmp: Path, model_dir: Path, **tracking) -> dict:
    data = tmp / "data"
    paths = {"train": write_jsonl(data / "train.jsonl", make_classification_rows(32, seed=1)),
             "val": write_jsonl(data / "val.jsonl", make_classification_rows(12, seed=2)),
             "test": write_jsonl(data / "test.jsonl", make_classification_rows(24, seed=3))}
    return {"task": "classification", "base_model": str(model_dir), "data_paths": {k: str(v) for k, v in paths.items()},
            "training": {"max_steps": 4, "batch_size": 8, "gradient_accumulation_steps": 1, "learning_rate": 0.005,
                         "logging_steps": 1, "eval_steps": 2, "save_steps": 100, "max_seq_length": 32,
                         "warmup_ratio": 0.0},
            "lora": {"r": 4, "alpha": 8},
            "task_options": {"head": {"num_layers": 1, "hidden_dims": [16]}},
            "eval": {"slice_by_tags": ["source"], "bootstrap_resamples": 20, "min_slice_size": 2},
            "data_checks": {"leakage": "off"}, "output": {"dir": str(tmp / "runs"), "name": "tracked"},
            "tracking": {"mlflow": {"enabled": True, **tracking}}}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, verifily_tiny_bert_dir):
    """One tracked classification run, trained from inside a git repository with an uncommitted change."""
    tmp = tmp_path_factory.mktemp("tracked")
    repo = _repo(tmp / "repo")
    (repo / "README").write_text("changed\n")  # dirty
    cwd, env = os.getcwd(), dict(os.environ)
    os.environ.update(MLFLOW_TRACKING_TOKEN=SECRET, WANDB_API_KEY=SECRET)
    os.chdir(repo)
    try:
        run = train(_config(tmp, verifily_tiny_bert_dir, experiment_name="exp-a"))
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
    meta = json.loads((run.path / "run_meta.json").read_text())
    uri = f"sqlite:///{(tmp / 'runs' / 'mlflow.db').resolve().as_posix()}"
    client = MlflowClient(tracking_uri=uri)
    return run, meta, client, client.get_run(meta["tracking"]["mlflow"]["run_id"]), repo


pytestmark = pytest.mark.slow


def test_the_mlflow_run_id_is_recorded_in_run_meta(tracked):
    run, meta, _, mrun, _ = tracked
    record = meta["tracking"]["mlflow"]
    assert record["run_id"] == mrun.info.run_id and record["experiment_name"] == "exp-a"
    assert record["tracking_uri"].startswith("sqlite:///") and record["tracking_uri"].endswith("runs/mlflow.db")
    assert mrun.info.status == "FINISHED" and mrun.info.run_name == "tracked"
    assert (run.path.parent / "mlflow.db").is_file() and not (run.path / "mlflow.db").exists()


def test_every_config_field_is_a_parameter(tracked):
    run, _, _, mrun, _ = tracked
    params = mrun.data.params
    cfg = TrainConfig.from_yaml(run.path / "config.yaml")
    assert params["training.learning_rate"] == "0.005" and params["seed"] == "42"
    assert params["task_options.head.hidden_dims"] == "[16]" and params["lora.r"] == "4"
    assert params["compute.bf16"] == "true" and params["lora.quantization"] == "none"
    expected = set(flatten({k: v for k, v in cfg.to_dict().items() if k != "tracking"}))
    assert expected == set(params), expected ^ set(params)


def test_metrics_of_every_step_and_every_evaluation(tracked):
    _, _, client, mrun, _ = tracked
    rid = mrun.info.run_id
    steps = {name: [(m.step, m.value) for m in client.get_metric_history(rid, name)]
             for name in ("train_loss", "lr", "grad_norm", "val_loss", "val_accuracy", "val_macro_f1", "val_weighted_f1")}
    assert [s for s, _ in steps["train_loss"]] == [1, 2, 3, 4]
    assert [s for s, _ in steps["lr"]] == [1, 2, 3, 4] and len(steps["grad_norm"]) == 4
    for name in ("val_loss", "val_accuracy", "val_macro_f1", "val_weighted_f1"):
        assert [s for s, _ in steps[name]] == [2, 4], (name, steps[name])
    log = [json.loads(line) for line in (Path(mrun.data.tags["verifily.run_dir"]) / "train_log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log if "loss" in r] == pytest.approx([v for _, v in steps["train_loss"]])
    assert [r["eval_macro_f1"] for r in log if "eval_macro_f1" in r] == pytest.approx([v for _, v in steps["val_macro_f1"]])
    assert "final_train_loss" in mrun.data.metrics and "final_val_loss" in mrun.data.metrics


def test_test_metrics_overall_and_per_slice_with_bounds(tracked):
    run, _, _, mrun, _ = tracked
    metrics = mrun.data.metrics
    results = json.loads((run.path / "eval" / "eval_results.json").read_text())
    overall = results["overall"]["metrics"]
    for name in ("accuracy", "macro_f1", "weighted_f1"):
        assert metrics[f"test_{name}"] == pytest.approx(overall[name]["value"])
        assert metrics[f"test_{name}.ci_low"] == pytest.approx(overall[name]["ci_low"])
        assert metrics[f"test_{name}.ci_high"] == pytest.approx(overall[name]["ci_high"])
    assert metrics["test_n"] == 24
    for slice_name, sl in results["slices"].items():
        part = slice_part(slice_name)
        assert metrics[f"test_n.{part}"] == sl["n"]
        assert metrics[f"test_macro_f1.{part}"] == pytest.approx(sl["metrics"]["macro_f1"]["value"])
        if sl["metrics"]["macro_f1"]["ci_low"] is not None:
            assert metrics[f"test_macro_f1.{part}.ci_low"] == pytest.approx(sl["metrics"]["macro_f1"]["ci_low"])
    assert "test_macro_f1.source.human" in metrics


def test_artifacts_config_adapter_and_evaluation_files(tracked):
    run, _, client, mrun, _ = tracked
    rid = mrun.info.run_id

    def names(path: str | None = None) -> set[str]:
        return {Path(f.path).name for f in client.list_artifacts(rid, path)}

    assert names() >= {"config", "model", "eval", "verifily"}
    assert names("config") == {"config.yaml"}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= names("model/adapter")
    assert "labels.json" in names("model")
    assert {"eval_results.json", "predictions.jsonl", "hard_examples.jsonl", "confusion_matrix.png",
            "classification_report.json"} <= names("eval")
    assert (run.path / "eval" / "classification_report.json").is_file()
    report = json.loads((run.path / "eval" / "classification_report.json").read_text())
    assert set(report) >= {"neg", "pos", "accuracy", "macro avg", "weighted avg"}
    local = Path(client.download_artifacts(rid, "config/config.yaml"))
    assert local.read_bytes() == (run.path / "config.yaml").read_bytes()


def test_lineage_tags_and_dataset_input(tracked):
    run, meta, _, mrun, repo = tracked
    tags = mrun.data.tags
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert (tags["git.commit"], tags["git.branch"], tags["git.dirty"]) == (head, "main", "true")
    env = json.loads((run.path / "environment.json").read_text())["hashed"]
    assert tags["version.python"] == env["python"] and tags["version.torch"] == env["packages"]["torch"]
    for lib in ("transformers", "peft", "verifily"):
        assert tags[f"version.{lib}"]
    hashes = json.loads((run.path / "hashes.json").read_text())
    assert tags["data.hash"] == meta["dataset"]["content_hash"] == hashes["data_hash"]
    assert {tags[f"data.hash.{s}"] for s in ("train", "val", "test")} == \
        {hashes["data_files"][s]["sha256"] for s in ("train", "val", "test")}
    assert tags["verifily.run_id"] == run.run_id and tags["stage"] == "train"
    assert tags["verifily.reproducibility_hash"] == hashes["reproducibility_hash"]
    assert Path(tags["verifily.run_dir"]) == run.path.resolve()
    inputs = mrun.inputs.dataset_inputs
    assert len(inputs) == 1 and meta["dataset"]["content_hash"].removeprefix("sha256:").startswith(inputs[0].dataset.digest)


def test_no_secret_reaches_the_run_directory(tracked):
    run, *_ = tracked
    for path in run.path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_git_tags_clean_dirty_and_outside_a_repository(tmp_path):
    repo = _repo(tmp_path / "r")
    clean = git_tags(repo)
    assert clean["git.dirty"] == "false" and clean["git.branch"] == "main" and len(clean["git.commit"]) == 40
    (repo / "new.txt").write_text("untracked\n")
    assert git_tags(repo)["git.dirty"] == "true"
    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_tags(outside) == {}


def test_a_tracker_failure_warns_naming_the_uri_and_the_run_is_sealed(tmp_path, verifily_tiny_bert_dir, caplog):
    (tmp_path / "a-file").write_text("not a folder\n")
    bad = f"sqlite:///{tmp_path.as_posix()}/a-file/mlflow.db"  # cannot be created
    cfg = _config(tmp_path, verifily_tiny_bert_dir, tracking_uri=bad)
    cfg["training"]["max_steps"] = 2
    cfg["eval"]["enabled"] = False
    with caplog.at_level("WARNING", logger="verifily.mlflow"):
        run = train(cfg)
    warnings = [r.getMessage() for r in caplog.records if r.name == "verifily.mlflow"]
    assert len(warnings) == 1 and bad in warnings[0] and "continues untracked" in warnings[0]
    meta = json.loads((run.path / "run_meta.json").read_text())
    assert meta["status"] == "completed" and meta["tracking"] == {} and (run.path / "hashes.json").is_file()


def test_tracking_settings_are_checked_and_not_hashed():
    base = {"task": "classification", "base_model": "org/model", "data_paths": {"train": "t.jsonl"}}
    regs = load_registries()
    assert TrainConfig.from_dict(base).to_hash() == TrainConfig.from_dict(
        {**base, "tracking": {"mlflow": {"enabled": True}}, "training": {"report_to": ["tensorboard"]}}).to_hash()
    problems = TrainConfig.from_dict({**base, "tracking": {"mlfow": {"enabled": True}}}).problems(regs)
    assert any(p.startswith("$.tracking.mlfow: no installed plugin reads this section (did you mean 'mlflow'?)")
               for p in problems), problems
    problems = TrainConfig.from_dict({**base, "tracking": {"mlflow": {"enabeld": True}}}).problems(regs)
    assert any(p.startswith("$.tracking.mlflow.enabeld: unknown key (did you mean 'enabled'?)") for p in problems)
    problems = TrainConfig.from_dict({**base, "training": {"report_to": ["wandbb"]}}).problems(regs)
    assert any(p.startswith("$.training.report_to[0]: unknown integration 'wandbb'") for p in problems)
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({**base, "training": {"report_to": "wandb"}})


def test_report_to_reaches_the_trainer_arguments(tmp_path):
    from types import SimpleNamespace

    from verifily_local.arguments import argument_values

    base = {"task": "sft", "base_model": "org/model", "data_paths": {"train": "t.jsonl"}}
    for report_to, expected in (([], []), (["none"], []), (["wandb", "tensorboard"], ["wandb", "tensorboard"])):
        cfg = TrainConfig.from_dict({**base, "training": {"report_to": report_to}})
        _, args = argument_values(SimpleNamespace(config=cfg), tmp_path, "cpu", False, "causal_lm")
        assert args["report_to"] == expected


def test_the_report_to_flag_sets_the_config(verifily_cli, tmp_path):
    (tmp_path / "t.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"task: sft\nbase_model: org/model\ndata_paths: {{train: {tmp_path / 't.jsonl'}}}\n")
    res = verifily_cli("train", "--config", str(cfg), "--report-to", "wandb,tensorboard", "--dry-run",
                       "--no-data-check", "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["training"]["report_to"] == ["wandb", "tensorboard"]
    res = verifily_cli("train", "--config", str(cfg), "--report-to", "none,wandb", "--dry-run", "--no-data-check")
    assert res.exit_code == 1 and "$.training.report_to: 'none' cannot be combined" in res.stderr


def test_step_metric_names_and_slice_names():
    assert step_metrics({"loss": 0.5, "learning_rate": 1e-3, "grad_norm": 2.0, "epoch": 0.5}) == \
        {"train_loss": 0.5, "lr": 1e-3, "grad_norm": 2.0, "epoch": 0.5}
    assert step_metrics({"eval_loss": 0.4, "eval_macro_f1": 0.7, "eval_runtime": 1.0, "epoch": 1.0}) == \
        {"val_loss": 0.4, "val_macro_f1": 0.7, "epoch": 1.0}
    assert step_metrics({"train_loss": 0.3, "train_runtime": 5.0}) == {}
    assert slice_part("source=human") == "source.human"
    assert slice_part("source=human&difficulty=hard") == "source.human/difficulty.hard"
    assert slice_part("source=<missing>") == "source._missing_"


def test_reproduce_from_the_mlflow_run_id_passes_and_a_perturbed_metric_fails(tracked, verifily_cli, tmp_path):
    run, meta, client, mrun, _ = tracked
    rid = mrun.info.run_id
    runs_dir = str(run.path.parent)
    res = verifily_cli("reproduce", "--mlflow-run", rid, "--runs-dir", runs_dir, "--tolerance", "0.005",
                       "--output-dir", str(tmp_path / "replay-1"))
    assert res.exit_code == 0, res.output
    assert "Metric Comparison (±0.5 pp tolerance)" in res.stdout and "✓ REPRODUCIBILITY CHECK PASSED" in res.stdout
    assert "✓ test_accuracy" in res.stdout and "✗" not in res.stdout
    repro = [r for r in client.search_runs([mrun.info.experiment_id], filter_string="tags.stage = 'reproducibility'")]
    assert len(repro) == 1
    tags, metrics = repro[0].data.tags, repro[0].data.metrics
    assert (tags["original_run_id"], tags["reproducibility_status"]) == (rid, "passed")
    assert repro[0].data.params["mode"] == "eval" and repro[0].data.params["tolerance"] == "0.005"
    assert metrics["replayed_test_macro_f1"] == pytest.approx(mrun.data.metrics["test_macro_f1"])
    assert metrics["original_test_accuracy"] == pytest.approx(mrun.data.metrics["test_accuracy"])
    assert metrics["delta_test_accuracy"] == pytest.approx(0.0, abs=1e-9)

    client.log_metric(rid, "test_accuracy", mrun.data.metrics["test_accuracy"] + 0.02, step=100)  # the record disagrees
    res = verifily_cli("reproduce", "--mlflow-run", rid, "--runs-dir", runs_dir, "--tolerance", "0.005",
                       "--output-dir", str(tmp_path / "replay-2"))
    assert res.exit_code == 1, res.output
    assert "✗ test_accuracy" in res.stdout and "✓ test_macro_f1" in res.stdout
    assert "✗ REPRODUCIBILITY CHECK FAILED" in res.stdout and "1 of" in res.stdout
    failed = client.search_runs([mrun.info.experiment_id],
                                filter_string="tags.stage = 'reproducibility' and tags.reproducibility_status = 'failed'")
    assert len(failed) == 1 and failed[0].data.metrics["delta_test_accuracy"] == pytest.approx(-0.02)
    client.log_metric(rid, "test_accuracy", mrun.data.metrics["test_accuracy"], step=101)  # put the record back
    res = verifily_cli("reproduce", "--mlflow-run", "0" * 32, "--runs-dir", runs_dir)
    assert res.exit_code == 5 and "not found" in res.stderr


def test_reproduce_without_run_or_mlflow_run_is_a_usage_error(verifily_cli):
    res = verifily_cli("reproduce")
    assert res.exit_code == 1 and "Missing option '--run'" in res.output


def test_reproduce_from_the_mlflow_run_id_by_retraining(tracked, verifily_cli, tmp_path):
    run, _, client, mrun, _ = tracked
    res = verifily_cli("reproduce", "--mlflow-run", mrun.info.run_id, "--mode", "train", "--runs-dir",
                       str(run.path.parent), "--output-dir", str(tmp_path / "retrained"), "--format", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["status"] == "passed" and doc["mode"] == "train"
    assert {m["metric"] for m in doc["metrics"]} == {"test_accuracy", "test_macro_f1", "test_weighted_f1"}
    assert all(m["delta"] == pytest.approx(0.0, abs=1e-9) for m in doc["metrics"])  # same CPU environment: identical
    repro = client.get_run(doc["reproducibility_run_id"])
    assert repro.data.params["mode"] == "train" and repro.data.tags["reproducibility_status"] == "passed"
