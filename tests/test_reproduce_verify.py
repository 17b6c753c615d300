"""`verifily reproduce --verify-only`: every hash recomputed from disk; tampering is caught and named."""

from __future__ import annotations

import json
import shutil
import stat

import pytest
from click.testing import CliRunner

from verifily_core.cli import cli
from verifily_core.testing import make_sft_rows, write_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory, verifily_tiny_llama_dir):
    """One tiny completed run trained from data_paths."""
    import yaml

    root = tmp_path_factory.mktemp("verify")
    data = root / "data"
    write_jsonl(data / "train.jsonl", make_sft_rows(16, seed=1))
    cfg = {"task": "sft", "base_model": str(verifily_tiny_llama_dir), "data_paths": {"train": str(data / "train.jsonl")},
           "training": {"max_steps": 2, "batch_size": 4, "gradient_accumulation_steps": 1, "max_seq_length": 48},
           "lora": {"r": 4, "alpha": 8}, "eval": {"enabled": False}, "output": {"dir": str(root / "runs")}}
    (root / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(cli, ["train", "--config", str(root / "c.yaml")])
    assert res.exit_code == 0, res.output
    return next((root / "runs").iterdir()), data / "train.jsonl"


@pytest.fixture
def run_copy(trained, tmp_path):
    """A writable copy of the run; the data file is restored afterwards."""
    run, data_file = trained
    dst = tmp_path / run.name
    shutil.copytree(run, dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)
    original = data_file.read_bytes()
    yield dst, data_file
    data_file.write_bytes(original)


def verify(run, *extra):
    return CliRunner().invoke(cli, ["reproduce", "--run", str(run), "--verify-only", *extra])


def flip_byte(path, offset=-10):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def status_lines(output):
    return {line.split(":")[0].strip(): line for line in output.splitlines()
            if line.strip().startswith(("Config hash:", "Data hash:", "Env hash:", "Artifacts:"))}


def test_intact_run_matches(run_copy):
    res = verify(run_copy[0])
    assert res.exit_code == 0, res.output
    lines = status_lines(res.output)
    assert set(lines) == {"Config hash", "Data hash", "Env hash", "Artifacts"}
    assert all(line.rstrip().endswith("MATCH") for line in lines.values())
    assert "Verdict: MATCH" in res.output


def test_one_byte_of_the_adapter(run_copy):
    flip_byte(run_copy[0] / "adapter" / "adapter_model.safetensors")
    res = verify(run_copy[0])
    assert res.exit_code == 5
    assert "MISMATCH (adapter/adapter_model.safetensors changed)" in status_lines(res.output)["Artifacts"]
    assert status_lines(res.output)["Config hash"].rstrip().endswith("MATCH")
    assert "Verdict: MISMATCH" in res.output


@pytest.mark.parametrize("target", ["outside.bin", "adapter/adapter_model.safetensors"])
def test_a_symlink_added_to_the_run_is_caught(run_copy, tmp_path, target):
    """hash_tree hashes regular files only, so a link (to anything) must be reported, not ignored."""
    (tmp_path / "outside.bin").write_bytes(b"weights from elsewhere")
    link = run_copy[0] / "adapter" / "extra.safetensors"
    link.symlink_to(tmp_path / "outside.bin" if target == "outside.bin" else run_copy[0] / target)
    res = verify(run_copy[0])
    assert res.exit_code == 5
    assert "adapter/extra.safetensors is a link or special file" in status_lines(res.output)["Artifacts"]


def test_config_yaml_edit(run_copy):
    path = run_copy[0] / "config.yaml"
    path.write_text(path.read_text().replace("seed: 42", "seed: 43"))
    res = verify(run_copy[0])
    assert res.exit_code == 5
    assert "MISMATCH (config.yaml changed: it now hashes to sha256:" in status_lines(res.output)["Config hash"]
    assert "config.yaml changed" in status_lines(res.output)["Artifacts"]


def test_one_byte_of_config_yaml_that_keeps_it_valid(run_copy):
    path = run_copy[0] / "config.yaml"
    text = path.read_text()
    assert "max_steps: 2" in text
    path.write_text(text.replace("max_steps: 2", "max_steps: 3"))
    res = verify(run_copy[0])
    assert res.exit_code == 5 and "config.yaml changed" in status_lines(res.output)["Config hash"]


def test_dataset_file_change(run_copy):
    run, data_file = run_copy
    flip_byte(data_file, 20)
    res = verify(run)
    assert res.exit_code == 5
    line = status_lines(res.output)["Data hash"]
    assert f"MISMATCH (train file {data_file} changed (sha256:" in line
    assert status_lines(res.output)["Artifacts"].rstrip().endswith("MATCH")


def test_missing_dataset_file(run_copy):
    run, data_file = run_copy
    data_file.unlink()
    res = verify(run)
    assert res.exit_code == 5 and f"train file {data_file} is missing" in res.output


def test_added_and_removed_files_are_named(run_copy):
    run = run_copy[0]
    (run / "notes.txt").write_text("hello")
    (run / "tokenizer" / "tokenizer_config.json").unlink()
    res = verify(run)
    line = status_lines(res.output)["Artifacts"]
    assert "tokenizer/tokenizer_config.json missing" in line and "notes.txt added" in line


def test_hash_record_must_agree_with_run_meta(run_copy):
    run = run_copy[0]
    hashes = json.loads((run / "hashes.json").read_text())
    hashes["reproducibility_hash"] = "sha256:" + "0" * 64
    (run / "hashes.json").write_text(json.dumps(hashes))
    res = verify(run)
    assert res.exit_code == 5 and "hashes.json reproducibility_hash differs from run_meta.json" in res.output


def test_environment_only_is_a_partial_match(run_copy, monkeypatch):
    import verifily_core.environment as environment

    real = environment.collect_environment

    def other_torch(device="cpu", extra_info=None, packages=()):
        env = real(device, extra_info, packages)
        env["hashed"]["packages"]["torch"] = "9.9.9"
        return env

    monkeypatch.setattr(environment, "collect_environment", other_torch)
    res = verify(run_copy[0])
    assert res.exit_code == 6
    assert " vs 9.9.9)" in status_lines(res.output)["Env hash"] and "MISMATCH (torch " in res.output
    assert "Verdict: PARTIAL MATCH (environment differs)" in res.output
    assert "Note: Metric differences may occur due to environment mismatch." in res.output
    doc = json.loads(verify(run_copy[0], "--format", "json").stdout)
    assert doc["verdict"] == "PARTIAL MATCH" and doc["exit_code"] == 6


def test_unsealed_runs_are_refused(run_copy):
    run = run_copy[0]
    meta = json.loads((run / "run_meta.json").read_text())
    meta["status"] = "running"
    (run / "run_meta.json").write_text(json.dumps(meta))
    res = verify(run)
    assert res.exit_code == 5 and "only completed (sealed) runs can be verified" in res.stderr


def test_python_api(run_copy):
    import verifily_core

    result = verifily_core.reproduce(str(run_copy[0]), verify_only=True)
    assert result.verdict == "MATCH" and result.exit_code == 0
    assert [c.name for c in result.checks] == ["Config hash", "Data hash", "Env hash", "Artifacts", "Eval files",
                                                "Base model"]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", ""])
def test_a_corrupted_environment_record_is_a_mismatch_not_a_partial_match(run_copy, content):
    run, _ = run_copy
    (run / "environment.json").write_text(content)
    res = verify(run)
    assert res.exit_code == 5, res.output
    lines = status_lines(res.output)
    assert "MISMATCH" in lines["Env hash"] and "environment.json" in lines["Env hash"]
    assert "environment.json changed" in lines["Artifacts"] and "Traceback" not in res.output


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "null"])
def test_a_corrupted_hash_record_is_one_clear_line(run_copy, content):
    run, _ = run_copy
    (run / "hashes.json").write_text(content)
    res = verify(run)
    assert res.exit_code == 5
    assert "hashes.json" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "unexpected" not in res.output and "Traceback" not in res.output
