"""Tests of the example plugin, the way a plugin author writes them: the objects on their own,
inside Verifily's plugin manager and evaluation core (no model), then through the ``verifily``
command line with the fixtures of Verifily's pytest plugin (``verifily_sft_files``,
``verifily_cli``, ``verifily_tiny_llama_dir``, ...), which installing verifily-train provides.

Run them after installing the package (``pip install -e .``): from the entry-point test on,
they need the ``verifily`` entry point to find the plugin.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import verifily_example_plugin as plugin
import yaml

from verifily_core.evaluation import build_eval_result
from verifily_core.interfaces import ComputeBackend
from verifily_core.plugins import load_registries, make_plugin_manager

RECORDS = [  # evaluation records as the core builds them: prediction, reference, tags
    {"prediction": "apple", "reference": "apple", "tags": {"source": "human"}},
    {"prediction": "river bank", "reference": "river", "tags": {"source": "human"}},
    {"prediction": "", "reference": "stone", "tags": {"source": "synthetic"}},
    {"prediction": "CLOUD", "reference": "CLOUD", "tags": {"source": "ai_contaminated"}},
]


@pytest.fixture()
def registries():
    """Only this plugin plus the core's built-ins, without looking at what else is installed."""
    return load_registries(make_plugin_manager(entrypoints=False, plugins=[plugin]))


def test_the_plugin_registers_its_three_objects(registries):
    assert registries.metrics.get("response_length").higher_is_better is False
    assert registries.slicers.get("first_letter").name == "first_letter"
    assert isinstance(registries.backends.get("subprocess"), ComputeBackend)


def test_response_length_is_the_mean_prediction_length():
    metric = plugin.ResponseLength()
    preds = [r["prediction"] for r in RECORDS]
    assert metric.compute(preds, [r["reference"] for r in RECORDS], RECORDS) == (5 + 10 + 0 + 5) / 4
    assert metric.compute([], [], []) == 0.0


def test_first_letter_groups_rows_by_the_first_letter_of_a_tag_value():
    slices = plugin.FirstLetter().slices(RECORDS, ["source"])
    assert slices == {"source^=h": [0, 1], "source^=s": [2], "source^=a": [3]}


def test_metric_and_slicer_inside_the_evaluation_core(registries):
    result = build_eval_result(RECORDS, "sft", [registries.metrics.get("response_length")],
                               slicers=registries.slicers, slice_by="first_letter:source",
                               resamples=200, min_slice_size=1)
    overall = result.metric_values["response_length"]
    assert overall.value == pytest.approx(5.0) and overall.ci_low <= 5.0 <= overall.ci_high
    assert result.slices["source^=h"]["response_length"] == pytest.approx(7.5)
    assert result.slice_results["source^=s"].n == 1


def test_the_installed_package_is_found_through_its_entry_point():
    registries = load_registries(make_plugin_manager())
    assert registries.metrics.owner("response_length") == "example"


def test_the_installed_package_is_listed_by_the_command_line(verifily_cli):
    listed = verifily_cli("plugins", "--format", "json")
    assert listed.exit_code == 0, listed.output
    example = next(r for r in json.loads(listed.stdout) if r["name"] == "example")
    assert example["registers"] == {"metric": ["response_length"], "slicer": ["first_letter"], "backend": ["subprocess"]}


def test_a_config_may_name_the_metric_only_while_the_plugin_is_installed(tmp_path, verifily_sft_files, verifily_cli):
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "task": "sft", "base_model": "org/model",
        "data_paths": {split: str(path) for split, path in verifily_sft_files.items()},
        "eval": {"metrics": ["token_f1", "response_length"]}}))
    assert verifily_cli("train", "--config", config, "--dry-run").exit_code == 0
    blocked = verifily_cli("train", "--config", config, "--dry-run", env={"VERIFILY_BLOCK_PLUGINS": "example"})
    assert blocked.exit_code == 1
    assert "$.eval.metrics[1]: unknown metric 'response_length'" in blocked.stderr


def test_a_tiny_trained_run_is_evaluated_with_the_metric_and_slicer(tmp_path, verifily_tiny_model,
                                                                     verifily_sft_files, verifily_cli):
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "task": "sft", "base_model": str(verifily_tiny_model("llama")),
        "data_paths": {split: str(path) for split, path in verifily_sft_files.items()},
        "training": {"max_steps": 2, "batch_size": 8, "max_seq_length": 48},
        "eval": {"enabled": False, "max_new_tokens": 4, "bootstrap_resamples": 100, "min_slice_size": 1},
        "output": {"dir": str(tmp_path / "runs")}}))
    trained = verifily_cli("train", "--config", config, "--format", "json")
    assert trained.exit_code == 0, trained.output
    run = Path(json.loads(trained.stdout)["artifact_path"])
    evaluated = verifily_cli("eval", "--run", run, "--metrics", "token_f1,response_length",
                             "--slice-by", "first_letter:source", "--format", "json")
    assert evaluated.exit_code == 0, evaluated.output
    results = json.loads(evaluated.stdout)
    predictions = [json.loads(line)["prediction"] for line in (run / "eval" / "predictions.jsonl").open()]
    assert results["higher_is_better"]["response_length"] is False
    overall = results["overall"]["metrics"]["response_length"]["value"]
    assert overall == pytest.approx(sum(len(p) for p in predictions) / len(predictions))
    # The test split's 24 rows cycle through human, synthetic, ai_contaminated.
    assert {name: s["n"] for name, s in results["slices"].items()} == {"source^=h": 8, "source^=s": 8, "source^=a": 8}
