"""`verifily reproduce --verify-only`: every hash recomputed from disk; tampering is caught and named."""

from __future__ import annotations

import json
import stat

import pytest
from click.testing import CliRunner

from verifily_core.cli import cli
from verifily_core.testing import make_sft_rows, write_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_llama_dir):
    """One tiny completed run, copied fresh for each test."""
    import yaml

    root = tmp_path_factory.mktemp("verify")
    data = root / "data"
    write_jsonl(data / "train.jsonl", make_sft_rows(16, seed=1))
    cfg = {"task": "sft", "base_model": str(tiny_llama_dir), "data_paths": {"train": str(data / "train.jsonl")},
           "training": {"max_steps": 2, "batch_size": 4, "gradient_accumulation_steps": 1, "max_seq_length": 48},
           "lora": {"r": 4, "alpha": 8}, "eval": {"enabled": False}, "output": {"dir": str(root / "runs")}}
    (root / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(cli, ["train", "--config", str(root / "c.yaml")])
    assert res.exit_code == 0, res.output
    return next((root / "runs").iterdir()), data / "train.jsonl"


@pytest.fixture
def run_copy(trained, tmp_path):
    import shutil

    run, data_file = trained
    dst = tmp_path / run.name
    shutil.copytree(run, dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)
    original = data_file.read_bytes()
    yield dst, data_file
    data_file.write_bytes(original)


def verify(run):
    return CliRunner().invoke(cli, ["reproduce", "--run", str(run), "--verify-only"])


def flip_byte(path, offset=-10):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_intact_run_matches(run_copy):
    res = verify(run_copy[0])
    assert res.exit_code == 0, res.output
    assert res.output.count("MATCH") == 5 and "Verdict: MATCH" in res.output


def test_one_byte_of_the_adapter(run_copy):
    flip_byte(run_copy[0] / "adapter" / "adapter_model.safetensors")
    res = verify(run_copy[0])
    assert res.exit_code == 5
    assert "Artifacts:" in res.output and "adapter/adapter_model.safetensors changed" in res.output
    assert "Verdict: MISMATCH" in res.output


def test_config_yaml_edit(run_copy):
    path = run_copy[0] / "config.yaml"
    path.write_text(path.read_text().replace("seed: 42", "seed: 43"))
    res = verify(run_copy[0])
    assert res.exit_code == 5
    assert "Config hash:" in res.output and "config.yaml now hashes to sha256:" in res.output
    assert "config.yaml changed" in res.output


def test_dataset_file_change(run_copy):
    run, data_file = run_copy
    flip_byte(data_file, 20)
    res = verify(run)
    assert res.exit_code == 5
    assert f"train file {data_file} changed" in res.output


def test_environment_only_is_a_partial_match(run_copy, monkeypatch):
    import verifily_core.reproduce as rep

    real = rep.collect_environment

    def other_torch(device="cpu"):
        env = real(device)
        env["hashed"]["packages"]["torch"] = "9.9.9"
        return env

    monkeypatch.setattr(rep, "collect_environment", other_torch)
    res = verify(run_copy[0])
    assert res.exit_code == 6
    assert "Env hash:" in res.output and "torch " in res.output and " vs 9.9.9" in res.output
    assert "Verdict: PARTIAL MATCH (environment differs)" in res.output


def test_runs_lists_the_run(trained):
    run, _ = trained
    res = CliRunner().invoke(cli, ["runs", "--runs-dir", str(run.parent), "--format", "json"])
    rows = json.loads(res.stdout)
    assert rows[0]["run_id"] == run.name and rows[0]["status"] == "completed"
