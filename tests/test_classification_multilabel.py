"""Multi-label classification (rows with ``labels: [..]``): row and dataset checks with
``file:line``, threshold tuning by hand, and end to end on a tiny Llama: training lowers the
loss, the metrics equal a hand computation from the saved predictions, slices, hard examples,
``verifily compare`` and ``verifily predict``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from verifily_core.api import train
from verifily_core.cli import cli
from verifily_core.errors import ConfigError
from verifily_core.plugins import load_registries
from verifily_core.testing import make_classification_rows, make_multilabel_rows, write_jsonl

from verifily_classification.multilabel import GRID, micro_f1_at, tune_threshold

LABELS = ["fruit", "home", "water"]


def _data(tmp_path: Path, train_rows=None, val=True, test_rows=None) -> dict[str, str]:
    data = tmp_path / "data"
    paths = {"train": write_jsonl(data / "train.jsonl", train_rows or make_multilabel_rows(96, seed=1)),
             "test": write_jsonl(data / "test.jsonl", test_rows or make_multilabel_rows(48, seed=3))}
    if val:
        paths["val"] = write_jsonl(data / "val.jsonl", make_multilabel_rows(32, seed=2))
    return {split: str(p) for split, p in paths.items()}


def _config(tmp_path: Path, model_dir: Path, epochs: int = 10, data=None, **sections) -> dict:
    cfg = {"task": "classification", "base_model": str(model_dir), "data_paths": data or _data(tmp_path),
           "training": {"num_epochs": epochs, "batch_size": 16, "gradient_accumulation_steps": 1,
                        "learning_rate": 0.01, "logging_steps": 3, "save_steps": 1000, "eval_steps": 1000,
                        "max_seq_length": 32, "warmup_ratio": 0.0},
           "lora": {"r": 8, "alpha": 16},
           "eval": {"slice_by_tags": ["source"], "bootstrap_resamples": 50, "min_slice_size": 5, "hard_examples": 8},
           "data_checks": {"leakage": "off"}, "output": {"dir": str(tmp_path / "runs")}}
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values} if isinstance(values, dict) else values
    return cfg


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _dry_run(tmp_path: Path, cfg: dict):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return CliRunner().invoke(cli, ["train", "--config", str(path), "--dry-run"])


# -- rows and options ------------------------------------------------------------------------


def test_rows_are_checked_with_file_and_line():
    task = load_registries().tasks.get("classification")
    assert task.validate_row({"text": "apple", "labels": ["fruit"]}) is None
    assert task.validate_row({"text": "the day", "labels": []}) is None
    assert task.validate_row({"text": "x", "labels": "fruit"}) == "field 'labels' must be a list of label names, got str"
    assert task.validate_row({"text": "x", "labels": ["fruit", 3]}) == "field 'labels' item 1 must be a non-empty string, got 3"
    assert task.validate_row({"text": "x", "labels": ["a", "a"]}) == "field 'labels' lists 'a' twice"
    assert "not both" in task.validate_row({"text": "x", "labels": ["a"], "label": "a"})
    assert task.validate_row({"labels": ["a"]}) == "missing required field 'text'"


@pytest.mark.parametrize("bad, message", [
    ({"text": "apple day", "labels": "fruit"}, "field 'labels' must be a list of label names, got str"),
    ({"text": "apple day", "labels": ["fruit", 1]}, "field 'labels' item 1 must be a non-empty string, got 1"),
    ({"text": "apple day", "labels": ["fruit", "fruit"]}, "field 'labels' lists 'fruit' twice"),
])
def test_bad_rows_exit_2_naming_file_and_line(tmp_path, verifily_tiny_llama_dir, bad, message):
    rows = make_multilabel_rows(6, seed=1)
    data = _data(tmp_path, train_rows=rows[:4] + [bad] + rows[4:], val=False)
    res = _dry_run(tmp_path, _config(tmp_path, verifily_tiny_llama_dir, data=data))
    assert res.exit_code == 2, res.output
    assert f"{data['train']}:5: {message}" in res.output
    assert "Traceback" not in res.output


def test_a_mix_of_forms_and_an_unknown_label_exit_2_naming_the_rows(tmp_path, verifily_tiny_llama_dir):
    single = make_classification_rows(2, seed=5)
    data = _data(tmp_path, test_rows=make_multilabel_rows(3, seed=3) + single, val=False)
    res = _dry_run(tmp_path, _config(tmp_path, verifily_tiny_llama_dir, data=data))
    assert res.exit_code == 2, res.output
    assert (f"the dataset mixes single-label and multi-label rows: {data['test']}:4 has 'label', "
            f"{data['train']}:1 has 'labels'") in res.output
    data = _data(tmp_path, test_rows=make_multilabel_rows(3, seed=3) + [{"text": "a day", "labels": ["sky"]}])
    res = _dry_run(tmp_path, _config(tmp_path, verifily_tiny_llama_dir, data=data, task_options={"labels": LABELS}))
    assert res.exit_code == 2, res.output
    assert f"{data['test']}:4: label 'sky' is not one of the run's labels (fruit, home, water)" in res.output


@pytest.mark.parametrize("options, rows, message", [
    ({"formulation": "label_tokens"}, "multi", "$.task_options.formulation: label_tokens scores one label per row; "
                                               "the dataset's rows are multi-label"),
    ({"class_weights": "auto"}, "multi", "$.task_options.class_weights: weights one label per row"),
    ({"threshold": 0.3}, "single", "$.task_options.threshold: applies to multi-label rows"),
    ({"tune_threshold": True}, "single", "$.task_options.tune_threshold: applies to multi-label rows"),
    ({"threshold": 1.5}, "multi", "$.task_options.threshold: expected a probability between 0 and 1"),
])
def test_options_that_do_not_fit_the_rows_exit_1(tmp_path, verifily_tiny_llama_dir, options, rows, message):
    maker = make_multilabel_rows if rows == "multi" else make_classification_rows
    data = _data(tmp_path, train_rows=maker(8, seed=1), test_rows=maker(4, seed=3), val=False)
    res = _dry_run(tmp_path, _config(tmp_path, verifily_tiny_llama_dir, data=data, task_options=options))
    assert res.exit_code == 1, res.output
    assert message in res.output


def test_tune_threshold_needs_a_val_split(tmp_path, verifily_tiny_llama_dir):
    data = _data(tmp_path, val=False)
    res = _dry_run(tmp_path, _config(tmp_path, verifily_tiny_llama_dir, data=data, task_options={"tune_threshold": True}))
    assert res.exit_code == 1 and "tune_threshold: picks the threshold on the val split" in res.output


def test_threshold_tuning_picks_the_best_micro_f1_by_hand():
    probs = [[0.9, 0.35, 0.1], [0.6, 0.2, 0.45], [0.3, 0.8, 0.05], [0.42, 0.1, 0.7]]
    gold = [[1, 1, 0], [1, 0, 1], [0, 1, 0], [1, 0, 1]]
    # by hand: every true positive is at >= 0.35 and every negative at <= 0.3, so any threshold in
    # (0.3, 0.35] is perfect; the nearest to 0.5 of the grid is 0.35
    assert micro_f1_at(probs, gold, 0.35) == 1.0 and micro_f1_at(probs, gold, 0.3) < 1.0
    assert micro_f1_at(probs, gold, 0.5) == pytest.approx(2 * 4 / (2 * 4 + 3))  # 4 TP, 0 FP, 3 FN
    got = tune_threshold(probs, gold)
    assert got["threshold"] == 0.35 and got["micro_f1"] == 1.0
    assert got["configured_micro_f1"] == pytest.approx(8 / 11, abs=1e-6)
    assert len(GRID) == 99 and GRID[0] == 0.01 and GRID[-1] == 0.99


def test_options_parse_threshold():
    from verifily_classification.options import parse_options

    assert parse_options({}).decision_threshold == 0.5
    assert parse_options({"threshold": 0.3, "tune_threshold": True}).decision_threshold == 0.3
    with pytest.raises(ConfigError, match=r"\$\.task_options\.tune_threshold: expected bool"):
        parse_options({"tune_threshold": "yes"})


# -- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, verifily_tiny_llama_dir):
    tmp_path = tmp_path_factory.mktemp("multilabel")
    run = train(_config(tmp_path, verifily_tiny_llama_dir, task_options={"tune_threshold": True})).path
    return tmp_path, run


def _hand_metrics(preds: list[dict]) -> dict:
    tp = {k: 0 for k in LABELS}
    fp, fn = dict(tp), dict(tp)
    exact, wrong = 0, 0
    for p in preds:
        guess, gold = set(p["prediction"]), set(p["reference"])
        exact += guess == gold
        wrong += len(guess ^ gold)
        for k in LABELS:
            tp[k] += k in guess and k in gold
            fp[k] += k in guess and k not in gold
            fn[k] += k in gold and k not in guess
    per = {}
    for k in LABELS:
        prec = tp[k] / (tp[k] + fp[k]) if tp[k] + fp[k] else 0.0
        rec = tp[k] / (tp[k] + fn[k]) if tp[k] + fn[k] else 0.0
        per[k] = {"precision": prec, "recall": rec, "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
                  "support": tp[k] + fn[k]}
    all_tp, all_fp, all_fn = sum(tp.values()), sum(fp.values()), sum(fn.values())
    return {"per_class": per, "micro_f1": 2 * all_tp / (2 * all_tp + all_fp + all_fn),
            "macro_f1": sum(v["f1"] for v in per.values()) / len(LABELS),
            "subset_accuracy": exact / len(preds), "hamming_loss": wrong / (len(preds) * len(LABELS))}


@pytest.mark.slow
def test_training_lowers_the_loss_and_records_the_tuned_threshold(trained, verifily_subprocess):
    tmp_path, run = trained
    losses = [r["loss"] for r in _read_jsonl(run / "train_log.jsonl") if "loss" in r]
    assert losses[-1] < 0.6 * losses[0], losses
    doc = json.loads((run / "labels.json").read_text())
    assert doc["labels"] == LABELS and doc["multi_label"] is True
    tuning = doc["threshold_tuning"]
    assert doc["threshold"] == tuning["threshold"] and tuning["configured"] == 0.5 and tuning["split"] == "val"
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "score" in adapter["modules_to_save"]
    # hand check: the val split's probabilities, from the saved run in a fresh process
    out = tmp_path / "val-eval"
    proc = verifily_subprocess("eval", "--run", run, "--test-data", Path(tmp_path / "data" / "val.jsonl"),
                               "--output", out, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    val = _read_jsonl(out / "predictions.jsonl")
    probs = [[p["scores"]["probabilities"][k] for k in LABELS] for p in val]
    gold = [[float(k in p["reference"]) for k in LABELS] for p in val]
    by_hand = {t: micro_f1_at(probs, gold, t) for t in GRID}
    assert by_hand[doc["threshold"]] == pytest.approx(max(by_hand.values()), abs=1e-9)
    assert by_hand[doc["threshold"]] == pytest.approx(tuning["micro_f1"], abs=1e-6)
    assert by_hand[0.5] == pytest.approx(tuning["configured_micro_f1"], abs=1e-6)


@pytest.mark.slow
def test_metrics_equal_a_hand_computation_from_the_saved_predictions(trained):
    _, run = trained
    results = json.loads((run / "eval" / "eval_results.json").read_text())
    preds = _read_jsonl(run / "eval" / "predictions.jsonl")
    threshold = json.loads((run / "labels.json").read_text())["threshold"]
    for p in preds:
        probs = p["scores"]["probabilities"]
        assert list(probs) == LABELS
        assert p["prediction"] == [k for k in LABELS if probs[k] >= threshold]
        p_true = math.prod(probs[k] if k in p["reference"] else 1 - probs[k] for k in LABELS)
        assert p["scores"]["p_true"] == pytest.approx(p_true, rel=1e-5)
        assert p["scores"]["loss"] == pytest.approx(-math.log(p_true) / len(LABELS), rel=1e-5)
    hand = _hand_metrics(preds)
    metrics = results["overall"]["metrics"]
    assert set(metrics) == {"micro_f1", "macro_f1", "weighted_f1", "subset_accuracy", "hamming_loss"}
    for name in ("micro_f1", "macro_f1", "subset_accuracy", "hamming_loss"):
        assert metrics[name]["value"] == pytest.approx(hand[name]), name
    assert metrics["micro_f1"]["value"] > 0.6 and metrics["hamming_loss"]["value"] < 0.3, metrics
    per_class = results["details"]["per_class"]
    for k in LABELS:
        assert per_class[k] == pytest.approx(hand["per_class"][k]), k
    matrix = results["details"]["confusion_matrix"]
    assert matrix["columns"] == ["tp", "fp", "fn", "tn"] and len(matrix["matrix"]) == 3
    assert all(sum(row) == len(preds) for row in matrix["matrix"])
    # slices by tag: each slice's micro F1 is the hand computation on its rows
    for name in ("source=human", "source=synthetic", "source=ai_contaminated"):
        rows = [p for p in preds if name in p.get("slices", ())]
        block = results["slices"][name]
        assert block["n"] == len(rows) > 0
        assert block["metrics"]["micro_f1"]["value"] == pytest.approx(_hand_metrics(rows)["micro_f1"])
    # hard examples: the lowest probability of the true label set
    assert results["hard_examples"]["score"] == "p_true" and results["hard_examples"]["count"] == 8
    hard = _read_jsonl(run / "eval" / "hard_examples.jsonl")
    assert [h["score"] for h in hard] == pytest.approx(sorted(p["scores"]["p_true"] for p in preds)[:8])


@pytest.mark.slow
def test_compare_and_predict_work_on_multilabel_runs(trained, verifily_tiny_llama_dir, verifily_subprocess):
    tmp_path, run = trained
    other = train(_config(tmp_path, verifily_tiny_llama_dir, epochs=2, seed=7)).path
    proc = verifily_subprocess("compare", "--runs", f"{run},{other}", "--metric", "micro_f1", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert "micro_f1" in proc.stdout
    proc = verifily_subprocess("predict", "--run", run, "--set", "text=very apple the river")
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("fruit, water  p_pred=") and "probabilities: fruit=" in line, line
    proc = verifily_subprocess("predict", "--run", run, "--set", "text=apple river", "--format", "json")
    got = json.loads(proc.stdout)[0]
    assert got["prediction"] == ["fruit", "water"] and set(got["scores"]["probabilities"]) == set(LABELS)


def _qlora_runs_here(bits: str = "4bit") -> str | None:
    """Why bitsandbytes cannot run quantized layers on this CPU (``None`` when it can)."""
    try:
        from verifily_qlora.loading import check_device

        check_device(bits, "cpu")
    except Exception as exc:  # ImportError or the plugin's ConfigError naming what is missing
        return str(exc).splitlines()[0]
    return None


@pytest.mark.slow
@pytest.mark.parametrize("kind, sections", [
    ("bert", {"task_options": {"pooling": "mean", "head": {"num_layers": 1, "hidden_dims": [32]}}}),
    ("llama", {"lora": {"quantization": "4bit"}}),
])
def test_encoder_custom_head_and_qlora_paths_learn_label_sets(request, tmp_path, kind, sections):
    if "quantization" in sections.get("lora", {}) and _qlora_runs_here():
        pytest.skip(f"bitsandbytes cannot run 4-bit layers on this CPU: {_qlora_runs_here()}")
    if kind == "bert":  # briefly pretrained, so LoRA has an encoder to adapt (as in test_classification_e2e)
        from verifily_core.testing.tiny_models import build_tiny_model

        model_dir = build_tiny_model("bert", tmp_path / "bert", pretrain_steps=150)
    else:
        model_dir = request.getfixturevalue("verifily_tiny_llama_dir")
    run = train(_config(tmp_path, model_dir, epochs=8, training={"learning_rate": 0.02}, **sections)).path
    losses = [r["loss"] for r in _read_jsonl(run / "train_log.jsonl") if "loss" in r]
    assert losses[-1] < 0.8 * losses[0], losses
    preds = _read_jsonl(run / "eval" / "predictions.jsonl")
    assert all(isinstance(p["prediction"], list) and set(p["prediction"]) <= set(LABELS) for p in preds)
    results = json.loads((run / "eval" / "eval_results.json").read_text())
    assert results["overall"]["metrics"]["micro_f1"]["value"] == pytest.approx(_hand_metrics(preds)["micro_f1"])


def test_attribution_scores_every_training_row_of_a_multilabel_run(trained, verifily_subprocess):
    tmp_path, run = trained
    proc = verifily_subprocess("attribute", "--run", run, "--top", "3", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    rows = _read_jsonl(run / "eval" / "attribution" / "row_scores.jsonl")
    assert len(rows) == doc["train_rows"] == len(_read_jsonl(Path(tmp_path) / "data" / "train.jsonl"))
    assert all(math.isfinite(r["score"]) for r in rows) and len({r["score"] for r in rows}) > len(rows) // 2
    assert isinstance(rows[0]["reference"], str) and set(doc["by_tag"]) >= {"source"}
