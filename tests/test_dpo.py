"""The ``dpo`` task end to end on a tiny Llama, through the command line only: ``verifily train``
with real TRL on two versions of a tagged preference dataset, then eval sliced by tags, hard
examples, compare and reproduce, which know the task from its declarations alone."""

from __future__ import annotations

import json
import math
import shutil
import stat
from collections import Counter, defaultdict

import pytest
import yaml

from verifily_core.testing import write_jsonl
from verifily_dpo.testing import make_preference_rows

pytestmark = pytest.mark.slow

LORA = {"r": 4, "alpha": 8, "dropout": 0.0}
N_TRAIN, N_TEST = 24, 18


@pytest.fixture(scope="module")
def runs(tmp_path_factory, verifily_tiny_llama_dir, verifily_cli):
    """Runs trained on prefs@v1 (the ai_contaminated pairs flipped) and prefs@v2 (clean), evaluated on one test split."""
    from verifily_core.datasets import DatasetStore
    from verifily_core.plugins import load_registries

    root = tmp_path_factory.mktemp("dpo")
    store = DatasetStore(root / "store")
    test = write_jsonl(root / "test.jsonl", make_preference_rows(N_TEST, seed=3))
    data = {"v1": make_preference_rows(N_TRAIN, seed=1, flip_source="ai_contaminated"),
            "v2": make_preference_rows(N_TRAIN, seed=1)}
    out = {}
    for version, rows in data.items():
        train = write_jsonl(root / f"train_{version}.jsonl", rows)
        store.create("prefs", version, "dpo", {"train": train, "test": test}, registries=load_registries())
        cfg = {"task": "dpo", "base_model": str(verifily_tiny_llama_dir), "dataset_version": f"prefs@{version}",
               "dataset_store": str(root / "store"), "data_checks": {"leakage": "off"},
               "task_options": {"beta": 0.1},
               "training": {"max_steps": 16, "batch_size": 8, "gradient_accumulation_steps": 1, "max_seq_length": 48,
                            "learning_rate": 0.01, "logging_steps": 1},
               "lora": LORA,
               "eval": {"slice_by_tags": ["source"], "bootstrap_resamples": 200, "min_slice_size": 1,
                        "hard_examples": 4},
               "output": {"dir": str(root / "runs"), "name": f"on-{version}"}}
        (root / f"{version}.yaml").write_text(yaml.safe_dump(cfg))
        res = verifily_cli("train", "--config", root / f"{version}.yaml", "--format", "json")
        assert res.exit_code == 0, res.output
        out[version] = root / "runs" / json.loads(res.stdout)["run_id"]
    return {"root": root, "runs": out, "data": data, "test": test}


def predictions(path):
    return [json.loads(line) for line in (path / "predictions.jsonl").read_text().splitlines()]


