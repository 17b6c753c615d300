"""Full reproduction on CPU: retraining (or re-evaluating) a tiny run gives the same metrics."""

from __future__ import annotations

import json
import shutil
import stat

import pytest
import yaml
from click.testing import CliRunner

from verifily_core.cli import cli
from verifily_core.evaluation.seal import seal_eval
from verifily_core.plugins import load_registries
from verifily_core.testing import make_sft_rows, write_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def original(tmp_path_factory, verifily_tiny_llama_dir):
    """A tiny run on ds@v1 from a dataset store, evaluated at the end of training, sliced by source."""
    from verifily_core.datasets import DatasetStore

    root = tmp_path_factory.mktemp("repro")
    write_jsonl(root / "train.jsonl", make_sft_rows(16, seed=1))
    write_jsonl(root / "test.jsonl", make_sft_rows(9, seed=3))
    DatasetStore(root / "store").create("ds", "v1", "sft", {"train": root / "train.jsonl", "test": root / "test.jsonl"},
                                        registries=load_registries())
    cfg = {"task": "sft", "base_model": str(verifily_tiny_llama_dir), "dataset_version": "ds@latest",
           "dataset_store": str(root / "store"),
           "training": {"max_steps": 3, "batch_size": 4, "gradient_accumulation_steps": 1, "max_seq_length": 48,
                        "learning_rate": 0.01},
           "lora": {"r": 4, "alpha": 8}, "data_checks": {"leakage": "off"},
           "eval": {"metrics": ["token_f1", "exact_match", "loss"], "slice_by_tags": ["source"], "max_new_tokens": 6, "bootstrap_resamples": 50, "min_slice_size": 1,
                    "hard_examples": 3},
           "output": {"dir": str(root / "runs")}}
    (root / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(cli, ["train", "--config", str(root / "c.yaml")])
    assert res.exit_code == 0, res.output
    run = next((root / "runs").iterdir())
    assert (run / "eval" / "eval_results.json").is_file()
    return run


def reproduce(*args):
    return CliRunner().invoke(cli, ["reproduce", *map(str, args)])


def test_retraining_reproduces_every_metric_exactly(original, tmp_path):
    res = reproduce("--run", original, "--mode", "train", "--output-dir", tmp_path / "again", "--tolerance", "1e-6")
    assert res.exit_code == 0, res.output
    assert "Verdict: REPRODUCIBLE (all" in res.output
    new = next(p for p in (tmp_path / "again").iterdir() if (p / "run_meta.json").is_file())
    assert json.loads((new / "run_meta.json").read_text())["name"] == f"reproduce-{original.name}"
    report = json.loads((new / "eval" / "reproduce.json").read_text())
    assert report["verdict"] == "REPRODUCIBLE" and report["reproduced_run"] == new.name
    rows = {r["metric"]: r for r in report["metrics"]}
    assert {"train_loss", "train_steps", "test_token_f1", "test_loss", "test_token_f1[source=human]"} <= set(rows)
    assert "train_runtime_s" not in rows
    assert all(r["within_tolerance"] and (r["delta"] is None or abs(r["delta"]) <= 1e-6) for r in rows.values())
    assert rows["train_loss"]["original"] == pytest.approx(rows["train_loss"]["reproduced"], abs=1e-6)
    # `ds@latest` is pinned to the version the run used
    assert any("pinned to ds@v1" in n for n in report["notes"])
    assert json.loads((new / "run_meta.json").read_text())["hashes"]["data_hash"] == \
        json.loads((original / "run_meta.json").read_text())["hashes"]["data_hash"]


def test_reevaluating_the_adapter_reproduces_the_evaluation(original, tmp_path):
    res = reproduce("--run", original, "--mode", "eval", "--output-dir", tmp_path / "re-eval", "--format", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["verdict"] == "REPRODUCIBLE" and doc["mode"] == "eval"
    assert {r["metric"] for r in doc["metrics"]} >= {"test_token_f1", "test_exact_match[source=synthetic]"}
    assert all(r["delta"] == 0 or r["delta"] is None for r in doc["metrics"])
    assert json.loads((tmp_path / "re-eval" / "reproduce.json").read_text())["verdict"] == "REPRODUCIBLE"


def writable_copy(run, dst):
    shutil.copytree(run, dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)
    return dst


def test_a_metric_outside_the_tolerance_is_not_reproducible(original, tmp_path):
    run = writable_copy(original, tmp_path / "runs" / original.name)
    path = run / "eval" / "eval_results.json"
    doc = json.loads(path.read_text())
    doc["overall"]["metrics"]["token_f1"]["value"] += 0.01  # as if the recorded evaluation had been different
    path.write_text(json.dumps(doc))
    res = reproduce("--run", run, "--mode", "eval", "--tolerance", "0.005")
    assert res.exit_code == 5 and "Eval files MISMATCH (eval/eval_results.json changed" in res.stderr  # not sealed
    seal_eval(run / "eval", run, doc["run_id"])
    res = reproduce("--run", run, "--mode", "eval", "--tolerance", "0.005")
    assert res.exit_code == 5, res.output
    bad = [line for line in res.output.splitlines() if line.rstrip().endswith("NO")]
    assert len(bad) == 1 and "test_token_f1 " in bad[0] and "-0.010000" in bad[0]
    assert "Verdict: NOT REPRODUCIBLE (1 of" in res.output
    assert (tmp_path / "runs" / f"{original.name}.reproduce-eval" / "reproduce.json").is_file()


def test_changed_inputs_are_refused_before_retraining(original, tmp_path):
    run = writable_copy(original, tmp_path / "runs" / original.name)
    path = run / "config.yaml"
    path.write_text(path.read_text().replace("max_steps: 3", "max_steps: 4"))
    res = reproduce("--run", run, "--mode", "train")
    assert res.exit_code == 5
    assert "Config hash MISMATCH (config.yaml changed" in res.stderr and "cannot be reproduced" in res.stderr
    assert not any(p.name.startswith("run_") for p in (tmp_path / "runs").iterdir() if p != run)


def test_verify_finds_moved_data_in_the_store(original, tmp_path):
    run = writable_copy(original, tmp_path / "runs" / original.name)
    hashes = json.loads((run / "hashes.json").read_text())
    for entry in hashes["data_files"].values():  # as if the recorded paths were relative to another directory
        entry["path"] = "elsewhere/" + entry["path"].rsplit("/", 1)[-1]
    (run / "hashes.json").write_text(json.dumps(hashes))
    seal_eval(run / "eval", run, run.name)  # the evaluation is sealed against hashes.json
    res = reproduce("--run", run, "--verify-only")
    assert res.exit_code == 0, res.output
    assert "Verdict: MATCH" in res.output
