"""Every example config validates, and runs offline against the tiny models of the documented command."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import textwrap
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


def _section(path: Path, title: str) -> str:
    text = path.read_text()
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start:end if end > 0 else len(text)]


def _blocks(text: str, lang: str) -> list[str]:
    parts = text.split(f"```{lang}\n")[1:]
    return [textwrap.dedent(p.split("```")[0]) for p in parts]


@pytest.mark.slow
def test_the_getting_started_csv_path_runs_as_written(workdir, monkeypatch, tmp_path):
    """Every command of the CSV path, as the page writes it, with a tiny model put in for the
    Hub id and a run id for `<run_id>`."""
    import yaml

    section = _section(ROOT / "docs" / "getting-started.md", "## Your own data, from a CSV file")
    commands = [line for block in _blocks(section, "bash")
                for line in block.replace("\\\n", " ").splitlines() if line.startswith("verifily ")]
    assert [c.split()[1] for c in commands] == ["dataset", "dataset", "train", "train", "runs", "predict", "export"]
    (config,) = _blocks(section, "yaml")
    cfg = yaml.safe_load(config)
    cfg["base_model"] = "examples/models/tiny-bert"
    monkeypatch.chdir(workdir)
    (workdir / "train.yaml").write_text(yaml.safe_dump(cfg))
    run_dir = None
    for command in commands:
        args = shlex.split(command)[1:]
        if args[0] == "train":
            args += ["training.num_epochs=1", "eval.bootstrap_resamples=50"]
        if run_dir is not None:
            args = [a.replace("runs/<run_id>", str(run_dir)) for a in args]
        res = _invoke(workdir, monkeypatch, *args)
        assert res.exit_code == 0, f"{command}\n{res.output}"
        if args[0] == "dataset" and args[1] == "show":
            assert "reviews@v1" in res.output and "test" in res.output
        if args[0] == "train" and "--dry-run" not in args:
            assert "Sliced by [source" in res.stdout
            (run_dir,) = [p for p in (workdir / "runs").iterdir() if not p.name.startswith(".")]
        if args[0] == "predict":
            assert res.output.split()[0] in ("pos", "neg")
    assert (workdir / "exported" / "reviews-v1" / "model.safetensors").is_file()
    manifest = json.loads((workdir / "store" / "reviews" / "v1" / "manifest.json").read_text())
    assert manifest["split"]["stratify_by"] == ["label", "tags.source"]