def test_training_raises_reward_accuracy_on_the_train_set(runs, verifily_cli):
    """Before: the step-0 policy (the model training starts from, assembled as training does) is
    its reference, so every margin is 0 and reward accuracy 0. After 16 steps, most training
    pairs are ranked right and the mean margin is positive."""
    from verifily_core.config import TrainConfig
    from verifily_core.modeling import ModelSource, assemble_model
    from verifily_core.plugins import load_registries

    run, train_rows = runs["runs"]["v2"], runs["data"]["v2"]
    cfg, regs = TrainConfig.from_yaml(run / "config.yaml"), load_registries()
    task = regs.tasks.get("dpo")
    options = task.parse_options(cfg.task_options)
    start = assemble_model(ModelSource(cfg, regs), "cpu", options)
    before = task.predict(start.model.eval(), start.tokenizer, train_rows, start.kind, cfg, options, 8, "cpu")
    before_margins = [p["scores"]["reward_margin"] for p in before]
    assert before_margins == [0.0] * N_TRAIN  # reward accuracy 0, mean margin 0

    out = runs["root"] / "eval_on_train"
    res = verifily_cli("eval", "--run", run, "--test-data", runs["root"] / "train_v2.jsonl", "--output", out)
    assert res.exit_code == 0, res.output
    after = json.loads((out / "eval_results.json").read_text())["overall"]["metrics"]
    print(f"train set: reward_accuracy 0.0 -> {after['reward_accuracy']['value']:.4f}, "
          f"reward_margin 0.0 -> {after['reward_margin']['value']:.4f}")
    assert after["reward_accuracy"]["value"] > 0.75
    assert after["reward_margin"]["value"] > 0.2 and after["reward_margin"]["ci_low"] > 0
    # TRL's own log agrees: the first step's loss is -log sigmoid(0) = log 2, and the loss falls.
    log = [e for e in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if "loss" in e]
    assert log[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert sum(e["loss"] for e in log[-4:]) / 4 < math.log(2) - 0.05


def test_eval_slices_by_source_with_hand_counts(runs, verifily_cli):
    run = runs["runs"]["v2"]
    out = runs["root"] / "eval_sliced"
    res = verifily_cli("eval", "--run", run, "--slice-by", "source", "--output", out)
    assert res.exit_code == 0, res.output
    assert "Sliced by [source]" in res.stdout and "reward_accuracy" in res.stdout
    results = json.loads((out / "eval_results.json").read_text())
    test_rows = [json.loads(line) for line in runs["test"].read_text().splitlines()]
    counts = Counter(r["tags"]["source"] for r in test_rows)
    right = defaultdict(int)
    for p in predictions(out):
        right[p["tags"]["source"]] += p["scores"]["reward_margin"] > 0
        assert p["prediction"] == ("chosen" if p["scores"]["reward_margin"] > 0 else "rejected")
        assert p["scores"]["reward_margin"] == pytest.approx(p["scores"]["chosen_reward"] - p["scores"]["rejected_reward"])
    assert set(results["slices"]) == {f"source={s}" for s in counts}
    for source, n in counts.items():
        block = results["slices"][f"source={source}"]
        assert block["n"] == n == N_TEST // 3
        assert block["metrics"]["reward_accuracy"]["value"] == pytest.approx(right[source] / n)
    assert results["overall"]["n"] == N_TEST


def test_hard_examples_are_the_pairs_ranked_wrong_by_the_most(runs):
    eval_dir = runs["runs"]["v2"] / "eval"
    hard = [json.loads(line) for line in (eval_dir / "hard_examples.jsonl").read_text().splitlines()]
    margins = sorted(p["scores"]["reward_margin"] for p in predictions(eval_dir))
    assert [h["score"] for h in hard] == margins[:4]
    assert hard[0]["input"]["prompt"].startswith("### Instruction:")
    assert json.loads((eval_dir / "eval_results.json").read_text())["hard_examples"]["score"] == "reward_margin"


def test_compare_two_dataset_versions_on_the_main_metric(runs, verifily_cli):
    a, b = runs["runs"]["v1"], runs["runs"]["v2"]
    res = verifily_cli("compare", "--runs", f"{a},{b}", "--metric", "main", "--slice-by", "source", "--format", "json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["metric"] == "reward_accuracy" and d["same_test_set"] is True
    value = {r: json.loads((r / "eval" / "eval_results.json").read_text()) for r in (a, b)}
    overall = {r: value[r]["overall"]["metrics"]["reward_accuracy"]["value"] for r in (a, b)}
    assert d["deltas"][b.name] == pytest.approx(overall[b] - overall[a], abs=1e-9)
    for name in d["slices"]:
        va, vb = (value[r]["slices"][name]["metrics"]["reward_accuracy"]["value"] for r in (a, b))
        assert d["slice_deltas"][name][b.name] == pytest.approx(vb - va, abs=1e-9)
    flipped = sum(r["tags"]["source"] == "ai_contaminated" for r in runs["data"]["v1"])
    assert d["data_changes"][b.name]["train"] == {"added": 0, "removed": 0, "changed": flipped, "retagged": 0}
    margin = verifily_cli("compare", "--runs", f"{a},{b}", "--metric", "margin", "--format", "json")
    assert margin.exit_code == 0 and json.loads(margin.stdout)["metric"] == "reward_margin"


def test_runs_lists_the_main_metrics(runs, verifily_cli):
    v2 = runs["runs"]["v2"]
    value = json.loads((v2 / "eval" / "eval_results.json").read_text())["overall"]["metrics"]["reward_accuracy"]["value"]
    res = verifily_cli("runs", "--runs-dir", runs["root"] / "runs", "--format", "json")
    assert res.exit_code == 0, res.output
    listed = {r["run_id"]: r for r in json.loads(res.stdout)}
    assert listed[v2.name]["metrics"]["test_reward_accuracy"] == pytest.approx(value)
    table = verifily_cli("runs", "--runs-dir", runs["root"] / "runs").stdout
    line = next(x for x in table.splitlines() if x.startswith(v2.name))
    assert f"test_reward_accuracy={value:.4f}" in line and "test_reward_margin=" in line


@pytest.fixture
def run_copy(runs, tmp_path):
    dst = tmp_path / runs["runs"]["v2"].name
    shutil.copytree(runs["runs"]["v2"], dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)
    return dst


def test_reproduce_verifies_and_catches_a_tampered_adapter(run_copy, verifily_cli):
    res = verifily_cli("reproduce", "--run", run_copy, "--verify-only")
    assert res.exit_code == 0, res.output
    assert "Verdict: MATCH" in res.output
    adapter = run_copy / "adapter" / "adapter_model.safetensors"
    data = bytearray(adapter.read_bytes())
    data[-10] ^= 0x01
    adapter.write_bytes(bytes(data))
    res = verifily_cli("reproduce", "--run", run_copy, "--verify-only")
    assert res.exit_code == 5
    assert "MISMATCH (adapter/adapter_model.safetensors changed)" in res.output


def test_bad_rows_and_options_fail_before_training(tmp_path, verifily_subprocess, verifily_tiny_llama_dir):
    rows = make_preference_rows(4, seed=1)
    rows[2]["rejected"] = rows[2]["chosen"]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"task": "dpo", "base_model": str(verifily_tiny_llama_dir),
                                   "data_paths": {"train": str(train)}, "output": {"dir": str(tmp_path / "runs")}}))
    res = verifily_subprocess("train", "--config", cfg)
    assert res.returncode == 2
    assert f"{train}:3: fields 'chosen' and 'rejected' are identical" in res.stderr
    res = verifily_subprocess("train", "--config", cfg, "--dry-run", "task_options.loss_type=kto")
    assert res.returncode == 1
    assert "$.task_options.loss_type: expected one of sigmoid, hinge, ipo, got 'kto'" in res.stderr
