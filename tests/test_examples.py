"""Every example config validates, and runs offline against the tiny models of the documented command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from verifily_core.cli import cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A copy of examples/ with the tiny models built by the documented helper command."""
    wd = tmp_path_factory.mktemp("examples")
    shutil.copytree(ROOT / "examples", wd / "examples", ignore=shutil.ignore_patterns("models"))
    subprocess.run([sys.executable, "-m", "verifily_core.testing.tiny_models", "--out", str(wd / "examples" / "models"),
                    "--kind", "llama,t5,bert,deberta-v2"], check=True, capture_output=True)
    return wd


def _invoke(workdir, monkeypatch, *args):
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("VERIFILY_DATASETS_DIR", str(workdir / "store"))
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_there_are_examples_for_each_documented_setup():
    assert {"sft-causal-lm.yaml", "sft-seq2seq.yaml", "sft-chat.yaml", "qlora-4bit.yaml", "dataset-version.yaml",
            "classification-encoder.yaml", "classification-causal-lm.yaml", "dpo.yaml"} <= set(EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_trains_and_evaluates_offline(workdir, monkeypatch, name):
    text = (ROOT / "examples" / name).read_text()
    assert "A real user puts a Hub id here" in text
    if "dataset_version:" in text:
        res = _invoke(workdir, monkeypatch, "dataset", "create", "--id", "ds_example", "--version", "v1", "--task",
                      "sft", "--from-dir", "examples/data/sft")
        assert res.exit_code in (0, 2), res.output  # 2: already created by an earlier parametrization
    dry = _invoke(workdir, monkeypatch, "train", "--config", f"examples/{name}", "--dry-run")
    assert dry.exit_code == 0, dry.output
    res = _invoke(workdir, monkeypatch, "train", "--config", f"examples/{name}", "training.max_steps=2",
                  "eval.bootstrap_resamples=50", "--output-dir", f"runs_{name}")
    assert res.exit_code == 0, res.output
    assert "Run completed:" in res.stdout and "Sliced by [source" in res.stdout
