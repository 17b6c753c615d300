"""CLI skeleton: help, version, exit codes, one-line errors, dry-run plan, managed stub, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from verifily_core import __version__
from verifily_core.cli import COMMANDS, cli

CONFIG = "task: sft\nbase_model: org/model\ndata_paths:\n  train: data/train.jsonl\n"


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    return path


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_version():
    res = invoke("--version")
    assert res.exit_code == 0 and __version__ in res.output


@pytest.mark.parametrize("command", [[]] + [[name] for name in COMMANDS])
def test_help_on_every_command(command):
    res = invoke(*command, "--help")
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.output


def test_train_help_lists_every_flag_of_cli_design():
    res = invoke("train", "--help")
    for flag in ("--config", "--dataset", "--base-model", "--task", "--output-dir", "--device", "--mode",
                 "--epochs", "--batch-size", "--lr", "--lora-r", "--quantization", "--seed", "--name",
                 "--dry-run", "--resume", "--verbose"):
        assert flag in res.output


def test_global_flags():
    res = invoke("--help")
    for flag in ("--hf-token", "--verifily-token", "--log-level", "--no-color", "--version"):
        assert flag in res.output


def test_dry_run_shows_overrides_and_flags(config):
    res = invoke("train", "--config", config, "--lr", "1e-4", "training.num_epochs=5", "--dry-run", "--no-data-check")
    assert res.exit_code == 0, res.output
    assert "LR:           0.0001" in res.output
    assert "Epochs:       5" in res.output
    assert "Config hash:  sha256:" in res.output


def test_dry_run_json_and_hash_unchanged_by_output_dir_and_name(config):
    def plan(*extra):
        res = invoke("train", "--config", config, "--dry-run", "--no-data-check", "--format", "json", *extra)
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    base = plan()
    moved = plan("--output-dir", "elsewhere/", "--name", "readable")
    assert moved["output_dir"] == "elsewhere/" and moved["name"] == "readable"
    assert moved["config_hash"] == base["config_hash"]
    assert plan("--lr", "0.001")["config_hash"] != base["config_hash"]


@pytest.mark.parametrize(
    "yaml_text, extra, message",
    [
        ("task: sft\nbase_model: m\ndata_paths: {train: t}\ntraining: {epocs: 3}\n", [], "$.training.epocs: unknown key"),
        ("task: sft\nbase_model: m\ndata_paths: {train: t}\ntraining: {learning_rate: fast}\n", [],
         "$.training.learning_rate: expected float"),
        ("task: summarize\nbase_model: m\ndata_paths: {train: t}\n", [], "$.task: unknown task 'summarize'"),
        ("task: sft\nbase_model: m\n", [], "$.dataset_version: set either dataset_version"),
        (CONFIG, ["training.lr=3"], "$.training.lr: unknown key"),
        (CONFIG, ["--mode", "cloud"], "$.compute.mode: unknown backend 'cloud'; available: local, managed"),
    ],
)
def test_config_errors_exit_1_with_one_line(tmp_path, yaml_text, extra, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    res = invoke("train", "--config", path, "--dry-run", *extra)
    assert res.exit_code == 1
    assert message in res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def test_quantization_without_bitsandbytes_exits_1(config, tmp_path):
    # a sitecustomize that hides bitsandbytes from importlib in the child process
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import importlib.util as u\n_f = u.find_spec\n"
        "u.find_spec = lambda n, *a, **k: None if n == 'bitsandbytes' else _f(n, *a, **k)\n"
    )
    import os

    env = dict(os.environ, PYTHONPATH=str(hide))
    res = subprocess.run([sys.executable, "-c", "from verifily_core.cli import main; main()", "train", "--config",
                          str(config), "--quantization", "4bit", "--dry-run"], env=env, capture_output=True, text=True)
    assert res.returncode == 1
    assert "$.lora.quantization: '4bit' needs bitsandbytes" in res.stderr
    assert "Traceback" not in res.stderr


def test_verbose_shows_traceback(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: sft\nbase_model: m\n")
    quiet = invoke("train", "--config", path, "--dry-run")
    loud = invoke("train", "--config", path, "--dry-run", "--verbose")
    assert quiet.exit_code == loud.exit_code == 1
    assert "Traceback" not in quiet.stderr and "Traceback" in loud.stderr


def test_missing_config_file(tmp_path):
    res = invoke("train", "--config", tmp_path / "nope.yaml", "--dry-run")
    assert res.exit_code == 1 and "config file not found" in res.stderr


def test_managed_mode_stub_exits_10(config):
    res = invoke("train", "--config", config, "--mode", "managed")
    assert res.exit_code == 10
    assert res.stderr.strip() == "Managed mode is not yet available. Coming soon."


def test_plugins_json_lists_builtins():
    res = invoke("plugins", "--format", "json")
    assert res.exit_code == 0
    names = {r["name"] for r in json.loads(res.stdout)}
    assert {"sft", "classification", "causal_lm", "seq2seq", "qlora", "local", "managed"} <= names


HEAVY = ("torch", "transformers", "peft", "evaluate", "bitsandbytes", "accelerate", "datasets", "trl", "mlflow", "optuna")


@pytest.mark.parametrize("args", [["--help"], ["plugins"], ["train", "--dry-run"], ["train", "--dry-run", "--no-data-check"],
                                  ["train", "--help"], ["push", "--help"],
                                  ["train", "--dry-run", "tracking.mlflow.enabled=true", "--report-to", "tensorboard"],
                                  ["reproduce", "--help"]])
def test_light_commands_import_no_heavy_library(tmp_path, args):
    """Neither the CLI nor a dry run (tracking on included) imports torch, transformers, MLflow or Optuna."""
    from verifily_core.testing.data import make_sft_rows, write_jsonl

    (tmp_path / "train.yaml").write_text(CONFIG)
    write_jsonl(tmp_path / "data" / "train.jsonl", make_sft_rows(6))  # the dry run reads it
    probe = (
        "import sys\nfrom verifily_core.cli import cli\n"
        "try:\n    cli.main(args=sys.argv[1:], prog_name='verifily')\nexcept SystemExit as e:\n    code = e.code\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\nsys.exit(code or 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", probe, *args], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "HEAVY="


def test_a_reader_closing_the_pipe_early_is_no_error():
    """`verifily plugins | head -1`: the closed pipe ends the command quietly with 141, no error line."""
    proc = subprocess.Popen([sys.executable, "-c", "from verifily_core.cli import main; main()", "plugins"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line is written
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert stderr == ""


@pytest.mark.parametrize("args", [["train", "--epochs", "abc"], ["trian"], ["--bogus"], ["compare", "--nope"]])
def test_usage_errors_are_configuration_errors(args):
    """docs/cli.md reserves 2 for data errors: a bad command line exits 1 with click's one-line reason."""
    from click.testing import CliRunner

    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1, res.output
    assert "Error:" in res.stderr and "Traceback" not in res.stderr
