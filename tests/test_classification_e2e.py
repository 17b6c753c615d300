"""Classification end to end through ``verifily train`` and ``verifily eval`` on tiny offline
models: a tiny BERT, a tiny DeBERTa-v2 and a tiny Llama as classifier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verifily_core import hookimpl
from verifily_core.api import train
from verifily_core.plugins import load_registries, make_plugin_manager
from verifily_core.testing import make_classification_rows, write_jsonl

pytestmark = pytest.mark.slow

CHANCE = 27 / 48  # the majority class share of the test split below


@pytest.fixture(scope="module")
def encoder_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny BERT and DeBERTa-v2 briefly pretrained with masked LM, so LoRA has an encoder to adapt
    (randomly initialised tiny encoders give LoRA almost nothing to work with)."""
    from verifily_core.testing.tiny_models import build_tiny_model

    return {kind: build_tiny_model(kind, tmp_path_factory.mktemp(f"pretrained-{kind}"), pretrain_steps=150)
            for kind in ("bert", "deberta-v2")}


def _data(tmp_path: Path, val: bool = False) -> dict[str, str]:
    data = tmp_path / "data"
    paths = {"train": write_jsonl(data / "train.jsonl", make_classification_rows(128, seed=1, pair=True)),
             "test": write_jsonl(data / "test.jsonl", make_classification_rows(48, seed=3, pair=True))}
    if val:
        paths["val"] = write_jsonl(data / "val.jsonl", make_classification_rows(32, seed=2, pair=True))
    return {split: str(p) for split, p in paths.items()}


def _train(tmp_path: Path, model_dir: Path, epochs: int = 20, val: bool = False, registries=None, **sections):
    cfg = {"task": "classification", "base_model": str(model_dir), "data_paths": _data(tmp_path, val),
           "training": {"num_epochs": epochs, "batch_size": 16, "gradient_accumulation_steps": 1,
                        "learning_rate": 0.005, "logging_steps": 8, "save_steps": 1000, "eval_steps": 1000,
                        "max_seq_length": 32, "warmup_ratio": 0.0},
           "lora": {"r": 8, "alpha": 16},
           "eval": {"slice_by_tags": ["source"], "bootstrap_resamples": 50, "min_slice_size": 5},
           "data_checks": {"leakage": "off"}, "output": {"dir": str(tmp_path / "runs")}}
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values} if isinstance(values, dict) else values
    run = train(cfg, registries=registries)
    return run.path, json.loads((run.path / "eval" / "eval_results.json").read_text())


def _predictions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.parametrize("kind", ["bert", "deberta-v2", "llama"])
def test_lora_classifier_learns_well_above_chance(request, tmp_path, encoder_dirs, kind):
    model_dir = request.getfixturevalue("verifily_tiny_llama_dir") if kind == "llama" else encoder_dirs[kind]
    run, results = _train(tmp_path, model_dir)
    overall = results["overall"]["metrics"]
    assert overall["accuracy"]["value"] >= CHANCE + 0.2, overall
    assert overall["macro_f1"]["value"] >= 0.7, overall
    losses = _losses(run)
    assert losses[-1] < 0.8 * losses[0], losses
    assert json.loads((run / "labels.json").read_text())["labels"] == ["neg", "pos"]
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    head = {"bert": {"classifier"}, "deberta-v2": {"pooler", "classifier"}, "llama": {"score"}}[kind]
    assert adapter["task_type"] == "SEQ_CLS" and head <= set(adapter["modules_to_save"])
    assert len(adapter["modules_to_save"]) == len(set(adapter["modules_to_save"]))  # each head listed once
    assert set(results["details"]["confusion_matrix"]["labels"]) == {"neg", "pos"}
    first = _predictions(run / "eval" / "predictions.jsonl")[0]
    assert first["prediction"] in ("neg", "pos") and 0.0 <= first["scores"]["p_true"] <= 1.0


