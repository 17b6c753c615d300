"""``verifily hpo`` on a tiny classifier: 4 trials with real Optuna (seeded TPE, median pruning fed
the validation loss at every evaluation), every trial a sealed run; an interrupted study resumes
without repeating finished trials; outputs written; the best config trains; nested MLflow runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from verifily_core import hookimpl
from verifily_core.errors import ConfigError
from verifily_core.plugins import load_registries, make_plugin_manager
from verifily_core.testing import make_classification_rows, write_jsonl

optuna = pytest.importorskip("optuna", reason="needs the hpo extra (pip install 'verifily-train[hpo]')")
pytest.importorskip("mlflow", reason="needs the mlflow extra (pip install 'verifily-train[mlflow]')")

from verifily_optuna.search import load_search  # noqa: E402
from verifily_optuna.study import run_study  # noqa: E402

pytestmark = pytest.mark.slow

SEARCH = {"hpo": {
    "study_name": "tiny", "n_trials": 4, "metric": "loss",
    "sampler": {"type": "tpe", "seed": 3},
    "pruner": {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
    "search_space": {
        "training.learning_rate": {"choices": [1.0e-7, 0.02]},   # one learns, one cannot
        "lora.r": {"low": 2, "high": 4},
        "task_options.head.hidden_dims": {"choices": [[8], [16]]},
    },
}}


class Interrupt:
    """Stops the process (as Ctrl-C would) during the training of trial 2."""

    @hookimpl
    def verifily_trainer_callbacks(self, config, run_dir):
        from transformers import TrainerCallback

        class Stop(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if str(config.output.name).endswith("trial-2") and state.global_step == 2:
                    raise KeyboardInterrupt

        return [Stop()]


def _train_config(tmp: Path, model_dir: Path) -> Path:
    data = tmp / "data"
    paths = {"train": write_jsonl(data / "train.jsonl", make_classification_rows(32, seed=1)),
             "val": write_jsonl(data / "val.jsonl", make_classification_rows(16, seed=2)),
             "test": write_jsonl(data / "test.jsonl", make_classification_rows(16, seed=3))}
    cfg = {"task": "classification", "base_model": str(model_dir), "data_paths": {k: str(v) for k, v in paths.items()},
           "training": {"max_steps": 6, "batch_size": 8, "gradient_accumulation_steps": 1, "logging_steps": 2,
                        "eval_steps": 2, "save_steps": 100, "max_seq_length": 32, "warmup_ratio": 0.0},
           "lora": {"r": 4, "alpha": 8}, "task_options": {"head": {"num_layers": 1, "hidden_dims": [16]}},
           "eval": {"bootstrap_resamples": 0}, "data_checks": {"leakage": "off"},
           "output": {"dir": str(tmp / "runs")}, "tracking": {"mlflow": {"enabled": True, "experiment_name": "hpo"}}}
    path = tmp / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory, verifily_tiny_bert_dir):
    import os

    from verifily_core.config_loading import read_config_file
    from verifily_core.testing.pytest_plugin import invoke_verifily

    tmp = tmp_path_factory.mktemp("hpo")
    config = _train_config(tmp, verifily_tiny_bert_dir)
    search = tmp / "hpo.yaml"
    search.write_text(yaml.safe_dump(SEARCH))
    cwd = os.getcwd()
    os.chdir(tmp)  # the study folder (hpo.output_dir) is relative
    try:
        regs = load_registries(make_plugin_manager(plugins=[Interrupt()]))
        with pytest.raises(KeyboardInterrupt):
            run_study(read_config_file(config), load_search(search, []), regs)
        first = optuna.load_study(study_name="tiny", storage=f"sqlite:///{(tmp / 'hpo' / 'tiny' / 'study.db').as_posix()}")
        before = {t.number: (t.state.name, t.user_attrs.get("run_id")) for t in first.trials}
        res = invoke_verifily("hpo", "--config", str(config), "--search", str(search), "hpo.n_trials=4", "--format", "json")
    finally:
        os.chdir(cwd)
    assert res.exit_code == 0, res.output
    return tmp, before, json.loads(res.stdout), config


def test_an_interrupted_study_resumes_without_repeating_finished_trials(study):
    tmp, before, result, _ = study
    assert [before[n][0] for n in sorted(before)] in (["COMPLETE", "COMPLETE", "FAIL"], ["COMPLETE", "PRUNED", "FAIL"])
    trials = {t["number"]: t for t in result["trials"]}
    assert sorted(trials) == [0, 1, 2, 3, 4]
    assert trials[2]["state"] == "fail"
    finished = [n for n, t in trials.items() if t["state"] in ("complete", "pruned")]
    assert finished == [0, 1, 3, 4]
    for n in (0, 1):  # kept as they were, not run again
        assert trials[n]["run_id"] == before[n][1]
    assert len({trials[n]["run_id"] for n in finished}) == 4


def test_some_trial_is_pruned_and_every_trial_is_a_sealed_run(study):
    _, _, result, _ = study
    states = {t["number"]: t["state"] for t in result["trials"]}
    pruned = [n for n, s in states.items() if s == "pruned"]
    assert pruned, states
    for t in result["trials"]:
        if t["state"] not in ("complete", "pruned"):
            continue
        run = Path(t["run_dir"])
        meta = json.loads((run / "run_meta.json").read_text())
        assert meta["status"] == "completed" and (run / "hashes.json").is_file()
        record = meta["tracking"]["hpo"]
        assert record["trial"] == t["number"] and record["state"] == ("pruned" if t["state"] == "pruned" else "completed")
        if t["state"] == "pruned":
            assert meta["metrics"]["train_steps"] < 6  # stopped early
        assert not (run / "eval" / "eval_results.json").exists()  # trials leave the test split alone
    best = result["best"]
    complete = [t for t in result["trials"] if t["state"] == "complete"]
    assert best["value"] == min(t["value"] for t in complete)
    assert best["params"]["training.learning_rate"] == 0.02


def test_outputs_and_the_best_config_trains(study, verifily_cli):
    tmp, _, result, _ = study
    folder = Path(result["study_dir"])
    for name in ("best_trial_config.yaml", "optimization_history.png", "param_importances.png", "trials.csv"):
        assert (folder / name).is_file(), name
    for png in ("optimization_history.png", "param_importances.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((folder / "trials.csv").open()))
    assert [r["state"] for r in rows] == [t["state"] for t in result["trials"]]
    assert {"params.training.learning_rate", "params.lora.r", "params.task_options.head.hidden_dims"} <= set(rows[0])
    best = yaml.safe_load((folder / "best_trial_config.yaml").read_text())
    assert best["training"]["learning_rate"] == result["best"]["params"]["training.learning_rate"]
    assert best["task_options"]["head"]["hidden_dims"] == result["best"]["params"]["task_options.head.hidden_dims"]
    assert best["output"]["dir"] == str(tmp / "runs") and "parent_run_id" not in best["tracking"]["mlflow"]
    res = verifily_cli("train", "--config", str(folder / "best_trial_config.yaml"), "tracking.mlflow.enabled=false",
                       "--format", "json")
    assert res.exit_code == 0, res.output
    run = json.loads(res.stdout)
    assert run["status"] == "completed" and Path(run["artifact_path"]).parent == tmp / "runs"


def test_trials_are_nested_mlflow_runs_under_the_study(study):
    from mlflow import MlflowClient

    tmp, _, result, _ = study
    client = MlflowClient(tracking_uri=f"sqlite:///{(tmp / 'runs' / 'mlflow.db').as_posix()}")
    parent = client.get_run(result["parent_run_id"])
    assert parent.data.tags["hpo.study"] == "tiny" and parent.data.tags["stage"] == "hpo"
    assert parent.data.params["n_trials"] == "4" and parent.data.params["sampler"] == "tpe (seed 3)"
    assert parent.data.params["pruner"] == "MedianPruner(n_startup_trials=1, n_warmup_steps=0)"
    assert parent.data.metrics["best_trial_number"] == result["best"]["number"]
    assert parent.data.metrics["best_trial_value"] == pytest.approx(result["best"]["value"])
    assert {"best_trial_config.yaml", "optimization_history.png", "param_importances.png", "trials.csv"} <= \
        {a.path for a in client.list_artifacts(parent.info.run_id)}
    for t in result["trials"]:
        if t["state"] not in ("complete", "pruned"):
            continue
        child = client.get_run(t["mlflow_run_id"])
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["trial_number"] == str(t["number"])
        assert child.data.tags["trial_status"] == ("pruned" if t["state"] == "pruned" else "completed")
        assert child.data.tags["hpo.param.training.learning_rate"] == str(t["params"]["training.learning_rate"])
        assert child.data.params["training.learning_rate"] == str(t["params"]["training.learning_rate"])
        assert len(client.get_metric_history(child.info.run_id, "val_loss")) >= 1
        assert "best_val_loss" in child.data.metrics


def test_search_files_are_checked_with_paths(tmp_path):
    def load(space, *overrides):
        path = tmp_path / "s.yaml"
        path.write_text(yaml.safe_dump({"hpo": {"search_space": space}}))
        return load_search(path, list(overrides))

    opts = load({"training.learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}}, "hpo.n_trials=5",
                "hpo.search_space.training.learning_rate.low=2e-5", "hpo.study_name=exp-1")
    assert (opts.n_trials, opts.study_name, opts.search_space["training.learning_rate"]["low"]) == (5, "exp-1", 2e-5)
    for space, overrides, message in [
        ({"training.learning_rate": {"low": 0.0, "high": 1e-3, "log": True}}, [], "$.hpo.search_space.training.learning_rate.low: a log scale needs low > 0"),
        ({"lora.r": {"low": 8, "high": 4}}, [], "$.hpo.search_space.lora.r: low (8) is above high (4)"),
        ({"lora.r": {"lo": 1}}, [], "$.hpo.search_space.lora.r.lo: unknown key"),
        ({"lora.r": {"low": 1}}, [], "$.hpo.search_space.lora.r: give low and high"),
        ({"lora.r": {"low": 1, "high": 2}}, ["hpo.n_trails=3"], "$.hpo.n_trails: unknown key (did you mean 'n_trials'?)"),
        ({"lora.r": {"low": 1, "high": 2}}, ["hpo.pruner.type=hyperband"], "$.hpo.pruner.type: expected one of median, none"),
        ({}, [], "$.hpo.search_space: name at least one config path"),
    ]:
        with pytest.raises(ConfigError) as err:
            load(space, *overrides)
        assert message in str(err.value), str(err.value)
    from verifily_optuna.search import check_paths

    opts = load({"training.learnin_rate": {"low": 1e-5, "high": 1e-3}})
    with pytest.raises(ConfigError, match=r"\$\.hpo\.search_space\.training\.learnin_rate: not a field"):
        check_paths({"task": "sft", "base_model": "org/m", "data_paths": {"train": "t.jsonl"}}, opts)


def test_hpo_help_lists_the_command_and_imports_nothing_heavy(tmp_path):
    import subprocess
    import sys

    probe = ("import sys\nfrom verifily_core.cli import cli\n"
             "try:\n    cli.main(args=sys.argv[1:], prog_name='verifily')\nexcept SystemExit as e:\n    code = e.code\n"
             "heavy = [m for m in ('torch', 'transformers', 'optuna', 'mlflow') if m in sys.modules]\n"
             "print('HEAVY=' + ','.join(heavy))\nsys.exit(code or 0)\n")
    for args in (["hpo", "--help"], ["--help"]):
        res = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                             env={**__import__("os").environ, "VERIFILY_CACHE_DIR": str(tmp_path)})
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip().splitlines()[-1] == "HEAVY="
        assert ("hpo" in res.stdout) and ("Search hyperparameters with Optuna" in res.stdout)


def test_the_documented_example_search_checks_against_the_example_config():
    from verifily_core.config_loading import read_config_file
    from verifily_optuna.search import check_paths

    root = Path(__file__).resolve().parent.parent
    opts = load_search(root / "examples" / "hpo" / "hpo.yaml", ["hpo.n_trials=5"])
    assert opts.n_trials == 5 and len(opts.search_space) == 9
    check_paths(read_config_file(root / "examples" / "classification-encoder.yaml"), opts)
    assert (root / "examples" / "hpo" / "hpo.yaml").read_text().split("\n", 1)[1] in (root / "docs" / "hpo.md").read_text()


def test_a_failing_trial_is_one_line_and_a_multi_process_config_is_refused(tmp_path, verifily_tiny_bert_dir,
                                                                          verifily_subprocess):
    """A trial whose suggested config is invalid stops the study with exit 1 and one error line
    (Optuna's own report of the failed trial, with its traceback, only under --verbose); a config
    that trains in several processes is refused before any trial."""
    config = _train_config(tmp_path, verifily_tiny_bert_dir)
    search = tmp_path / "hpo.yaml"
    search.write_text(yaml.safe_dump({"hpo": {"study_name": "bad", "n_trials": 1, "metric": "loss",
                                              "search_space": {"training.learning_rate": {"choices": [1.5]}}}}))
    base = ("hpo", "--config", config, "--search", search, "tracking.mlflow.enabled=false")
    res = verifily_subprocess(*base, cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stderr.splitlines() == ["Trial 0: training.learning_rate=1.5",
                                       "Error: $.training.learning_rate: must be in (0, 1)"], res.stderr
    verbose = verifily_subprocess(*base, "hpo.study_name=bad2", "--verbose", cwd=tmp_path)
    assert verbose.returncode == 1 and "Trial 0 failed with parameters" in verbose.stderr, verbose.stderr
    assert "Traceback" in verbose.stderr

    res = verifily_subprocess(*base, "compute.num_processes=2", "hpo.study_name=two", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stderr.strip().splitlines() == [
        "Error: $.compute.num_processes: hpo trains its trials one at a time, in this process; set "
        "compute.num_processes=1 (and compute.num_nodes=1) for the search, then train the best trial's config "
        "with `verifily train --nproc N`"], res.stderr
    assert not (tmp_path / "hpo" / "two").exists()  # refused before the study was created