@pytest.mark.parametrize("kind, task_options", [
    ("llama", {}),
    ("deberta-v2", {"pooling": "mean", "head": {"num_layers": 1, "hidden_dims": [32], "activation": "gelu"},
                    "class_weights": "auto"}),
])
def test_saved_adapter_and_head_give_the_same_predictions_in_a_fresh_process(
        request, tmp_path, encoder_dirs, verifily_subprocess, kind, task_options):
    model_dir = request.getfixturevalue("verifily_tiny_llama_dir") if kind == "llama" else encoder_dirs[kind]
    run, results = _train(tmp_path, model_dir, epochs=6, task_options=task_options)
    assert json.loads((run / "labels.json").read_text())["head"] == (
        {**task_options["head"], "pooling": "mean", "dropout": 0.1} if task_options else {})
    proc = verifily_subprocess("eval", "--run", run, "--output", tmp_path / "fresh", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    before = _predictions(run / "eval" / "predictions.jsonl")
    after = _predictions(tmp_path / "fresh" / "predictions.jsonl")
    assert [p["prediction"] for p in after] == [p["prediction"] for p in before]
    assert [p["scores"]["p_true"] for p in after] == pytest.approx([p["scores"]["p_true"] for p in before], abs=1e-5)
    assert len({round(p["scores"]["p_true"], 4) for p in before}) > 5  # a trained head, not a constant


def test_unknown_label_at_eval_is_a_data_error_naming_the_row(tmp_path, verifily_tiny_llama_dir, verifily_subprocess):
    run, _ = _train(tmp_path, verifily_tiny_llama_dir, epochs=1)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "good day", "label": "pos"},
                                               {"text": "a day", "text_pair": "the review is short", "label": "meh"}])
    proc = verifily_subprocess("eval", "--run", run, "--test-data", bad, "--output", tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
    assert "Error: test row 2: label 'meh' is not one of the run's labels (neg, pos)" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out" / "eval_results.json").exists()


def test_unknown_label_in_the_test_split_fails_before_training(tmp_path, verifily_tiny_llama_dir):
    from verifily_core.errors import DataError

    paths = _data(tmp_path)
    write_jsonl(paths["test"], make_classification_rows(4, seed=3) + [{"text": "so so", "label": "neutral"}])
    cfg = {"task": "classification", "base_model": str(verifily_tiny_llama_dir), "data_paths": paths,
           "data_checks": {"leakage": "off"}, "output": {"dir": str(tmp_path / "runs")}}
    with pytest.raises(DataError, match=r"test row 5 of .*test\.jsonl: label 'neutral' is not one of the run's labels"):
        train(cfg)


class _BestModelProbe:
    """Records the Trainer's evaluation history and best checkpoint at the end of training."""

    plugin_name = "best_model_probe"

    def __init__(self) -> None:
        self.state = None

    @hookimpl
    def verifily_trainer_callbacks(self):
        from transformers import TrainerCallback

        probe = self

        class Record(TrainerCallback):
            def on_train_end(self, args, state, control, **kw):
                probe.state = state

        return [Record()]


def test_early_stopping_on_macro_f1_keeps_the_best_checkpoint(tmp_path, encoder_dirs):
    probe = _BestModelProbe()
    regs = load_registries(make_plugin_manager(plugins=[probe]))
    run, _ = _train(tmp_path, encoder_dirs["bert"], epochs=30, val=True, registries=regs,
                    training={"eval_steps": 8, "save_steps": 8, "early_stopping_patience": 2,
                              "metric_for_best_model": "macro_f1"})
    evals = [h for h in probe.state.log_history if "eval_macro_f1" in h]
    best = max(evals, key=lambda h: h["eval_macro_f1"])
    assert probe.state.best_metric == best["eval_macro_f1"]
    assert probe.state.global_step < 30 * 8  # stopped early
    assert probe.state.global_step - best["step"] == 2 * 8  # two evaluations without improvement
    meta = json.loads((run / "run_meta.json").read_text())
    assert meta["metrics"]["eval_loss"] == pytest.approx(best["eval_loss"], abs=1e-6)  # the best checkpoint's weights
    # the task's validation metrics at every evaluation: in train_log.jsonl and, for the final model, run_meta
    logged = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    evals_logged = [e for e in logged if "eval_loss" in e]
    assert len(evals_logged) == len(evals) and all({"eval_accuracy", "eval_macro_f1"} <= set(e) for e in evals_logged)
    assert not any("eval_runtime" in e for e in logged)
    assert meta["metrics"]["eval_accuracy"] == pytest.approx(best["eval_accuracy"], abs=1e-9)
    assert meta["metrics"]["eval_macro_f1"] == pytest.approx(best["eval_macro_f1"], abs=1e-9)
